//! Slow clients and slow answers through the gateway: a trickled body is
//! cut off by the body timeout, a paused answer is not cut off by the idle
//! timeout, and a stop lets a streaming answer finish.

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

#[tokio::test]
async fn a_stop_lets_a_streaming_answer_finish_closes_idle_connections_and_accepts_no_more() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    let up = spawn_upstream().await;
    let mut app = spawn_app_with(&["--upstream", &up.url, "--public-path", "/public"]).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    /// What the next read brings ("" once closed), within 10 s.
    async fn read_some(c: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    /// Sends `request`, then reads until what came back is `enough`.
    async fn send_until(c: &mut TcpStream, request: &str, enough: impl Fn(&str) -> bool) -> String {
        c.write_all(request.as_bytes()).await.unwrap();
        let mut got = String::new();
        while !enough(&got) {
            let more = read_some(c).await;
            assert!(!more.is_empty(), "closed too soon: {got}");
            got += &more;
        }
        got
    }
    // An idle kept-alive connection (its whole answer read, so that the
    // next read can only be the close), and one whose answer is streaming.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let ping = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let ping = send_until(&mut idle, ping, |a| a.ends_with('}')).await;
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    let mut busy = TcpStream::connect(&addr).await.unwrap();
    let pause = "GET /public/pause HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut answer = send_until(&mut busy, pause, |a| a.contains("first")).await;

    app.signal_stop();
    let stopped = Instant::now();
    // The idle connection is closed at once.
    assert_eq!(
        read_some(&mut idle).await,
        "",
        "the idle connection stays open"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    // No new connection is accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(&addr).await.is_err(), "still accepting");
    // The streaming answer ends whole, then the connection is closed.
    loop {
        let more = read_some(&mut busy).await;
        if more.is_empty() {
            break;
        }
        answer += &more;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("second") && answer.ends_with("0\r\n\r\n"),
        "{answer}"
    );
    assert!(app.exited_within(Duration::from_secs(10)), "still running");
}
