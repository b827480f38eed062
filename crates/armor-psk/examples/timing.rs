//! Timing side channels of the verifier, as a Welch t-test (dudect style):
//! two classes of refused requests, interleaved at random, each timed with
//! `Instant`; |t| < 4.5 means no difference the test can see.
//!
//! - A: the signature wrong in its first byte; B: wrong in its last byte
//!   (an early-exit comparison would make A faster).
//! - A: an unknown key id (`Verifier::refuse_unknown`); B: a known key
//!   with a wrong signature (`Verifier::verify`).
//!
//! ```sh
//! cargo run --release -p armor-psk --example timing -- 200000
//! ```
//! Not a CI test: timing is noisy on shared machines. Figures are in
//! docs/reliability.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use armor_psk::{Credentials, Request, SignableRequest, Signature, SigningKey, Verifier};

/// Welch's t for two samples.
fn welch(a: &[f64], b: &[f64]) -> f64 {
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let (na, ma, va) = stats(a);
    let (nb, mb, vb) = stats(b);
    (ma - mb) / (va / na + vb / nb).sqrt()
}

/// Drops the slowest 5 % of each class (interrupts, migrations): the
/// usual dudect crop; the test is then on the body of the distribution.
fn crop(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.truncate(v.len() * 95 / 100);
    v
}

/// Tiny xorshift, so the class order is random but the run reproducible.
struct Rng(u64);
impl Rng {
    fn bit(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let key = SigningKey::from_bytes(b"apsk_timing-test-secret-0123456789abcdef");
    let verifier = Verifier::default();
    let req = Request {
        method: "POST",
        path: "/orders/123",
        query: None,
        body: br#"{"item":"widget","qty":3}"#,
    };
    let ts = 1_763_880_000u64;
    let good = SignableRequest {
        key_id: "20a37099-4a0b-432f-bf46-5fa690a0405c",
        method: req.method,
        request_path: req.path,
        nonce: "6f1c2b9e0d7a4c35",
        timestamp: ts,
        body: req.body,
    }
    .sign(&key);
    let header_with =
        |sig: &Signature, key_id: &str| format!("ARMOR-PSK {key_id}:{sig}:6f1c2b9e0d7a4c35:{ts}");
    let flipped = |i: usize| {
        let mut b = *good.as_bytes();
        b[i] ^= 1;
        Signature::from_bytes(b)
    };
    let known = "20a37099-4a0b-432f-bf46-5fa690a0405c";
    let unknown = "7f1c7a52-5d3e-4c11-9f0e-2b0f3f3c9a10";

    let first = header_with(&flipped(0), known);
    let last = header_with(&flipped(63), known);
    let unknown_h = header_with(&flipped(0), unknown);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Warm up.
    for _ in 0..10_000 {
        let c = Credentials::parse(&first).unwrap();
        black_box(verifier.verify(&key, &c, &req).is_err());
    }

    let mut run = |a: &dyn Fn() -> bool, b: &dyn Fn() -> bool| {
        let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
        while ta.len() < n || tb.len() < n {
            let pick_a = if ta.len() >= n {
                false
            } else if tb.len() >= n {
                true
            } else {
                rng.bit()
            };
            let f = if pick_a { a } else { b };
            let t = Instant::now();
            let r = black_box(f());
            let d = t.elapsed().as_nanos() as f64;
            assert!(r, "a refused request was accepted");
            if pick_a {
                ta.push(d)
            } else {
                tb.push(d)
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma, mb) = (mean(&ta), mean(&tb));
        (welch(&crop(ta), &crop(tb)), ma, mb)
    };

    let parse_verify = |h: &str| {
        let c = Credentials::parse(black_box(h)).unwrap();
        verifier.verify(&key, &c, &req).is_err()
    };
    let (t1, a1, b1) = run(&|| parse_verify(&first), &|| parse_verify(&last));
    let (t2, a2, b2) = run(
        &|| {
            let c = Credentials::parse(black_box(&unknown_h)).unwrap();
            // What the server does for an unknown key id: the same HMAC
            // over the same message, under a dummy key, then refuse.
            black_box(verifier.refuse_unknown(&c, &req));
            true
        },
        &|| parse_verify(&first),
    );
    // Control: the same request in both classes; a large |t| here means
    // the machine, not the code.
    let (t0, a0, b0) = run(&|| parse_verify(&first), &|| parse_verify(&first));
    println!("samples per class: {n} (slowest 5 % of each cropped)");
    println!(
        "control, the same request in both classes:      t = {t0:+.2} (means {a0:.0} ns / {b0:.0} ns)"
    );
    println!(
        "signature wrong in the first vs the last byte: t = {t1:+.2} (means {a1:.0} ns / {b1:.0} ns) {}",
        if t1.abs() < 4.5 { "PASS" } else { "FAIL" }
    );
    println!(
        "unknown key id vs known key, wrong signature:  t = {t2:+.2} (means {a2:.0} ns / {b2:.0} ns) {}",
        if t2.abs() < 4.5 { "PASS" } else { "FAIL" }
    );
    if t1.abs() >= 4.5 || t2.abs() >= 4.5 {
        std::process::exit(1);
    }
}
