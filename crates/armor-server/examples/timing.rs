//! Timing side channels of ARMOR-PSK verification, as a Welch t-test
//! (dudect style), through the server's own path: `KeyVerifier::psk_begin` (parse,
//! clock, constant-time key look-up) then `KeyVerifier::psk_finish` (verify under
//! the key's state, or under the state an unknown key id was given), on a
//! real `Core` over a SQLite store with 2048 keys (by default).
//!
//! Two classes of refused requests are interleaved at random and timed
//! with `Instant`; |t| < 4.5 means no difference the test can see. Each
//! call draws its request at random from its class's pool: one request for
//! each of 128 probed keys (every 16th key created, so that they lie spread
//! over the cache like any keys in use), or for each of 128 unknown ids of
//! the same shape. Both pools are used alike.
//! - A: the signature wrong in its first byte; B: wrong in its last byte
//!   (an early-exit comparison would make A faster).
//! - A: an unknown key id; B: a known key id with a wrong signature.
//! - Controls: the same requests in both classes (a large |t| there means
//!   the machine, not the code); one half of the class's keys against the
//!   other (what keys' places in memory alone make of the test).
//!
//! Both classes run the same code on the same memory: before each timed
//! call the class's header is copied into one work buffer, so only the
//! bytes differ, never their address or the call site.
//!
//! ```sh
//! cargo run --release -p armor-server --example timing -- 200000
//! # SAMPLES per class, KEYS in the store, CLASS of them probed (spread):
//! cargo run --release -p armor-server --example timing -- 200000 2048 128
//! ```
//! Why these defaults (figures in docs/reliability.md): an unknown id is
//! verified under the state at a place its hash picks among all the
//! cache's keys. Probing every key makes those borrowed states also the
//! known class's, so warmer in cache (the unknown id comes out faster);
//! probing the first keys created, which sit together in memory, makes
//! the known class the more local (the unknown id comes out slower). With
//! a spread subset neither applies, as for a client probing ids on a
//! server whose keys it mostly does not use.
//! Exits 1 when a |t| is 4.5 or more. Not a CI test: timing needs a quiet
//! machine. Figures are in docs/reliability.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use armor_psk::{Request, SignableRequest, Signature, SigningKey};
use armor_server::core::Core;

const NOW: u64 = 1_763_880_000;
/// Keys in the store, and how many of them are probed, by default.
const KEYS: usize = 2048;
const CLASS: usize = 128;
const NONCE: &str = "6f1c2b9e0d7a4c35";
const REQ: Request<'static> = Request {
    method: "POST",
    path: "/orders/123",
    query: None,
    body: br#"{"item":"widget","qty":3}"#,
};

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

/// Tiny xorshift for the class order and the draws; seeded per run (the
/// seed is printed), so no fixed sequence of classes meets the same
/// machine rhythm run after run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bit(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One refused request through the server's path; true if refused.
async fn check(core: &Core, header: &str) -> bool {
    match core.verifier.psk_begin(header) {
        Ok(begun) => core
            .verifier
            .psk_finish(&begun, &REQ, &Default::default())
            .await
            .is_err(),
        Err(_) => true,
    }
}

