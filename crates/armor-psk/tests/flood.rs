//! Nonce flood, in process: one million fresh nonces for one key through
//! the replay guard, then a replay of the first: refused, with the guard's
//! memory within two fingerprints' worth per request (docs/reliability.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use armor_psk::replay::FingerprintKey;
use armor_psk::{Credentials, MemoryReplayGuard, ReplayError, ReplayGuard, Signature, Verifier};

#[test]
fn one_million_fresh_nonces_then_the_first_again() {
    const N: u64 = 1_000_000;
    let now = 1_763_880_000;
    let guard = MemoryReplayGuard::new(4 * N as usize);
    let fk = FingerprintKey::new([3; 16]);
    let verifier = Verifier::default();
    let claim = |i: u64| {
        // Distinct signatures too, as distinct requests have.
        let mut sig = [0u8; 64];
        sig[..8].copy_from_slice(&i.to_le_bytes());
        let header = format!(
            "ARMOR-PSK key-1:{}:nonce-{i}:{now}",
            Signature::from_bytes(sig)
        );
        let c = Credentials::parse(&header).unwrap();
        guard.claim(&fk.fingerprints(&c), verifier.claim_until(&c), now)
    };
    let started = std::time::Instant::now();
    for i in 0..N {
        assert_eq!(claim(i), Ok(()), "fresh nonce {i} refused");
    }
    assert_eq!(claim(0), Err(ReplayError::Reused));
    assert_eq!(claim(N - 1), Err(ReplayError::Reused));
    let bytes = guard.memory_bytes();
    eprintln!(
        "{N} claims in {:?}; {} fingerprints, {bytes} bytes ({:.1} B per request)",
        started.elapsed(),
        guard.len(),
        bytes as f64 / N as f64
    );
    assert_eq!(guard.len(), 2 * N as usize);
    // 12 bytes per slot, at least half full after growth: under 48 B per
    // request (two fingerprints).
    assert!(bytes < 48 * N as usize, "{bytes} bytes");
}
