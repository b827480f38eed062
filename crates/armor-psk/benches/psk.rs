//! ARMOR-PSK costs: parse, message, sign, verify (hit and miss), the unknown
//! key path, the bare HMAC they are built on, and the replay guard.
//!
//! `cargo bench -p armor-psk --bench psk -- --warm-up-time 1 --measurement-time 3`
//! Results and their reading: docs/psk-bench.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, Error, Fingerprints, MemoryReplayGuard, ReplayGuard, Request, SignableRequest,
    SigningKey, Variant, Verifier,
};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

const SECRET: &[u8] = b"apsk_3q8Vd0mXQ2yZkP7rT1wL9sB4nH6cJ5eF0gA2uK8iO3x";
const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const NONCE: &str = "b1946ac92492d2347c6235b4d2611184";
const TIMESTAMP: u64 = 1_763_880_000;
const BODY_SIZES: [(usize, &str); 3] = [(0, "0B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// A JSON-ish body of `n` bytes.
fn body(n: usize) -> Vec<u8> {
    b"{\"items\":[{\"id\":0,\"name\":\"vm-0000\"}]}"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// One signed request: a POST with a query (so a miss tries every variant).
struct Fixture {
    body: Vec<u8>,
    header: String,
    bad_header: String,
    message: Vec<u8>,
}

impl Fixture {
    fn new(key: &SigningKey, body_len: usize) -> Self {
        let body = body(body_len);
        let signable = SignableRequest {
            key_id: KEY_ID,
            method: "POST",
            request_path: "/accounts/2/vms",
            nonce: NONCE,
            timestamp: TIMESTAMP,
            body: &body,
        };
        let header = signable.authorization(key);
        let message = signable.string_to_sign().to_bytes();
        // Same shape, wrong signature: parses, matches no variant.
        let bad_header = SignableRequest {
            nonce: "another-nonce",
            ..signable
        }
        .authorization(key)
        .replace(":another-nonce:", &format!(":{NONCE}:"));
        Fixture {
            body,
            header,
            bad_header,
            message,
        }
    }

    fn signable(&self) -> SignableRequest<'_> {
        SignableRequest {
            key_id: KEY_ID,
            method: "POST",
            request_path: "/accounts/2/vms",
            nonce: NONCE,
            timestamp: TIMESTAMP,
            body: &self.body,
        }
    }

    /// As received: vendor form, no query (a hit matches the first form).
    fn request(&self) -> Request<'_> {
        Request {
            method: "POST",
            path: "/accounts/2/vms",
            query: None,
            body: &self.body,
        }
    }

    /// As received with a query, so a miss tries all accepted forms: vendor,
    /// hashed body (if any), signed query, signed query with hashed body.
    fn request_with_query(&self) -> Request<'_> {
        Request {
            query: Some("$top=1000&status=running"),
            ..self.request()
        }
    }
}

fn bench_pipeline(c: &mut Criterion) {
    let key = SigningKey::from_bytes(SECRET);
    let verifier = Verifier::default();
    let fixtures: Vec<_> = BODY_SIZES
        .iter()
        .map(|&(n, name)| (n, name, Fixture::new(&key, n)))
        .collect();

    // The header does not depend on the body: one parse figure.
    {
        let mut g = c.benchmark_group("parse");
        let f = &fixtures[0].2;
        g.bench_function("header", |b| {
            b.iter(|| Credentials::parse(black_box(&f.header)).unwrap())
        });
        g.finish();
    }

    let mut g = c.benchmark_group("string_to_sign");
    for (n, name, f) in &fixtures {
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(f.signable()).string_to_sign().to_bytes())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sign");
    for (n, name, f) in &fixtures {
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(f.signable()).sign(&key))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify_hit");
    for (n, name, f) in &fixtures {
        let creds = Credentials::parse(&f.header).unwrap();
        let req = f.request();
        assert_eq!(verifier.verify(&key, &creds, &req), Ok(Variant::Vendor));
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verifier.verify(&key, black_box(&creds), black_box(&req)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify_miss");
    for (n, name, f) in &fixtures {
        let creds = Credentials::parse(&f.bad_header).unwrap();
        let req = f.request_with_query();
        assert_eq!(
            verifier.verify(&key, &creds, &req),
            Err(Error::InvalidSignature)
        );
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verifier.verify(&key, black_box(&creds), black_box(&req)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("refuse_unknown");
    for (n, name, f) in &fixtures {
        let creds = Credentials::parse(&f.header).unwrap();
        let req = f.request_with_query();
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verifier.refuse_unknown(black_box(&creds), black_box(&req)))
        });
    }
    g.finish();

    // The floor: one HMAC-SHA512 over the same message bytes, key schedule
    // paid once (what `SigningKey` does), then paid per request.
    let keyed = HmacSha512::new_from_slice(SECRET).unwrap();
    let mut g = c.benchmark_group("bare_hmac");
    for (n, name, f) in &fixtures {
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut m = keyed.clone();
                m.update(black_box(&f.message));
                m.finalize().into_bytes()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("hmac_keyed_per_request");
    for (n, name, f) in &fixtures {
        g.throughput(Throughput::Bytes(*n as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut m = HmacSha512::new_from_slice(black_box(SECRET)).unwrap();
                m.update(black_box(&f.message));
                m.finalize().into_bytes()
            })
        });
    }
    g.finish();
}

