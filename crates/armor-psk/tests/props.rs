//! Property tests: sign → parse → verify round-trips, tamper refusal, a
//! parser that never panics, and the replay guard's promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, Error, Fingerprints, MemoryReplayGuard, ParseError, ReplayError, ReplayGuard,
    Request, SecretKey, SignableRequest, Signature, SigningKey, Variant, Verifier, MAX_FIELD_LEN,
    SIGNATURE_LEN,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases for the signing properties (a) and (b).
const SIGN_CASES: u32 = 2000;
/// Cases for the parser and replay-guard properties.
const OTHER_CASES: u32 = 1000;

/// A key id or nonce: 1–128 visible ASCII characters (0x21–0x7E), no ':'.
fn field() -> impl Strategy<Value = String> {
    "[!-9;-~]{1,128}"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("PUT".to_owned()),
        Just("PATCH".to_owned()),
        Just("DELETE".to_owned()),
        "[A-Z]{1,12}",
    ]
}

/// A raw request path: starts with '/', visible ASCII without '?' (the
/// query is carried apart), percent-escapes, `//`, `..` and all.
fn path() -> impl Strategy<Value = String> {
    "/[!->@-~]{0,100}"
}

fn query() -> impl Strategy<Value = String> {
    "[!-~]{0,60}"
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=2048)
}

fn secret() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}

#[derive(Debug, Clone)]
struct Case {
    key_id: String,
    method: String,
    path: String,
    nonce: String,
    timestamp: u64,
    body: Vec<u8>,
    secret: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        field(),
        method(),
        path(),
        field(),
        any::<u64>(),
        body(),
        secret(),
    )
        .prop_map(
            |(key_id, method, path, nonce, timestamp, body, secret)| Case {
                key_id,
                method,
                path,
                nonce,
                timestamp,
                body,
                secret,
            },
        )
}

impl Case {
    fn signable(&self) -> SignableRequest<'_> {
        SignableRequest {
            key_id: &self.key_id,
            method: &self.method,
            request_path: &self.path,
            nonce: &self.nonce,
            timestamp: self.timestamp,
            body: &self.body,
        }
    }

    fn key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.secret)
    }

    fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: None,
            body: &self.body,
        }
    }
}

/// What the server answers for a header and a request: parse, then verify
/// (the clock is not the subject here).
fn outcome(key: &SigningKey, header: &str, req: &Request<'_>) -> Result<Variant, Error> {
    let creds = Credentials::parse(header)?;
    Verifier::default().verify(key, &creds, req)
}

fn header(key_id: &str, sig: &str, nonce: &str, ts: &str) -> String {
    format!("ARMOR-PSK {key_id}:{sig}:{nonce}:{ts}")
}

/// Refused: a wrong signature, or a header the change made malformed.
fn assert_refused(got: Result<Variant, Error>, what: &str) -> Result<(), TestCaseError> {
    match got {
        Err(Error::InvalidSignature) | Err(Error::Parse(ParseError::Malformed(_))) => Ok(()),
        other => Err(TestCaseError::fail(format!("{what}: {other:?}"))),
    }
}

