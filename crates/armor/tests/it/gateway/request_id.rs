//! The request id reaches the upstream: the client's when well formed,
//! else the one armor made, which the client gets back.

use super::{gateway_with, signed};

#[tokio::test]
async fn the_upstream_sees_the_request_id_the_client_gets_back() {
    let (app, up, key) = gateway_with(&["--public-path", "/public"]).await;
    let (s, h, _) = signed(
        &app,
        &key,
        "GET",
        "/thing",
        &[("X-Request-Id", "up-1")],
        b"",
    )
    .await;
    assert_eq!((s, h["x-request-id"].to_str().unwrap()), (200, "up-1"));
    assert_eq!(up.last().header("x-request-id"), Some("up-1"));

    // Malformed (and anonymous, on a public path): replaced, both ways.
    let (s, h, _) = app
        .send("GET", "/public/x", &[("X-Request-Id", "no good")], vec![])
        .await;
    assert_eq!(s, 200);
    let id = h["x-request-id"].to_str().unwrap();
    assert_ne!(id, "no good");
    assert_eq!(up.last().header("x-request-id"), Some(id));
}