/// Times `n` calls per class, the classes interleaved at random; each call
/// takes one of its class's headers at random. Returns Welch's t and the
/// two means, on the cropped samples.
async fn run(core: &Core, rng: &mut Rng, n: usize, a: &[String], b: &[String]) -> (f64, f64, f64) {
    let len = a[0].len();
    assert!(
        a.iter().chain(b).all(|h| h.len() == len),
        "the headers must be the same length"
    );
    let mut work = String::with_capacity(len);
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // A coin flip per call, 2n calls: no class gets a run of its own at
    // the end (forcing equal counts would give one class the last few
    // hundred calls in a row).
    for i in 0..2 * n {
        // As the server's periodic task does: the queued refusals are
        // counted off the timed calls, so the queue never fills.
        if i % 1024 == 0 {
            core.verifier.count_queued_refusals();
        }
        let pick_a = rng.bit();
        let class = if pick_a { a } else { b };
        work.clear();
        work.push_str(&class[rng.below(class.len())]);
        let t = Instant::now();
        let refused = black_box(check(core, black_box(&work)).await);
        let d = t.elapsed().as_nanos() as f64;
        assert!(refused, "a wrong request was accepted");
        if pick_a {
            ta.push(d)
        } else {
            tb.push(d)
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ta, tb) = (crop(ta), crop(tb));
    (welch(&ta, &tb), mean(&ta), mean(&tb))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let n = arg(1, 200_000);
    let keys = arg(2, KEYS).max(2);
    let class = arg(3, CLASS).clamp(2, keys);
    let dir = tempfile::tempdir().unwrap();
    let (core, owner) = Core::scratch(dir.path(), NOW, 1 << 16).await.unwrap();
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..keys {
        let key = core
            .keys
            .create_key(&owner, 1, &format!("timing-{i}"), &Default::default(), None)
            .await
            .unwrap();
        let known = key.row.id.clone();
        let signing = SigningKey::from_bytes(key.secret.as_bytes());
        let good = SignableRequest {
            key_id: &known,
            method: REQ.method,
            request_path: REQ.path,
            nonce: NONCE,
            timestamp: NOW,
            body: REQ.body,
        }
        .sign(&signing);
        let header = |i: usize, key_id: &str| {
            let mut b = *good.as_bytes();
            b[i] ^= 1;
            format!(
                "ARMOR-PSK {key_id}:{}:{NONCE}:{NOW}",
                Signature::from_bytes(b)
            )
        };
        first.push(header(0, &known));
        last.push(header(63, &known));
        unknown.push(header(0, &uuid_like(&known)));
    }

    // The wall clock only seeds the class order here.
    #[allow(clippy::disallowed_methods)]
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    // Warm up both paths.
    // The probed keys, spread over creation order (and so over memory),
    // with an unknown id beside each.
    let probed = |v: &[String]| -> Vec<String> {
        v.iter()
            .step_by(keys / class)
            .take(class)
            .cloned()
            .collect()
    };
    let (first, last, unknown) = (probed(&first), probed(&last), probed(&unknown));
    let (first, last, unknown) = (&first[..], &last[..], &unknown[..]);
    run(&core, &mut rng, 20_000, first, unknown).await;
    let (t1, a1, b1) = run(&core, &mut rng, n, first, last).await;
    let (t2, a2, b2) = run(&core, &mut rng, n, unknown, first).await;
    let (t0, a0, b0) = run(&core, &mut rng, n, first, first).await;
    let (half, other_half) = first.split_at(class / 2);
    let (t3, a3, b3) = run(&core, &mut rng, n, half, other_half).await;
    let verdict = |t: f64| if t.abs() < 4.5 { "PASS" } else { "FAIL" };
    println!("samples per class: {n} (slowest 5 % of each cropped), through KeyVerifier::psk_begin + psk_finish; {keys} keys, {class} probed; seed {seed:#x}");
    println!("control, the same request in both classes:      t = {t0:+.2} (cropped means differ by {:+.2} ns of {b0:.0})", a0 - b0);
    println!("control, two halves of the known keys:          t = {t3:+.2} (cropped means differ by {:+.2} ns of {b3:.0})", a3 - b3);
    println!(
        "signature wrong in the first vs the last byte: t = {t1:+.2} (cropped means differ by {:+.2} ns of {b1:.0}) {}",
        a1 - b1,
        verdict(t1)
    );
    println!(
        "unknown key id vs known key, wrong signature:  t = {t2:+.2} (cropped means differ by {:+.2} ns of {b2:.0}) {}",
        a2 - b2,
        verdict(t2)
    );
    if t1.abs() >= 4.5 || t2.abs() >= 4.5 {
        std::process::exit(1);
    }
}

/// A key id of the same length and shape that is not in the store.
fn uuid_like(known: &str) -> String {
    known
        .chars()
        .map(|c| match c {
            '0'..='8' => char::from(c as u8 + 1),
            '9' => '0',
            'a'..='e' => char::from(c as u8 + 1),
            'f' => 'a',
            other => other,
        })
        .collect()
}
