//! Structured requests: a client signs (in any accepted form), the server
//! parses, checks the clock, verifies and claims. Every step must agree with
//! the spec, and a single-byte change anywhere must be refused.
#![no_main]

use arbitrary::Arbitrary;
use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, Error, MemoryReplayGuard, ParseError, ReplayError, ReplayGuard, Request,
    SignableRequest, Signature, SigningKey, Variant, Verifier, MAX_FIELD_LEN,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Tamper {
    KeyId,
    Method,
    Path,
    Nonce,
    Timestamp,
    Body,
    SignatureByte,
    Secret,
}

#[derive(Debug, Arbitrary)]
struct Input {
    secret: Vec<u8>,
    key_id: String,
    method: String,
    path: String,
    query: Option<String>,
    nonce: String,
    timestamp: u64,
    body: Vec<u8>,
    sign_query: bool,
    hash_body: bool,
    require_signed_query: bool,
    skew: i16,
    tamper: Option<(Tamper, u16, u8)>,
}

fn visible_no_colon(s: &str) -> bool {
    (1..=MAX_FIELD_LEN).contains(&s.len())
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// Flips bits of one ASCII byte of `s`, keeping it ASCII and different;
/// `None` when that byte is not ASCII (the text would break) or `s` is empty.
fn flip_ascii(s: &str, at: u16, delta: u8) -> Option<String> {
    let mut b = s.as_bytes().to_vec();
    let i = usize::from(at) % b.len().max(1);
    let d = (delta & 0x7f).max(1);
    if b.get(i)?.is_ascii() {
        b[i] ^= d;
        String::from_utf8(b).ok()
    } else {
        None
    }
}

/// `base64(SHA-512(body))`, as the hashed-body variant signs it.
fn b64_sha512(body: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(body))
}

fuzz_target!(|input: Input| {
    let Input {
        secret,
        key_id,
        method,
        path,
        query,
        nonce,
        timestamp,
        body,
        sign_query,
        hash_body,
        require_signed_query,
        skew,
        tamper,
    } = input;
    let key = SigningKey::from_bytes(&secret);

    // What the client signs.
    let sign_query = sign_query && query.is_some();
    let signed_path = match (&query, sign_query) {
        (Some(q), true) => format!("{path}?{q}"),
        _ => path.clone(),
    };
    let hash_body = hash_body && !body.is_empty();
    let digest = b64_sha512(&body);
    let signed_body: &[u8] = if hash_body { digest.as_bytes() } else { &body };
    let signable = SignableRequest {
        key_id: &key_id,
        method: &method,
        request_path: &signed_path,
        nonce: &nonce,
        timestamp,
        body: signed_body,
    };
    let header = signable.authorization(&key);

    // The server: parse. A key id the client should never have used
    // (spaces, colons, control or non-ASCII characters) must not verify:
    // leading spaces are read as part of the separator after the scheme, so
    // such a header may still parse, but to other fields.
    let verifier = Verifier::default().require_signed_query(require_signed_query);
    let req = Request {
        method: &method,
        path: &path,
        query: query.as_deref(),
        body: &body,
    };
    let valid = visible_no_colon(&key_id) && visible_no_colon(&nonce);
    let creds = match Credentials::parse(&header) {
        Ok(c) if valid => c,
        Ok(c) => {
            assert!(key_id.starts_with(' '), "{header:?} parsed");
            assert_ne!(c.key_id(), key_id);
            assert!(verifier.verify(&key, &c, &req).is_err());
            return;
        }
        Err(e) => {
            assert!(matches!(e, ParseError::Malformed(_)));
            assert!(!valid, "{header:?}: {e}");
            return;
        }
    };
    assert_eq!(creds.signature(), &signable.sign(&key));

    // Clock.
    let now = timestamp.saturating_add_signed(i64::from(skew));
    let fresh = verifier.check_time(&creds, now).is_ok();
    assert_eq!(fresh, timestamp.abs_diff(now) <= verifier.window());

    // Signature.
    let want = match (sign_query, hash_body) {
        (false, false) => Variant::Vendor,
        (true, false) => Variant::SignedQuery,
        (false, true) => Variant::HashedBody,
        (true, true) => Variant::SignedQueryHashedBody,
    };
    let want = if require_signed_query && query.is_some() && !want.covers_query() {
        Err(Error::QueryNotSigned)
    } else {
        Ok(want)
    };
    assert_eq!(verifier.verify(&key, &creds, &req), want);
    assert_eq!(
        verifier.refuse_unknown(&creds, &req),
        Error::InvalidSignature
    );

    // Replay: claimed once, refused after.
    if want.is_ok() {
        let guard = MemoryReplayGuard::new(64);
        let fp = FingerprintKey::new([9; 16]).fingerprints(&creds);
        let until = verifier.claim_until(&creds);
        let t = now.min(until);
        assert_eq!(guard.claim(&fp, until, t), Ok(()));
        assert_eq!(guard.claim(&fp, until, t), Err(ReplayError::Reused));
    }

    // One change anywhere: never accepted. A same-length substitution moves
    // no byte across a field boundary, so the message really differs.
    let Some((what, at, delta)) = tamper else {
        return;
    };
    let ts = timestamp.to_string();
    let sig = creds.signature().to_string();
    let build = |k: &str, s: &str, n: &str, t: &str| format!("ARMOR-PSK {k}:{s}:{n}:{t}");
    let outcome = |h: &str, r: &Request<'_>, k: &SigningKey| -> Result<Variant, Error> {
        let c = Credentials::parse(h)?;
        verifier.verify(k, &c, r)
    };
    let got = match what {
        Tamper::KeyId => flip_ascii(&key_id, at, delta)
            .map(|k| outcome(&build(&k, &sig, &nonce, &ts), &req, &key)),
        Tamper::Nonce => flip_ascii(&nonce, at, delta)
            .map(|n| outcome(&build(&key_id, &sig, &n, &ts), &req, &key)),
        Tamper::Timestamp => flip_ascii(&ts, at, delta)
            .map(|t| outcome(&build(&key_id, &sig, &nonce, &t), &req, &key)),
        Tamper::Method => flip_ascii(&method, at, delta)
            .map(|m| outcome(&header, &Request { method: &m, ..req }, &key)),
        Tamper::Path => flip_ascii(&path, at, delta)
            .map(|p| outcome(&header, &Request { path: &p, ..req }, &key)),
        Tamper::Body => (!body.is_empty()).then(|| {
            let mut b = body.clone();
            let i = usize::from(at) % b.len();
            b[i] ^= delta.max(1);
            outcome(&header, &Request { body: &b, ..req }, &key)
        }),
        Tamper::SignatureByte => {
            let mut raw = *creds.signature().as_bytes();
            raw[usize::from(at) % raw.len()] ^= delta.max(1);
            let s = Signature::from_bytes(raw).to_string();
            Some(outcome(&build(&key_id, &s, &nonce, &ts), &req, &key))
        }
        Tamper::Secret => {
            // HMAC zero-pads short keys: `k` and `k\0` are one key.
            let mut other = secret.clone();
            other.push(delta.max(1));
            Some(outcome(&header, &req, &SigningKey::from_bytes(&other)))
        }
    };
    if let Some(got) = got {
        assert!(
            matches!(
                got,
                // Not QueryNotSigned: that would mean the changed request
                // matched without its query.
                Err(Error::InvalidSignature) | Err(Error::Parse(ParseError::Malformed(_)))
            ),
            "{what:?}: {got:?}"
        );
    }
});