/// Flips bits of the byte at `at` so that it differs; ASCII stays ASCII
/// (`delta` < 0x80), so text stays text.
fn mutate_ascii(s: &str, at: Index, delta: u8) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = at.index(b.len());
    b[i] ^= delta & 0x7f;
    String::from_utf8(b).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SIGN_CASES))]

    /// (a) Whatever the fields, the header a client builds parses back to
    /// the same fields and verifies, in the vendor form.
    #[test]
    fn sign_parse_verify_round_trip(c in case(), skew in 0u64..=300, ahead in any::<bool>()) {
        let key = c.key();
        let h = c.signable().authorization(&key);
        let creds = Credentials::parse(&h).unwrap();
        prop_assert_eq!(creds.key_id(), c.key_id.as_str());
        prop_assert_eq!(creds.nonce(), c.nonce.as_str());
        prop_assert_eq!(creds.timestamp(), c.timestamp);
        prop_assert_eq!(creds.timestamp_text(), c.timestamp.to_string());
        prop_assert_eq!(creds.signature(), &c.signable().sign(&key));

        let v = Verifier::default();
        let now = if ahead {
            c.timestamp.checked_add(skew)
        } else {
            c.timestamp.checked_sub(skew)
        };
        if let Some(now) = now {
            prop_assert!(v.check_time(&creds, now).is_ok());
        }
        prop_assert_eq!(v.verify(&key, &creds, &c.request()), Ok(Variant::Vendor));
        // The SecretKey route keys the same HMAC when the secret is text.
        if let Ok(text) = std::str::from_utf8(&c.secret) {
            let k2 = SigningKey::new(&SecretKey::new(text.to_owned()));
            prop_assert_eq!(v.verify(&k2, &creds, &c.request()), Ok(Variant::Vendor));
        }
    }

    /// (a) The accepted variants round-trip too: path?query, and
    /// base64(SHA-512(body)) in place of a non-empty body.
    #[test]
    fn variants_round_trip(c in case(), q in query(), hashed in any::<bool>()) {
        use base64::Engine as _;
        use sha2::Digest as _;
        let key = c.key();
        let signed_path = format!("{}?{}", c.path, q);
        let digest = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha512::digest(&c.body));
        let hashed = hashed && !c.body.is_empty();
        let signed_body: &[u8] = if hashed { digest.as_bytes() } else { &c.body };
        let h = SignableRequest {
            request_path: &signed_path,
            body: signed_body,
            ..c.signable()
        }
        .authorization(&key);
        let req = Request { query: Some(&q), ..c.request() };
        let want = if hashed { Variant::SignedQueryHashedBody } else { Variant::SignedQuery };
        prop_assert_eq!(outcome(&key, &h, &req), Ok(want));
        let strict = Verifier::default().require_signed_query(true);
        let creds = Credentials::parse(&h).unwrap();
        prop_assert_eq!(strict.verify(&key, &creds, &req), Ok(want));
    }

    /// (b) One byte changed in any signed field, or in the signature, is
    /// refused.
    ///
    /// The message joins the fields without separators, so moving bytes
    /// across a field boundary (`/users/12` + `n` vs `/users/1` + `2n`)
    /// keeps the message and the signature: that re-split is the spec's
    /// known ambiguity, closed by the replay guard's claim on the signature
    /// (see `resplit_keeps_the_signature_and_the_guard_refuses_it`). A
    /// single-byte substitution keeps every length and changes the
    /// concatenation at exactly one position, so the vendor-form message
    /// always differs; the other forms differ in length (signed query:
    /// no query is sent here) or need a SHA-512 preimage (hashed body).
    #[test]
    fn any_single_byte_change_is_refused(
        c in case(),
        at in any::<Index>(),
        delta in 1u8..=0x7f,
        body_delta in 1u8..=0xff,
    ) {
        let key = c.key();
        let sig = c.signable().sign(&key);
        let sig_text = sig.to_string();
        let ts = c.timestamp.to_string();
        let req = c.request();
        // Untouched: accepted.
        prop_assert_eq!(
            outcome(&key, &header(&c.key_id, &sig_text, &c.nonce, &ts), &req),
            Ok(Variant::Vendor)
        );

        // Header fields.
        let kid = mutate_ascii(&c.key_id, at, delta);
        assert_refused(outcome(&key, &header(&kid, &sig_text, &c.nonce, &ts), &req), "keyId")?;
        let nonce = mutate_ascii(&c.nonce, at, delta);
        assert_refused(outcome(&key, &header(&c.key_id, &sig_text, &nonce, &ts), &req), "nonce")?;
        let ts2 = mutate_ascii(&ts, at, delta);
        assert_refused(outcome(&key, &header(&c.key_id, &sig_text, &c.nonce, &ts2), &req), "timestamp")?;

        // Request fields, under the untouched header.
        let good = header(&c.key_id, &sig_text, &c.nonce, &ts);
        let m = mutate_ascii(&c.method, at, delta);
        assert_refused(outcome(&key, &good, &Request { method: &m, ..req }), "method")?;
        let p = mutate_ascii(&c.path, at, delta);
        assert_refused(outcome(&key, &good, &Request { path: &p, ..req }), "path")?;
        if !c.body.is_empty() {
            let mut b = c.body.clone();
            let i = at.index(b.len());
            b[i] ^= body_delta;
            assert_refused(outcome(&key, &good, &Request { body: &b, ..req }), "body")?;
        }

        // The signature: one byte of the decoded value...
        let mut raw = *sig.as_bytes();
        raw[at.index(SIGNATURE_LEN)] ^= body_delta;
        let s2 = Signature::from_bytes(raw).to_string();
        assert_refused(outcome(&key, &header(&c.key_id, &s2, &c.nonce, &ts), &req), "signature bytes")?;
        // ...or one character of its base64 text (often malformed, or
        // non-canonical trailing bits, never the same signature).
        let s3 = mutate_ascii(&sig_text, at, delta);
        assert_refused(outcome(&key, &header(&c.key_id, &s3, &c.nonce, &ts), &req), "signature text")?;
    }

    /// (b) A signature made with any other secret is refused, and an
    /// unknown key id gets the same answer.
    #[test]
    fn other_secret_is_refused(c in case(), other in secret()) {
        // HMAC pads keys shorter than the block with zeros: `k` and `k\0`
        // are the same key by construction, so they are not "different".
        let trim = |s: &[u8]| {
            let end = s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            s[..end].to_vec()
        };
        prop_assume!(trim(&other) != trim(&c.secret));
        let h = c.signable().authorization(&SigningKey::from_bytes(&other));
        prop_assert_eq!(outcome(&c.key(), &h, &c.request()), Err(Error::InvalidSignature));
        let creds = Credentials::parse(&h).unwrap();
        prop_assert_eq!(
            Verifier::default().refuse_unknown(&creds, &c.request()),
            Error::InvalidSignature
        );
    }
}

