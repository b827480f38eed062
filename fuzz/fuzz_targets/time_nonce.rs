//! The timestamp and nonce rules on structured headers: a well-formed key id
//! and signature around a fuzzed nonce and timestamp text. The parser must
//! accept exactly the nonces of 1 to 128 visible ASCII characters without
//! `:` and exactly the timestamps of ASCII digits that fit a u64 (leading
//! zeros allowed, no sign, no space); the clock check must accept exactly
//! `|timestamp - now| <= window`; and a replay guard must refuse a second
//! claim of the same (key id, nonce) or signature while it is live, whatever
//! the order of claims and clocks.
#![no_main]

use arbitrary::Arbitrary;
use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, MemoryReplayGuard, ParseError, ReplayError, ReplayGuard, Verifier, MAX_FIELD_LEN,
};
use libfuzzer_sys::fuzz_target;

const SIG: &str =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

#[derive(Debug, Arbitrary)]
struct Claim {
    /// Index into the nonces.
    nonce: u8,
    /// Seconds added to the first claim's clock.
    later: u16,
    timestamp_delta: i16,
}

#[derive(Debug, Arbitrary)]
struct Input {
    nonce: Vec<u8>,
    timestamp: Vec<u8>,
    now: u64,
    window: u16,
    /// Small numbers, so that equal nonces come up often.
    nonces: Vec<u8>,
    claims: Vec<Claim>,
}

fn nonce_ok(n: &[u8]) -> bool {
    (1..=MAX_FIELD_LEN).contains(&n.len()) && n.iter().all(|b| (0x21..=0x7e).contains(b) && *b != b':')
}

fn timestamp_value(t: &[u8]) -> Option<u64> {
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros are allowed and do not count towards the range.
    let digits = std::str::from_utf8(t).ok()?;
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some(0);
    }
    trimmed.parse::<u64>().ok()
}

fuzz_target!(|input: Input| {
    let mut header = b"ARMOR-PSK key-1:".to_vec();
    header.extend_from_slice(SIG.as_bytes());
    header.push(b':');
    header.extend_from_slice(&input.nonce);
    header.push(b':');
    header.extend_from_slice(&input.timestamp);

    // A `:` inside either field makes a fifth field (or, in the nonce, moves
    // the timestamp): refused as malformed, never read another way.
    let expected_ts = timestamp_value(&input.timestamp);
    let expected = nonce_ok(&input.nonce) && expected_ts.is_some() && header.len() <= 8 * 1024;
    match Credentials::parse_bytes(&header) {
        Ok(c) => {
            assert!(expected, "accepted {header:?}");
            assert_eq!(c.nonce().as_bytes(), &input.nonce[..]);
            assert_eq!(Some(c.timestamp()), expected_ts);
            assert_eq!(c.timestamp_text().as_bytes(), &input.timestamp[..]);
            let verifier = Verifier::with_window(u64::from(input.window));
            let fresh = verifier.check_time(&c, input.now).is_ok();
            assert_eq!(fresh, c.timestamp().abs_diff(input.now) <= u64::from(input.window));
            assert_eq!(
                verifier.claim_until(&c),
                c.timestamp().saturating_add(u64::from(input.window))
            );
        }
        Err(e) => {
            assert!(!expected, "refused {header:?}: {e}");
            assert!(matches!(e, ParseError::Malformed(_)));
        }
    }

    // Replay: a sequence of claims over a few nonces. A fresh pair is
    // accepted; a pair claimed before and still live is refused.
    let nonces: Vec<String> = input
        .nonces
        .iter()
        .take(16)
        .map(|n| format!("n{}", n % 8))
        .collect();
    if nonces.is_empty() {
        return;
    }
    let guard = MemoryReplayGuard::new(1 << 12);
    let fk = FingerprintKey::new([7; 16]);
    let window = 300u64;
    let base = input.now % (1 << 31);
    // (nonce, until) of every accepted claim.
    let mut held: Vec<(String, u64)> = Vec::new();
    let mut clock = base;
    for (i, claim) in input.claims.iter().take(64).enumerate() {
        clock = clock.max(base + u64::from(claim.later));
        let nonce = &nonces[usize::from(claim.nonce) % nonces.len()];
        let ts = clock.saturating_add_signed(i64::from(claim.timestamp_delta) % 300);
        // A distinct signature per claim, so only the pair can collide.
        let mut sig = [0u8; 64];
        sig[..8].copy_from_slice(&(i as u64).to_le_bytes());
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        let text = format!("ARMOR-PSK key-1:{sig}:{nonce}:{ts}");
        let Ok(c) = Credentials::parse(&text) else {
            panic!("{text}");
        };
        let until = ts + window;
        let live = held.iter().any(|(n, u)| n == nonce && *u >= clock);
        let got = guard.claim(&fk.fingerprints(&c), until, clock);
        if live {
            assert_eq!(got, Err(ReplayError::Reused), "{nonce} at {clock}");
        } else {
            assert_eq!(got, Ok(()), "{nonce} at {clock}");
            held.push((nonce.clone(), until));
        }
    }
});
