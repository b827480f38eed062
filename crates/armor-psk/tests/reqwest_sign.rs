//! `client::sign_request`: the header verifies against the request reqwest
//! will send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use armor_psk::client::{sign_request, sign_request_with, SignError, SignOptions};
use armor_psk::{Credentials, Request, SecretKey, SigningKey, Variant, Verifier};

#[test]
fn signed_requests_verify_in_both_forms() {
    let key = SigningKey::new(&SecretKey::new("apsk_s".into()));
    let http = reqwest::Client::new();
    let body = br#"{"a":"b c"}"#.to_vec();
    for (sign_query, want) in [(false, Variant::Vendor), (true, Variant::SignedQuery)] {
        let mut req = http
            .post("http://127.0.0.1:9/orders/a b?q=x y&$top=1")
            .body(body.clone())
            .build()
            .unwrap();
        let signed = if sign_query {
            sign_request_with(
                &mut req,
                "kid",
                &key,
                "nonce1",
                1000,
                SignOptions { sign_query },
            )
            .unwrap()
        } else {
            sign_request(&mut req, "kid", &key, 1000).unwrap()
        };
        assert_eq!(signed.nonce.len(), if sign_query { 6 } else { 32 });
        assert!(
            signed.redacted.contains("requestPath=/orders/a%20b"),
            "{}",
            signed.redacted
        );
        let value = req.headers()["authorization"].clone();
        assert!(value.is_sensitive());
        let creds = Credentials::parse(value.to_str().unwrap()).unwrap();
        assert_eq!(creds.nonce(), signed.nonce);
        let incoming = Request {
            method: "POST",
            path: req.url().path(),
            query: req.url().query(),
            body: &body,
        };
        let strict = Verifier::default().require_signed_query(sign_query);
        assert_eq!(strict.verify(&key, &creds, &incoming), Ok(want));
    }
}

#[test]
fn fresh_nonces_and_streaming_bodies() {
    let key = SigningKey::new(&SecretKey::new("apsk_s".into()));
    let http = reqwest::Client::new();
    let mut a = http.get("http://h/x").build().unwrap();
    let mut b = http.get("http://h/x").build().unwrap();
    let na = sign_request(&mut a, "k", &key, 1).unwrap().nonce;
    let nb = sign_request(&mut b, "k", &key, 1).unwrap().nonce;
    assert_ne!(na, nb);
    assert!(na.bytes().all(|c| c.is_ascii_hexdigit()));
    let bad = sign_request_with(&mut a, "k\n", &key, "n", 1, SignOptions::default());
    assert_eq!(bad.unwrap_err(), SignError::InvalidHeader);
}