/// The target case: a GET whose message is exactly 100 bytes. `verify`
/// should cost at most 1.2–1.3× one pre-keyed HMAC over the same bytes.
fn bench_msg100(c: &mut Criterion) {
    let key = SigningKey::from_bytes(SECRET);
    let keyed = HmacSha512::new_from_slice(SECRET).unwrap();
    let verifier = Verifier::default();
    let signable = SignableRequest {
        key_id: KEY_ID,
        method: "GET",
        request_path: "/accounts/2/vms/123",
        nonce: NONCE,
        timestamp: TIMESTAMP,
        body: b"",
    };
    let message = signable.string_to_sign().to_bytes();
    assert_eq!(message.len(), 100);
    let header = signable.authorization(&key);
    let creds = Credentials::parse(&header).unwrap();
    let req = Request {
        method: "GET",
        path: "/accounts/2/vms/123",
        query: None,
        body: b"",
    };
    assert_eq!(verifier.verify(&key, &creds, &req), Ok(Variant::Vendor));

    let mut g = c.benchmark_group("msg100");
    g.throughput(Throughput::Bytes(100));
    g.bench_function("verify", |b| {
        b.iter(|| verifier.verify(&key, black_box(&creds), black_box(&req)))
    });
    g.bench_function("bare_hmac", |b| {
        b.iter(|| {
            let mut m = keyed.clone();
            m.update(black_box(&message));
            m.finalize().into_bytes()
        })
    });
    g.bench_function("parse_check_time_verify", |b| {
        b.iter(|| {
            let creds = Credentials::parse(black_box(&header)).unwrap();
            verifier.check_time(&creds, TIMESTAMP + 1).unwrap();
            verifier.verify(&key, &creds, black_box(&req))
        })
    });
    g.finish();
}

/// splitmix64: distinct, well-spread fingerprints from a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fingerprint(i: u64) -> Fingerprints {
    let a = u128::from(mix(4 * i)) << 64 | u128::from(mix(4 * i + 1));
    let b = u128::from(mix(4 * i + 2)) << 64 | u128::from(mix(4 * i + 3));
    Fingerprints {
        pair: a,
        signature: b,
    }
}

/// Claims of fresh fingerprints into a guard holding 0 or 1 M live
/// fingerprints (0.5 M requests). The claims a sample makes expire at `now`
/// and are swept, untimed, every 200 000 claims, so every stretch starts
/// from the same number of live entries (and at most 0.4 M more).
fn bench_replay(c: &mut Criterion) {
    const NOW: u64 = TIMESTAMP;
    let mut g = c.benchmark_group("replay_claim");
    for (live, name) in [(0u64, "0_live"), (1_000_000, "1M_live")] {
        let guard = MemoryReplayGuard::new(8_000_000);
        // Live entries: two fingerprints per claim, held long after NOW.
        for i in 0..live / 2 {
            guard
                .claim(&fingerprint(1 << 40 | i), NOW + 1_000_000, NOW)
                .unwrap();
        }
        assert_eq!(guard.len() as u64, live);
        let mut next = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_claims(&guard, &mut next, iters, |fp| {
                    black_box(guard.claim(black_box(fp), NOW, NOW)).unwrap();
                })
            })
        });
        // A replay: refused on the look-up.
        let held = fingerprint(1 << 41);
        guard.claim(&held, NOW + 1_000_000, NOW).unwrap();
        g.bench_function(format!("{name}_replay_refused"), |b| {
            b.iter(|| guard.claim(black_box(&held), NOW + 10, NOW).unwrap_err())
        });
    }
    bench_claim_after_hmac(&mut g);
    let fk = FingerprintKey::new([7; 16]);
    let key = SigningKey::from_bytes(SECRET);
    let header = Fixture::new(&key, 0).header;
    let creds = Credentials::parse(&header).unwrap();
    g.bench_function("fingerprints", |b| {
        b.iter(|| fk.fingerprints(black_box(&creds)))
    });
    g.finish();
}

/// Times `claim` over `iters` fresh fingerprints (numbered from `next`),
/// in chunks of 200 000 that each start from the same live entries: the
/// chunk before's claims expire at `TIMESTAMP` and are swept, untimed, so
/// warm-up's large counts stay within the guard's budget.
fn timed_claims(
    guard: &MemoryReplayGuard,
    next: &mut u64,
    iters: u64,
    mut claim: impl FnMut(&Fingerprints),
) -> Duration {
    const CHUNK: u64 = 200_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        guard.sweep(TIMESTAMP + 1);
        let fps: Vec<_> = (0..n).map(|i| fingerprint(*next + i)).collect();
        *next += n;
        left -= n;
        let start = Instant::now();
        for fp in &fps {
            claim(fp);
        }
        total += start.elapsed();
    }
    total
}

