//! Connection limits on a raw socket: idle and body timeouts, the
//! per-address cap, framing inspection that never switches off, and
//! `/metrics` on a listener of its own.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{fresh_nonce, now, sign, spawn_app_with, TestApp};

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes (or resets) the connection; `None` if it
/// is still open after `wait`.
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a connection of its own and reads until the server
/// closes it: the answer, checked to be the only one.
async fn only_answer_then_closed(app: &TestApp, bytes: &[u8]) -> String {
    let mut s = connect(app).await;
    s.write_all(bytes).await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    let shown = &answer[..answer.len().min(300)];
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{shown}");
    answer
}

/// Reads one answer whose body is `Content-Length` long.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let app = spawn_app_with(&["--idle-timeout", "2"]).await;
    // After a kept-alive answer.
    let mut s = connect(&app).await;
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    let rest = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert_eq!(
        rest.as_deref(),
        Some(""),
        "a kept-alive idle connection stayed open"
    );
    // A connection that never sends anything.
    let mut s = connect(&app).await;
    assert!(read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .is_some());
    // A connection in use is not idle: requests 500 ms apart for longer
    // than the timeout.
    let mut s = connect(&app).await;
    for _ in 0..6 {
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends a head declaring 100 bytes of body, then a byte every 300 ms.
pub(crate) async fn trickle(app: &TestApp, head: String) -> Option<String> {
    trickle_to(&app.url, head).await
}

/// As [`trickle`], to any server.
pub(crate) async fn trickle_to(url: &str, head: String) -> Option<String> {
    let mut s = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut writing = true;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if writing => writing = s.write_all(b"x").await.is_ok(),
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[tokio::test]
async fn a_trickled_body_is_answered_408_and_closed() {
    let app = spawn_app_with(&["--body-timeout", "1", "--idle-timeout", "30"]).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "slow").await;
    let body = vec![b'x'; 100];
    let psk = sign(&key, "POST", "/auth/whoami", &body, &fresh_nonce(), now());
    let heads = [
        // Anonymous, read by the handler.
        "POST /auth/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n".to_owned(),
        // ARMOR-PSK: the body is read to be verified.
        format!("POST /auth/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: {psk}\r\nContent-Length: 100\r\n\r\n"),
        // A token caller.
        format!("POST /auth/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: FH-AUTH {token}\r\nContent-Length: 100\r\n\r\n"),
    ];
    for head in heads {
        let answer = trickle(&app, head.clone())
            .await
            .unwrap_or_else(|| panic!("still open after 10 s: {head}"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{head}\n{answer}");
        assert!(answer.contains("\"request_timeout\""), "{answer}");
    }
}

#[tokio::test]
async fn connections_past_the_per_address_cap_are_refused() {
    let app = spawn_app_with(&["--max-connections-per-ip", "3"]).await;
    let mut open = pinged_connections(&app, 3).await;
    let mut fourth = connect(&app).await;
    let answer = read_until_closed(&mut fourth, Duration::from_secs(10))
        .await
        .expect("the fourth connection stayed open");
    // The whole answer, as declared.
    let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
    assert!(head.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{answer}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "too_many_connections");
    // One closed: room for another.
    drop(open.pop());
    let mut ok = None;
    for _ in 0..50 {
        let mut s = connect(&app).await;
        if s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
        {
            let text = read_until_closed(&mut s, Duration::from_secs(10))
                .await
                .unwrap();
            if text.starts_with("HTTP/1.1 200") {
                ok = Some(text);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok.is_some(), "no connection accepted after one closed");
}

/// A trusted proxy carries many clients' connections: the per-address cap
/// does not count it.
#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    let app = spawn_app_with(&[
        "--max-connections-per-ip",
        "2",
        "--trusted-proxy",
        "127.0.0.0/8,::1",
    ])
    .await;
    pinged_connections(&app, 5).await;
}

/// `n` connections kept open, each answered 200 to a `/ping`.
async fn pinged_connections(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        let mut s = connect(app).await;
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        open.push(s);
    }
    open
}

#[tokio::test]
async fn framing_inspection_survives_an_upgrade_header_and_refuses_what_it_cannot_follow() {
    let app = spawn_app_with(&[]).await;
    let smuggle = "POST /auth/authorize HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    // After a request with `Upgrade`, the same connection is still watched.
    let mut s = connect(&app).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(smuggle.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A head past 64 KiB (which hyper would still take): refused, closed,
    // and nothing after it is served.
    let big = "a".repeat(70 * 1024);
    let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n{smuggle}");
    let answer = only_answer_then_closed(&app, head.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(300)]
    );

    // What the inspector relies on for a head it leaves to hyper (one that
    // names no framing header): hyper refuses a head it cannot parse with
    // 400 and closes, so the request after it is never served.
    let answer = only_answer_then_closed(
        &app,
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // CONNECT: not a forward proxy.
    let answer = only_answer_then_closed(&app, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}

#[tokio::test]
async fn metrics_can_be_moved_to_a_listener_of_their_own() {
    let app = spawn_app_with(&[]).await;
    let (s, _, _) = app.send("GET", "/metrics", &[], vec![]).await;
    assert_eq!(s, 200);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let app = spawn_app_with(&["--metrics-listen", &listen]).await;
    let (s, _, body) = app.send("GET", "/metrics", &[], vec![]).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));
    let (s, _, body) =
        super::raw_request(&format!("http://{listen}"), "GET", "/metrics", &[], vec![]).await;
    assert_eq!(s, 200);
    assert!(body.as_str().unwrap().contains("armor_"), "{body}");
    let (s, _, _) =
        super::raw_request(&format!("http://{listen}"), "GET", "/me", &[], vec![]).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bytes_that_start_no_request_do_not_keep_a_connection_open() {
    let app = spawn_app_with(&["--idle-timeout", "2", "--header-timeout", "2"]).await;
    let big = format!(
        "GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "a".repeat(70 * 1024)
    );
    // Empty lines between requests; a head past 64 KiB that never ends.
    for (what, first) in [("empty lines", String::new()), ("an endless head", big)] {
        let mut s = connect(&app).await;
        s.write_all(first.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut buf = [0u8; 1024];
        let closed = loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    if started.elapsed() > Duration::from_secs(15) {
                        break false;
                    }
                    let drip: &[u8] = if what == "empty lines" { b"\r\n" } else { b"a" };
                    if s.write_all(drip).await.is_err() {
                        break true;
                    }
                }
            }
        };
        assert!(closed, "{what}: still open after 15 s");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    let app = spawn_app_with(&["--idle-timeout", "2"]).await;
    let s = connect(&app).await;
    let (mut rd, mut wr) = s.into_split();
    // Pipelined requests whose answers are never read: the answers fill
    // the socket buffers, the server's writes stop.
    let token = app.login().await;
    let req =
        format!("GET /openapi.json HTTP/1.1\r\nHost: x\r\nAuthorization: FH-AUTH {token}\r\n\r\n");
    let started = std::time::Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_millis(500), wr.write_all(req.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            // Our own writes are blocked too: the server reads no more.
            Err(_) => break,
        }
    }
    if !closed {
        // Nothing is read here until the server has had the idle limit
        // and more: then reading finds the end (or a reset).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut sink = vec![0u8; 1 << 20];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, rd.read(&mut sink)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    assert!(
        closed,
        "a connection whose answers are never read stayed open"
    );
}
