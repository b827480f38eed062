//! Slow clients and slow answers through the gateway: a trickled body is
//! cut off by the body timeout, a paused answer is not cut off by the idle
//! timeout.

use super::spawn_upstream;
use crate::api::connections::trickle_to;
use crate::api::{fresh_nonce, now, sign, spawn_app_with};

#[tokio::test]
async fn a_trickled_body_on_a_gateway_route_is_answered_408_and_closed() {
    let up = spawn_upstream().await;
    let app = spawn_app_with(&[
        "--upstream",
        &up.url,
        "--upstream-timeout",
        "20",
        "--body-timeout",
        "1",
        "--public-path",
        "/public",
    ])
    .await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "slow").await;
    let body = vec![b'x'; 100];
    let psk = sign(&key, "POST", "/orders", &body, &fresh_nonce(), now());
    for head in [
        // Signed: read in full to be verified.
        format!("POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: {psk}\r\nContent-Length: 100\r\n\r\n"),
        // Public: streamed to the upstream as it comes.
        "POST /public/hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".to_owned(),
    ] {
        let answer = trickle_to(&app.url, head.clone())
            .await
            .unwrap_or_else(|| panic!("still open after 10 s: {head}"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{head}\n{answer}");
        assert!(answer.contains("\"request_timeout\""), "{answer}");
    }
    // The upstream never saw a whole request.
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[tokio::test]
async fn a_streamed_answer_that_pauses_is_not_cut_off_by_the_idle_timeout() {
    let up = spawn_upstream().await;
    let app = spawn_app_with(&[
        "--upstream",
        &up.url,
        "--idle-timeout",
        "1",
        "--public-path",
        "/public",
    ])
    .await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "pauses").await;
    // Public, and signed: each handed to the gateway by the front layer.
    for (path, signed) in [("/public/pause", false), ("/orders/pause", true)] {
        let mut req = app.http.get(format!("{}{path}", app.url));
        if signed {
            req = req.header(
                "authorization",
                sign(&key, "GET", path, b"", &fresh_nonce(), now()),
            );
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), "first second", "{path}");
    }
}
