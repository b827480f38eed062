//! File-driven conformance test against `testdata/vectors.json`, the
//! independently computed vectors (Python's `hmac`, cross-checked against the
//! vendor's C# helper). The file is read as is and never edited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use armor_psk::{
    Credentials, Error, ParseError, Request, SecretKey, SignableRequest, SigningKey, Variant,
    Verifier,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Vectors {
    scheme: String,
    signing: Vec<SigningCase>,
    parsing: Vec<ParsingCase>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigningCase {
    name: String,
    key_id: String,
    secret_key: String,
    method: String,
    request_path: String,
    nonce: String,
    timestamp: u64,
    body: String,
    string_to_sign: String,
    signature: String,
    authorization: String,
}

#[derive(Debug, Deserialize)]
struct ParsingCase {
    name: String,
    value: String,
    outcome: String,
}

/// The signing cases the file holds at the time of writing; the test fails
/// if any disappears (or the file is emptied).
const SIGNING_NAMES: &[&str] = &[
    "get-simple",
    "get-me",
    "get-query-vendor-form",
    "get-query-signed-variant",
    "get-percent-encoded",
    "get-trailing-slash",
    "post-json",
    "post-empty-body",
    "put-utf8-body",
    "delete",
    "nonce-128",
    "nonce-equals-timestamp",
    "long-secret",
    "utf8-secret",
    "large-body",
    "other-key-id",
    "post-hashed-body-variant",
];

const PARSING_NAMES: &[&str] = &[
    "well-formed",
    "scheme-lowercase",
    "other-scheme",
    "no-credentials",
    "three-fields",
    "five-fields",
    "empty-key-id",
    "empty-nonce",
    "nonce-129",
    "nonce-128",
    "signature-not-base64",
    "signature-wrong-length",
    "timestamp-not-number",
    "timestamp-negative",
    "timestamp-empty",
    "timestamp-huge",
];

fn load() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn signing_case<'a>(v: &'a Vectors, name: &str) -> &'a SigningCase {
    v.signing
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no signing case {name:?}"))
}

fn signable(c: &SigningCase) -> SignableRequest<'_> {
    SignableRequest {
        key_id: &c.key_id,
        method: &c.method,
        request_path: &c.request_path,
        nonce: &c.nonce,
        timestamp: c.timestamp,
        body: c.body.as_bytes(),
    }
}

#[test]
fn file_holds_every_known_case() {
    let v = load();
    assert_eq!(v.scheme, armor_psk::SCHEME);
    assert!(
        v.signing.len() >= SIGNING_NAMES.len(),
        "{}",
        v.signing.len()
    );
    assert!(
        v.parsing.len() >= PARSING_NAMES.len(),
        "{}",
        v.parsing.len()
    );
    for name in SIGNING_NAMES {
        assert!(v.signing.iter().any(|c| c.name == *name), "missing {name}");
    }
    for name in PARSING_NAMES {
        assert!(v.parsing.iter().any(|c| c.name == *name), "missing {name}");
    }
}

#[test]
fn signing_cases_reproduce_exactly() {
    let v = load();
    let mut checked = 0;
    for c in &v.signing {
        let key = SigningKey::new(&SecretKey::new(c.secret_key.clone()));
        let req = signable(c);
        let sts = req.string_to_sign();
        assert_eq!(
            sts.to_bytes(),
            c.string_to_sign.as_bytes(),
            "{}: stringToSign",
            c.name
        );
        assert_eq!(sts.to_string(), c.string_to_sign, "{}: Display", c.name);
        assert_eq!(
            req.sign(&key).to_string(),
            c.signature,
            "{}: signature",
            c.name
        );
        assert_eq!(
            req.authorization(&key),
            c.authorization,
            "{}: authorization",
            c.name
        );
        // Keying from raw bytes is the same key.
        let raw = SigningKey::from_bytes(c.secret_key.as_bytes());
        assert_eq!(req.sign(&raw).to_string(), c.signature, "{}", c.name);
        checked += 1;
    }
    assert_eq!(checked, v.signing.len());
    assert!(checked >= SIGNING_NAMES.len());
}

/// The request a verifier receives for a case, and the variant it must
/// report.
fn received<'a>(v: &'a Vectors, c: &'a SigningCase) -> (Request<'a>, Variant) {
    match c.name.as_str() {
        // requestPath holds `path?query`: the client signed the query too.
        "get-query-signed-variant" => {
            let (path, query) = c
                .request_path
                .split_once('?')
                .expect("signed-query case has a query");
            let req = Request {
                method: &c.method,
                path,
                query: Some(query),
                body: c.body.as_bytes(),
            };
            (req, Variant::SignedQuery)
        }
        // The body field is base64(SHA-512(body of post-json)): the request
        // on the wire carries post-json's body.
        "post-hashed-body-variant" => {
            let original = signing_case(v, "post-json");
            let req = Request {
                method: &c.method,
                path: &c.request_path,
                query: None,
                body: original.body.as_bytes(),
            };
            (req, Variant::HashedBody)
        }
        _ => {
            assert!(!c.request_path.contains('?'), "{}", c.name);
            let req = Request {
                method: &c.method,
                path: &c.request_path,
                query: None,
                body: c.body.as_bytes(),
            };
            (req, Variant::Vendor)
        }
    }
}