/// Anything at all, often starting with the scheme.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let any_bytes = proptest::collection::vec(any::<u8>(), 0..20_000);
    let prefixed = (
        prop_oneof![
            Just(&b"ARMOR-PSK "[..]),
            Just(&b"armor-psk  "[..]),
            Just(&b"ARMOR-PSK"[..])
        ],
        proptest::collection::vec(any::<u8>(), 0..10_000),
    )
        .prop_map(|(p, rest)| [p, &rest].concat());
    prop_oneof![any_bytes, prefixed]
}

/// Near-valid values: the right shape with fields drawn from their own
/// alphabets plus the ones the parser has to refuse.
fn near_valid() -> impl Strategy<Value = String> {
    let b64 = |b: Vec<u8>| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let sig = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), SIGNATURE_LEN).prop_map(b64),
        1 => proptest::collection::vec(any::<u8>(), 60..=68).prop_map(b64),
        1 => "[A-Za-z0-9+/]{86}==",
        1 => "[A-Za-z0-9+/=_-]{80,92}",
    ];
    let text = || {
        prop_oneof![
            3 => field(),
            1 => "[ -~]{0,140}",
            1 => "[ -~\u{80}-\u{10ffff}]{0,140}",
        ]
    };
    (
        "(?i:armor-psk)( {0,3})",
        text(),
        sig,
        text(),
        prop_oneof![3 => "[0-9]{1,20}", 1 => "[0-9+-]{0,25}"],
        prop_oneof![3 => Just(String::new()), 1 => "(:[!-~]{0,5}){0,2}"],
    )
        .prop_map(|(s, k, g, n, t, extra)| format!("{s}{k}:{g}:{n}:{t}{extra}"))
}

/// If a value parses, its fields obey the rules and print back to a value
/// that parses to the same credentials.
fn check_parsed(c: &Credentials<'_>) -> Result<(), TestCaseError> {
    for f in [c.key_id(), c.nonce()] {
        prop_assert!((1..=MAX_FIELD_LEN).contains(&f.len()));
        prop_assert!(f.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':'));
    }
    prop_assert!(c.timestamp_text().bytes().all(|b| b.is_ascii_digit()));
    prop_assert_eq!(c.timestamp_text().parse::<u64>().ok(), Some(c.timestamp()));
    let again = header(
        c.key_id(),
        &c.signature().to_string(),
        c.nonce(),
        c.timestamp_text(),
    );
    let c2 = Credentials::parse(&again).unwrap();
    prop_assert_eq!(&c2, c);
    prop_assert_eq!(c2.timestamp_text(), c.timestamp_text());
    Ok(())
}