/// A request's verify-then-claim into a guard holding 10 M live
/// fingerprints (5 M requests, ~200 MB: far out of cache, as a busy node's
/// is), with the claim's look-ups started before the HMAC
/// (`ReplayGuard::prefetch`, as the server and the layer do) and without.
/// Claims expire at `now` and are swept, untimed, every 200 000.
fn bench_claim_after_hmac(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const NOW: u64 = TIMESTAMP;
    const LIVE_REQUESTS: u64 = 5_000_000;
    let key = SigningKey::from_bytes(SECRET);
    let verifier = Verifier::default();
    let req = Request {
        method: "GET",
        path: "/accounts/2/vms/123",
        query: None,
        body: b"",
    };
    let header = SignableRequest {
        key_id: KEY_ID,
        method: req.method,
        request_path: req.path,
        nonce: NONCE,
        timestamp: TIMESTAMP,
        body: b"",
    }
    .authorization(&key);
    let creds = Credentials::parse(&header).unwrap();
    let guard = MemoryReplayGuard::new(4 * LIVE_REQUESTS as usize);
    for i in 0..LIVE_REQUESTS {
        guard
            .claim(&fingerprint(1 << 42 | i), NOW + 1_000_000, NOW)
            .unwrap();
    }
    let mut next = 0u64;
    for (name, prefetch) in [
        ("10M_live_after_hmac", false),
        ("10M_live_after_hmac_prefetched", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_claims(&guard, &mut next, iters, |fp| {
                    if prefetch {
                        guard.prefetch(fp);
                    }
                    verifier.verify(&key, &creds, black_box(&req)).unwrap();
                    black_box(guard.claim(black_box(fp), NOW, NOW)).unwrap();
                })
            })
        });
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_pipeline, bench_msg100, bench_replay
}
/// Instruction-count mode, for a machine too busy for wall-clock figures:
/// `PSK_ICOUNT=<op> PSK_ITERS=<n> valgrind --tool=callgrind <bench binary>`
/// runs one operation n times and exits; the difference of the totals for
/// two values of n, divided by their difference, is the count per call
/// (docs/psk-bench.md has the loop). It also prints the wall-clock time
/// per call, whose minimum over repeated runs resists a busy machine. Ops: `verify_hit/<size>`,
/// `verify_miss/<size>`, `refuse_unknown/<size>`, `sign/<size>`,
/// `bare_hmac/<size>` with size 0B, 1KiB or 64KiB, `msg100/verify`,
/// `msg100/bare_hmac`, `parse`.
fn icount(op: &str, iters: u64) {
    let key = SigningKey::from_bytes(SECRET);
    let keyed = HmacSha512::new_from_slice(SECRET).unwrap();
    let verifier = Verifier::default();
    let (kind, size) = op.split_once('/').unwrap_or((op, "0B"));
    let msg100 = SignableRequest {
        key_id: KEY_ID,
        method: "GET",
        request_path: "/accounts/2/vms/123",
        nonce: NONCE,
        timestamp: TIMESTAMP,
        body: b"",
    };
    let n = match (kind, size) {
        ("msg100", _) => 0,
        (_, "0B") => 0,
        (_, "1KiB") => 1024,
        (_, "64KiB") => 64 * 1024,
        _ => panic!("unknown size {size:?}"),
    };
    let f = Fixture::new(&key, n);
    let hit = Credentials::parse(&f.header).unwrap();
    let miss = Credentials::parse(&f.bad_header).unwrap();
    let header100 = msg100.authorization(&key);
    let creds100 = Credentials::parse(&header100).unwrap();
    let message100 = msg100.string_to_sign().to_bytes();
    let req100 = Request {
        method: "GET",
        path: "/accounts/2/vms/123",
        query: None,
        body: b"",
    };
    let bare = |m: &[u8]| {
        let mut h = keyed.clone();
        h.update(black_box(m));
        black_box(h.finalize().into_bytes());
    };
    let start = Instant::now();
    for _ in 0..iters {
        match (kind, size) {
            ("parse", _) => drop(black_box(Credentials::parse(black_box(&f.header)))),
            ("verify_hit", _) => drop(black_box(verifier.verify(&key, &hit, &f.request()))),
            ("verify_miss", _) => drop(black_box(verifier.verify(
                &key,
                &miss,
                &f.request_with_query(),
            ))),
            ("refuse_unknown", _) => drop(black_box(
                verifier.refuse_unknown(&hit, &f.request_with_query()),
            )),
            ("sign", _) => drop(black_box(f.signable().sign(&key))),
            ("bare_hmac", _) => bare(&f.message),
            ("msg100", "verify") => drop(black_box(verifier.verify(
                &key,
                &creds100,
                black_box(&req100),
            ))),
            ("msg100", "bare_hmac") => bare(&message100),
            _ => panic!("unknown op {op:?}"),
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / iters.max(1) as f64;
    println!("{op} {iters} {ns:.1} ns/op");
}

fn main() {
    if let Ok(op) = std::env::var("PSK_ICOUNT") {
        let iters = std::env::var("PSK_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        icount(&op, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
