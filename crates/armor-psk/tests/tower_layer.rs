//! The tower layer, through the example app, in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/tower_app.rs"]
#[allow(dead_code)]
mod tower_app;

use armor_psk::SignableRequest;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use tower_app::{app, Keys};

const NOW: u64 = 1_763_880_000;

fn keys() -> Keys {
    Keys::with(&[("k1", "alice", "apsk_alice"), ("k2", "bob", "apsk_bob")])
}

fn auth(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: &str,
    ts: u64,
) -> String {
    let key = armor_psk::SigningKey::new(&armor_psk::SecretKey::new(secret.to_owned()));
    SignableRequest {
        key_id,
        method,
        request_path: path,
        nonce,
        timestamp: ts,
        body,
    }
    .authorization(&key)
}

async fn call(
    app: &axum::Router,
    method: &str,
    target: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(target);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn verified_requests_reach_the_handler_with_their_identity() {
    let app = app(keys(), || NOW);
    let a = auth("k1", "apsk_alice", "GET", "/hello", b"", "n1", NOW);
    let (s, _, body) = call(&app, "GET", "/hello?x=1", Some(&a), b"").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello alice (key k1)"));

    let payload = br#"{"order":42}"#;
    let a = auth("k2", "apsk_bob", "POST", "/echo", payload, "n1", NOW - 200);
    let (s, _, body) = call(&app, "POST", "/echo", Some(&a), payload).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "bob sent 12 bytes"));
}

#[tokio::test]
async fn refusals_carry_the_spec_body() {
    let app = app(keys(), || NOW);
    let (s, h, body) = call(&app, "GET", "/hello", None, b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "missing_authorization")
    );
    assert_eq!(h["www-authenticate"], "ARMOR-PSK");
    assert_eq!(h["content-type"], "application/json");

    let (s, _, body) = call(&app, "GET", "/hello", Some("Bearer x"), b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "not_armor_psk")
    );

    // Wrong secret and unknown key: the same answer.
    let wrong = auth("k1", "nope", "GET", "/hello", b"", "n2", NOW);
    let unknown = auth("k9", "apsk_alice", "GET", "/hello", b"", "n2", NOW);
    for a in [wrong, unknown] {
        let (s, _, body) = call(&app, "GET", "/hello", Some(&a), b"").await;
        assert_eq!(
            (s, code(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_signature")
        );
    }

    // Out of the window: the server's time is in the body.
    let old = auth("k1", "apsk_alice", "GET", "/hello", b"", "n3", NOW - 301);
    let (s, _, body) = call(&app, "GET", "/hello", Some(&old), b"").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["error"].as_str(), v["serverTime"].as_u64()),
        (Some("timestamp_out_of_window"), Some(NOW))
    );

    // A body other than the signed one.
    let a = auth("k1", "apsk_alice", "POST", "/echo", b"{}", "n4", NOW);
    let (s, _, body) = call(&app, "POST", "/echo", Some(&a), b"{ }").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );

    // Replays: the same request twice, and the same nonce with another path.
    let a = auth("k1", "apsk_alice", "GET", "/hello", b"", "n5", NOW);
    assert_eq!(
        call(&app, "GET", "/hello", Some(&a), b"").await.0,
        StatusCode::OK
    );
    let (s, _, body) = call(&app, "GET", "/hello", Some(&a), b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "nonce_reused")
    );
    let a = auth("k1", "apsk_alice", "POST", "/echo", b"", "n5", NOW);
    let (s, _, body) = call(&app, "POST", "/echo", Some(&a), b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "nonce_reused")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = app(keys(), || NOW);
    let big = vec![b'a'; 64 * 1024 + 1];
    let a = auth("k1", "apsk_alice", "POST", "/echo", &big, "n1", NOW);
    let (s, _, body) = call(&app, "POST", "/echo", Some(&a), &big).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
}