/// What tells two fingerprints apart to the guard: the top 64 bits it
/// stores (0 stored as 1, 0 marking an empty slot) and the 6 bits (40..46)
/// that choose its shard. Fingerprints equal there are the same to it.
fn stored(fp: u128) -> (u64, u8) {
    (((fp >> 64) as u64).max(1), ((fp >> 40) & 63) as u8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(OTHER_CASES))]

    /// (c) The parser never panics on arbitrary text.
    #[test]
    fn parse_never_panics_on_text(s in any::<String>(), tail in "\\PC{0,300}") {
        for v in [s.clone(), format!("ARMOR-PSK {s}"), format!("ARMOR-PSK {tail}")] {
            if let Ok(c) = Credentials::parse(&v) {
                check_parsed(&c)?;
            }
        }
    }

    /// (c) ...nor on arbitrary bytes, long ones (past the 8 KiB cap) and
    /// ones starting with the scheme included.
    #[test]
    fn parse_bytes_never_panics(b in header_bytes()) {
        let r = Credentials::parse_bytes(&b);
        if let Ok(c) = &r {
            check_parsed(c)?;
        }
        if let Ok(s) = std::str::from_utf8(&b) {
            prop_assert_eq!(Credentials::parse(s), r);
        }
    }

    /// (c) Near-valid values: no panic, and every accepted one obeys the
    /// rules.
    #[test]
    fn near_valid_values(v in near_valid()) {
        if let Ok(c) = Credentials::parse(&v) {
            check_parsed(&c)?;
        }
    }

    /// (d) The guard, against a model: a claim is refused as `Reused`
    /// exactly when one of its fingerprints was claimed and is still live;
    /// otherwise it is taken. Small pools make repeats common; each holds
    /// too a twin of every fingerprint differing only in bits the guard
    /// does not keep, and 0 and 1 << 64 (stored alike).
    #[test]
    fn replay_guard_matches_model(
        pairs in proptest::collection::vec(any::<u128>(), 1..8),
        sigs in proptest::collection::vec(any::<u128>(), 1..8),
        ops in proptest::collection::vec((any::<Index>(), any::<Index>(), 0u64..120, 0u64..=600), 1..80),
        start in 1_500_000_000u64..2_000_000_000,
    ) {
        let with_twins = |v: Vec<u128>| -> Vec<u128> {
            let twins = v.iter().map(|&f| f ^ 0xFF_FFFF_FFFF);
            v.iter().copied().chain(twins).chain([0, 1 << 64]).collect()
        };
        let (pairs, sigs) = (with_twins(pairs), with_twins(sigs));
        let guard = MemoryReplayGuard::new(1 << 16);
        let mut model: HashMap<(u64, u8), u64> = HashMap::new();
        let mut now = start;
        for (pi, si, dt, life) in ops {
            now += dt;
            let fp = Fingerprints { pair: *pi.get(&pairs), signature: *si.get(&sigs) };
            let held = [fp.pair, fp.signature]
                .iter()
                .any(|&f| model.get(&stored(f)).is_some_and(|&until| until >= now));
            let got = guard.claim(&fp, now + life, now);
            if held {
                prop_assert_eq!(got, Err(ReplayError::Reused));
            } else {
                prop_assert_eq!(got, Ok(()));
                model.insert(stored(fp.pair), now + life);
                model.insert(stored(fp.signature), now + life);
            }
        }
    }

    /// (d) A nearly full guard fails closed but never forgets: every claim
    /// it took is refused again for as long as it lives.
    #[test]
    fn full_guard_never_forgets(
        fps in proptest::collection::vec((any::<u128>(), any::<u128>(), 0u64..=600), 1..400),
        cap in 1usize..300,
        later in 0u64..=600,
    ) {
        let now = 1_763_880_000;
        let guard = MemoryReplayGuard::new(cap);
        let mut taken = Vec::new();
        for &(pair, signature, life) in &fps {
            let fp = Fingerprints { pair, signature };
            match guard.claim(&fp, now + life, now) {
                Ok(()) => taken.push((fp, now + life)),
                Err(ReplayError::Unavailable) => {}
                Err(ReplayError::Reused) => {
                    let seen = taken.iter().any(|(t, _): &(Fingerprints, u64)| {
                        [t.pair, t.signature]
                            .iter()
                            .any(|&x| stored(x) == stored(pair) || stored(x) == stored(signature))
                    });
                    prop_assert!(seen, "refused a fresh claim");
                }
            }
        }
        prop_assert!(!taken.is_empty());
        let t = now + later;
        for (fp, until) in taken {
            if until >= t {
                // Either fingerprint alone is enough.
                let alone = [
                    Fingerprints { pair: fp.pair, signature: !fp.signature },
                    Fingerprints { pair: !fp.pair, signature: fp.signature },
                ];
                for f in alone {
                    prop_assert_eq!(guard.claim(&f, t + 300, t), Err(ReplayError::Reused));
                }
            }
        }
    }

    /// (d) End to end: a verified request's fingerprints, claimed once, are
    /// refused on every replay within the window.
    #[test]
    fn verified_request_is_claimed_once(c in case(), replays in 1usize..4, later in 0u64..=600) {
        let c = Case { timestamp: c.timestamp % 4_000_000_000, ..c };
        let key = c.key();
        let h = c.signable().authorization(&key);
        let creds = Credentials::parse(&h).unwrap();
        let v = Verifier::default();
        prop_assert_eq!(v.verify(&key, &creds, &c.request()), Ok(Variant::Vendor));
        let fk = FingerprintKey::new([42; 16]);
        let fp = fk.fingerprints(&creds);
        let guard = MemoryReplayGuard::new(1024);
        let until = v.claim_until(&creds);
        prop_assert_eq!(guard.claim(&fp, until, c.timestamp), Ok(()));
        let t = c.timestamp.saturating_sub(300) + later;
        for _ in 0..replays {
            if t <= until {
                prop_assert_eq!(guard.claim(&fp, until, t), Err(ReplayError::Reused));
            }
        }
    }
}

