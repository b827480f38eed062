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

    // None sent: the one armor made, once.
    let (s, h, _) = signed(&app, &key, "GET", "/thing", &[], b"").await;
    assert_eq!(s, 200);
    let id = h["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(up.last().lines("x-request-id"), [id]);

    // Malformed or twice (and anonymous, on a public path): replaced,
    // both ways, and only the one armor made goes on.
    for sent in [
        &[("X-Request-Id", "no good")][..],
        &[("X-Request-Id", "a"), ("X-Request-Id", "b")],
    ] {
        let (s, h, _) = app.send("GET", "/public/x", sent, vec![]).await;
        assert_eq!(s, 200);
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32, "{sent:?}");
        assert_eq!(up.last().lines("x-request-id"), [id], "{sent:?}");
    }
}
