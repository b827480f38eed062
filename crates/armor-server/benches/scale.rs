//! Costs that depend on how much the server holds: the key look-up of
//! `KeyVerifier::psk_begin` with 1, 10 k and 1 M keys in the cache, and a replay
//! claim with 0, 1 M and 10 M live fingerprints (plus the guard's bytes per
//! request held). The per-request pipeline (parse, sign, verify, bare HMAC)
//! is in crates/armor-psk/benches/psk.rs.
//!
//! `cargo bench -p armor-server --bench scale`
//! Results: docs/performance.md (the key look-up) and
//! docs/performance-log.md (every run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use armor_psk::{Fingerprints, MemoryReplayGuard, ReplayGuard, SigningKey};
use armor_server::core::keycache::KeyCache;
use armor_server::core::{CachedKey, KeyIdentity};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// splitmix64: distinct, well-spread values from a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A key id shaped like the server's (a UUID v4 string).
fn key_id(i: u64) -> String {
    let (a, b) = (mix(2 * i), mix(2 * i + 1));
    let x = u128::from(a) << 64 | u128::from(b);
    uuid::Builder::from_random_bytes(x.to_le_bytes())
        .into_uuid()
        .to_string()
}

/// The server's key cache with `n` keys; the ids to look up, in a
/// scattered order.
fn key_cache(n: u64) -> (KeyCache, Vec<String>) {
    let map = KeyCache::new([5; 16], || SigningKey::from_bytes(b"dummy"));
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = key_id(i);
        let secret = format!("apsk_{:043x}", mix(i));
        map.insert(
            CachedKey::new(KeyIdentity {
                key_id: id.as_str().into(),
                user_id: 1,
                account_id: 1,
                permissions: None,
            }),
            SigningKey::from_bytes(secret.as_bytes()),
        );
        ids.push(id);
    }
    // Visit in a scattered order (an odd stride), not insertion order.
    let probe: Vec<String> = (0..ids.len().min(1 << 16))
        .map(|k| ids[(k * 7_919 + 13) % ids.len()].clone())
        .collect();
    (map, probe)
}

fn bench_key_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_lookup");
    for (n, name) in [(1u64, "1"), (10_000, "10k"), (1_000_000, "1M")] {
        let (map, probe) = key_cache(n);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i = (i + 1) % probe.len();
                // What psk_begin does: look up by the header's key id, copy
                // out the key's HMAC state.
                map.lookup(black_box(probe[i].as_str()))
            })
        });
        // An unknown key id: the miss path.
        g.bench_function(BenchmarkId::new("miss", name), |b| {
            b.iter(|| map.lookup(black_box("00000000-0000-4000-8000-000000000000")))
        });
    }
    g.finish();
}

fn fingerprint(i: u64) -> Fingerprints {
    let a = u128::from(mix(4 * i)) << 64 | u128::from(mix(4 * i + 1));
    let b = u128::from(mix(4 * i + 2)) << 64 | u128::from(mix(4 * i + 3));
    Fingerprints {
        pair: a,
        signature: b,
    }
}

/// Claims of fresh fingerprints into a guard holding 0, 1 M or 10 M live
/// fingerprints. A sample's own claims expire at once and are swept,
/// untimed, every 200 000 claims, so each stretch starts from the same
/// live count (the method of psk.rs's `replay_claim`, extended to 10 M).
fn bench_replay_scale(c: &mut Criterion) {
    const NOW: u64 = 1_763_880_000;
    const CHUNK: u64 = 200_000;
    let mut g = c.benchmark_group("replay_claim_scale");
    for (live, name) in [
        (0u64, "0_live"),
        (1_000_000, "1M_live"),
        (10_000_000, "10M_live"),
    ] {
        let guard = MemoryReplayGuard::new(64_000_000);
        for i in 0..live / 2 {
            guard
                .claim(&fingerprint(1 << 40 | i), NOW + 1_000_000, NOW)
                .unwrap();
        }
        assert_eq!(guard.len() as u64, live);
        if live > 0 {
            eprintln!(
                "replay guard with {live} live fingerprints: {} bytes, {:.1} bytes per request held",
                guard.memory_bytes(),
                guard.memory_bytes() as f64 / (live / 2) as f64
            );
        }
        let mut next = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    guard.sweep(NOW + 1);
                    let fps: Vec<_> = (0..n).map(|i| fingerprint(next + i)).collect();
                    next += n;
                    left -= n;
                    let start = Instant::now();
                    for fp in &fps {
                        black_box(guard.claim(black_box(fp), NOW, NOW)).unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_key_lookup, bench_replay_scale
}
criterion_main!(benches);