/// The re-split the spec warns of: `GET /users/12` with nonce `n` and `GET
/// /users/1` with nonce `2n` sign the same bytes, so a captured signature
/// verifies for both. The replay guard claims the signature itself, so the
/// second one is refused as a replay.
#[test]
fn resplit_keeps_the_signature_and_the_guard_refuses_it() {
    let key = SigningKey::from_bytes(b"apsk_secret");
    let signed = SignableRequest {
        key_id: "kid",
        method: "GET",
        request_path: "/users/12",
        nonce: "n",
        timestamp: 1_763_880_000,
        body: b"",
    };
    let sig = signed.sign(&key).to_string();
    let original = header("kid", &sig, "n", "1763880000");
    let resplit = header("kid", &sig, "2n", "1763880000");
    let get = |path| Request {
        method: "GET",
        path,
        query: None,
        body: b"",
    };
    assert_eq!(
        outcome(&key, &original, &get("/users/12")),
        Ok(Variant::Vendor)
    );
    assert_eq!(
        outcome(&key, &resplit, &get("/users/1")),
        Ok(Variant::Vendor)
    );

    let fk = FingerprintKey::new([1; 16]);
    let a = fk.fingerprints(&Credentials::parse(&original).unwrap());
    let b = fk.fingerprints(&Credentials::parse(&resplit).unwrap());
    assert_ne!(a.pair, b.pair, "different (keyId, nonce)");
    assert_eq!(a.signature, b.signature, "same signature");
    let guard = MemoryReplayGuard::new(1024);
    assert_eq!(guard.claim(&a, 1_763_880_300, 1_763_880_000), Ok(()));
    assert_eq!(
        guard.claim(&b, 1_763_880_300, 1_763_880_001),
        Err(ReplayError::Reused)
    );
}

/// The hashed-body variant stands in for a non-empty body only (SPEC.md,
/// "Accepted variants", 3): over an empty body it is no accepted form.
#[test]
fn hashed_form_of_an_empty_body_is_refused() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = SigningKey::from_bytes(b"apsk_secret");
    let empty_hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(b""));
    for (path, query) in [("/x", None), ("/x?a=1", Some("a=1"))] {
        let h = SignableRequest {
            key_id: "kid",
            method: "POST",
            request_path: path,
            nonce: "n",
            timestamp: 1,
            body: empty_hash.as_bytes(),
        }
        .authorization(&key);
        let req = Request {
            method: "POST",
            path: "/x",
            query,
            body: b"",
        };
        assert_eq!(outcome(&key, &h, &req), Err(Error::InvalidSignature));
    }
}

/// Regression (found by `fuzz/` target `verify`): the guard stores expiries
/// in 32 bits, saturating; with a clock past 2106-02-07 (u32::MAX seconds)
/// every entry used to look expired at once, so a replay was accepted.
#[test]
fn claims_past_2106_are_still_refused() {
    let guard = MemoryReplayGuard::new(1024);
    let fp = Fingerprints {
        pair: 0x1234 << 64,
        signature: 0x5678 << 64,
    };
    let ts = 200_381_278_119;
    assert_eq!(guard.claim(&fp, ts + 300, ts), Ok(()));
    assert_eq!(guard.claim(&fp, ts + 300, ts), Err(ReplayError::Reused));
    assert_eq!(
        guard.claim(&fp, ts + 300, ts + 300),
        Err(ReplayError::Reused)
    );
}