#[test]
fn signing_cases_verify() {
    let v = load();
    let verifier = Verifier::default();
    let strict = Verifier::default().require_signed_query(true);
    let mut by_variant = [0usize; 3];
    for c in &v.signing {
        let key = SigningKey::new(&SecretKey::new(c.secret_key.clone()));
        let creds =
            Credentials::parse(&c.authorization).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(creds.key_id(), c.key_id, "{}", c.name);
        assert_eq!(creds.nonce(), c.nonce, "{}", c.name);
        assert_eq!(creds.timestamp(), c.timestamp, "{}", c.name);
        assert_eq!(creds.signature().to_string(), c.signature, "{}", c.name);

        verifier
            .check_time(&creds, c.timestamp)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let (req, want) = received(&v, c);
        assert_eq!(
            verifier.verify(&key, &creds, &req),
            Ok(want),
            "{}: verify",
            c.name
        );
        // No query on the request, or the query signed: strict agrees.
        assert_eq!(strict.verify(&key, &creds, &req), Ok(want), "{}", c.name);
        match want {
            Variant::Vendor => by_variant[0] += 1,
            Variant::SignedQuery => by_variant[1] += 1,
            Variant::HashedBody => by_variant[2] += 1,
            Variant::SignedQueryHashedBody => unreachable!(),
        }

        // A wrong key, and an unknown key id, give the same refusal.
        let other = SigningKey::from_bytes(b"not the secret");
        assert_eq!(
            verifier.verify(&other, &creds, &req),
            Err(Error::InvalidSignature),
            "{}",
            c.name
        );
        assert_eq!(
            verifier.refuse_unknown(&creds, &req),
            Error::InvalidSignature
        );
        // One second past the window either way.
        let w = verifier.window();
        assert!(verifier.check_time(&creds, c.timestamp + w).is_ok());
        assert_eq!(
            verifier.check_time(&creds, c.timestamp + w + 1),
            Err(Error::TimestampOutOfWindow {
                server_time: c.timestamp + w + 1
            })
        );
        assert!(verifier.check_time(&creds, c.timestamp - w - 1).is_err());
    }
    assert_eq!(by_variant.iter().sum::<usize>(), v.signing.len());
    assert!(by_variant[0] >= SIGNING_NAMES.len() - 2, "{by_variant:?}");
    assert_eq!(by_variant[1], 1, "one signed-query case");
    assert_eq!(by_variant[2], 1, "one hashed-body case");
}

#[test]
fn query_vectors_under_require_signed_query() {
    let v = load();
    let strict = Verifier::default().require_signed_query(true);
    // The vendor-form vector, received with a query it did not sign.
    let c = signing_case(&v, "get-query-vendor-form");
    let key = SigningKey::new(&SecretKey::new(c.secret_key.clone()));
    let creds = Credentials::parse(&c.authorization).unwrap();
    let req = Request {
        method: &c.method,
        path: &c.request_path,
        query: Some("$top=1000&status=running"),
        body: b"",
    };
    assert_eq!(
        Verifier::default().verify(&key, &creds, &req),
        Ok(Variant::Vendor)
    );
    assert_eq!(
        strict.verify(&key, &creds, &req),
        Err(Error::QueryNotSigned)
    );
    // The signed-query vector, received with another query: no match.
    let c = signing_case(&v, "get-query-signed-variant");
    let creds = Credentials::parse(&c.authorization).unwrap();
    let (path, _) = c.request_path.split_once('?').unwrap();
    let req = Request {
        method: &c.method,
        path,
        query: Some("$top=1001&status=running"),
        body: b"",
    };
    assert_eq!(
        Verifier::default().verify(&key, &creds, &req),
        Err(Error::InvalidSignature)
    );
    assert_eq!(
        strict.verify(&key, &creds, &req),
        Err(Error::InvalidSignature)
    );
}

#[test]
fn parsing_cases_have_their_outcome() {
    let v = load();
    let mut counts = [0usize; 3];
    for c in &v.parsing {
        let got = Credentials::parse(&c.value);
        match c.outcome.as_str() {
            "ok" => {
                assert!(got.is_ok(), "{}: {got:?}", c.name);
                counts[0] += 1;
            }
            "not_armor_psk" => {
                assert_eq!(got, Err(ParseError::NotArmorPsk), "{}", c.name);
                counts[1] += 1;
            }
            "malformed" => {
                assert!(
                    matches!(got, Err(ParseError::Malformed(_))),
                    "{}: {got:?}",
                    c.name
                );
                counts[2] += 1;
            }
            other => panic!("{}: unknown outcome {other:?}", c.name),
        }
        // The byte parser agrees with the text parser.
        assert_eq!(
            Credentials::parse_bytes(c.value.as_bytes()).map(|_| ()),
            got.map(|_| ()),
            "{}",
            c.name
        );
    }
    assert_eq!(counts.iter().sum::<usize>(), v.parsing.len());
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    assert!(v.parsing.len() >= PARSING_NAMES.len());
}
