//! The gateway's upstream client against a raw upstream that writes
//! exactly the bytes scripted here: answer framing (RFC 9112 §6.3), what
//! is refused, and when a pooled connection is (not) used again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::api::{spawn_app_with, TestApp};

/// What the raw upstream does with one request: the bytes it answers, and
/// whether it then closes the connection.
struct Reply {
    bytes: Vec<u8>,
    close: bool,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        close: false,
    }
}

/// Requests as the upstream saw them: (connection number, request line).
type Log = Arc<Mutex<Vec<(usize, String)>>>;

/// A raw HTTP/1.1 upstream on loopback: for each request head (a body is
/// read by its `Content-Length`, or to its last chunk) it writes what
/// `script` says for the request line and the request's number on its
/// connection (from 0).
async fn raw_upstream(script: fn(&str, usize) -> Reply) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut nth = 0;
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let lower = head.to_ascii_lowercase();
                    let mut body_end = end + 4;
                    if let Some(cl) = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                    {
                        body_end += cl.trim().parse::<usize>().unwrap();
                    } else if lower.contains("transfer-encoding: chunked") {
                        while !buf[end..].windows(5).any(|w| w == b"0\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        body_end = end
                            + buf[end..]
                                .windows(5)
                                .position(|w| w == b"0\r\n\r\n")
                                .unwrap()
                            + 5;
                    }
                    while buf.len() < body_end {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..body_end);
                    seen.lock().unwrap().push((conn, line.clone()));
                    let r = script(&line, nth);
                    nth += 1;
                    if s.write_all(&r.bytes).await.is_err() || r.close {
                        return;
                    }
                }
            });
        }
    });
    (url, log)
}

/// Status, headers and body; the body read within 10 s (an error reading
/// it becomes `Err`).
async fn get(
    app: &TestApp,
    method: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Result<Vec<u8>, String>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        app.http
            .request(method, format!("{}{path}", app.url))
            .send(),
    )
    .await
    .expect("no answer head within 10 s")
    .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the answer did not end within 10 s")
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string());
    (status, headers, body)
}

async fn gateway(script: fn(&str, usize) -> Reply) -> (TestApp, Log) {
    let (url, log) = raw_upstream(script).await;
    let app = spawn_app_with(&[
        "--upstream",
        &url,
        "--upstream-timeout",
        "5",
        "--public-path",
        "/t",
    ])
    .await;
    (app, log)
}

/// The connection number each request came on.
fn conns(log: &Log) -> Vec<usize> {
    log.lock().unwrap().iter().map(|(c, _)| *c).collect()
}

fn script(line: &str, nth: usize) -> Reply {
    let path = line.split(' ').nth(1).unwrap_or_default();
    match path {
        "/t/plain" => reply("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain"),
        "/t/chunked" => reply(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
             5\r\nhello\r\n6;ext=\"a b\"\r\n world\r\n1a \r\nabcdefghijklmnopqrstuvwxyz\r\n\
             0\r\nx-sum: 42\r\nx-more: 1\r\n\r\n",
        ),
        "/t/both" => reply(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             b\r\nhello world\r\n0\r\n\r\n",
        ),
        "/t/extra" => reply(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
             HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-smuggled: 1\r\n\r\nsmuggled",
        ),
        "/t/close" => Reply {
            bytes: [
                &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"[..],
                &b"0123456789".repeat(10_000),
            ]
            .concat(),
            close: true,
        },
        "/t/no-content" => reply("HTTP/1.1 204 No Content\r\n\r\n"),
        "/t/not-modified" => {
            reply("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: \"x\"\r\n\r\n")
        }
        "/t/head" => reply("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
        "/t/continue" => reply(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
        ),
        "/t/switch" => reply("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        "/t/cl-list" => reply("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!"),
        "/t/cl-twice" => {
            reply("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!")
        }
        "/t/cl-negative" => reply("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nhello"),
        "/t/cl-text" => reply("HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\nhello"),
        "/t/cl-same" => {
            reply("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello")
        }
        "/t/big-head" => reply(format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
            "a".repeat(100 * 1024)
        )),
        "/t/many-headers" => {
            let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
            reply(format!(
                "HTTP/1.1 200 OK\r\n{many}content-length: 2\r\n\r\nok"
            ))
        }
        "/t/short" => Reply {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_vec(),
            close: true,
        },
        "/t/kept-then-closed" => Reply {
            bytes: b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
                .to_vec(),
            close: true,
        },
        // Answered once, then the connection is closed on the next request.
        "/t/once" if nth == 0 => reply("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce"),
        "/t/once" => Reply {
            bytes: Vec::new(),
            close: true,
        },
        _ => reply("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    }
}

#[tokio::test]
async fn a_chunked_answer_with_trailers_is_relayed_whole_and_its_connection_reused() {
    let (app, log) = gateway(script).await;
    let (s, h, body) = get(&app, "GET", "/t/chunked").await;
    assert_eq!(s, 200);
    assert_eq!(
        body.unwrap(),
        b"hello worldabcdefghijklmnopqrstuvwxyz".to_vec()
    );
    assert!(!h.contains_key("x-sum"), "{h:?}");
    let (s, _, body) = get(&app, "GET", "/t/plain").await;
    assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
    assert_eq!(conns(&log), [0, 0]);
}

#[tokio::test]
async fn an_answer_with_both_length_and_chunked_is_read_as_chunked_and_its_connection_dropped() {
    let (app, log) = gateway(script).await;
    let (s, h, body) = get(&app, "GET", "/t/both").await;
    assert_eq!((s, body.unwrap()), (200, b"hello world".to_vec()));
    assert_ne!(
        h.get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
    let (s, _, body) = get(&app, "GET", "/t/plain").await;
    assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
    assert_eq!(conns(&log), [0, 1]);
}

#[tokio::test]
async fn bytes_after_an_answer_never_reach_the_next_client() {
    let (app, log) = gateway(script).await;
    let (s, _, body) = get(&app, "GET", "/t/extra").await;
    assert_eq!((s, body.unwrap()), (200, b"ok".to_vec()));
    for _ in 0..3 {
        let (s, h, body) = get(&app, "GET", "/t/plain").await;
        assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
        assert!(!h.contains_key("x-smuggled"));
    }
    // The desynchronised connection was closed, the next one kept.
    assert_eq!(conns(&log), [0, 1, 1, 1]);
}

#[tokio::test]
async fn a_close_delimited_answer_is_relayed_whole() {
    let (app, log) = gateway(script).await;
    let (s, h, body) = get(&app, "GET", "/t/close").await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(body.unwrap(), b"0123456789".repeat(10_000));
    let (s, _, body) = get(&app, "GET", "/t/plain").await;
    assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
    assert_eq!(conns(&log), [0, 1]);
}

#[tokio::test]
async fn answers_without_a_body_leave_the_connection_usable() {
    let (app, log) = gateway(script).await;
    for (method, path, status) in [
        ("GET", "/t/no-content", 204),
        ("GET", "/t/not-modified", 304),
        ("HEAD", "/t/head", 200),
    ] {
        let (s, _, body) = get(&app, method, path).await;
        assert_eq!((s, body.unwrap()), (status, Vec::new()), "{path}");
        let (s, _, body) = get(&app, "GET", "/t/plain").await;
        assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()), "after {path}");
    }
    assert_eq!(conns(&log), [0; 6]);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_101_is_refused() {
    let (app, _log) = gateway(script).await;
    let (s, _, body) = get(&app, "GET", "/t/continue").await;
    assert_eq!((s, body.unwrap()), (200, b"final".to_vec()));
    let (s, _, body) = get(&app, "GET", "/t/switch").await;
    assert_upstream_unavailable(s, body, "");
}

#[tokio::test]
async fn invalid_or_conflicting_content_length_is_502() {
    let (app, _log) = gateway(script).await;
    for path in ["/t/cl-list", "/t/cl-twice", "/t/cl-negative", "/t/cl-text"] {
        let (s, h, body) = get(&app, "GET", path).await;
        assert_upstream_unavailable(s, body, path);
        assert_eq!(h["content-type"], "application/problem+json");
    }
    // The same length repeated is one length.
    let (s, h, body) = get(&app, "GET", "/t/cl-same").await;
    assert_eq!((s, body.unwrap()), (200, b"hello".to_vec()));
    assert_eq!(h["content-length"], "5");
}

#[tokio::test]
async fn an_oversized_answer_head_is_502() {
    let (app, _log) = gateway(script).await;
    for path in ["/t/big-head", "/t/many-headers"] {
        let (s, _, body) = get(&app, "GET", path).await;
        assert_upstream_unavailable(s, body, path);
    }
    let (s, _, body) = get(&app, "GET", "/t/plain").await;
    assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
}

#[tokio::test]
async fn an_answer_cut_short_ends_the_clients_answer_with_an_error() {
    let (app, _log) = gateway(script).await;
    // The client gets an error: before the head (the server had not sent
    // it yet) or in the body; never a whole answer.
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        app.http.get(format!("{}/t/short", app.url)).send(),
    )
    .await
    .expect("no answer within 10 s");
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
        assert!(body.expect("no end within 10 s").is_err());
    }
    let (s, _, body) = get(&app, "GET", "/t/plain").await;
    assert_eq!((s, body.unwrap()), (200, b"plain".to_vec()));
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced() {
    let (app, log) = gateway(script).await;
    // Each answer claims keep-alive, then the upstream closes: the next
    // request finds the pooled connection closed (or fails on it and is
    // sent again), and succeeds on a new one.
    for _ in 0..5 {
        let (s, _, body) = get(&app, "GET", "/t/kept-then-closed").await;
        assert_eq!((s, body.unwrap()), (200, b"ok".to_vec()));
    }
    for _ in 0..5 {
        let (s, _, body) = get(&app, "POST", "/t/kept-then-closed").await;
        assert_eq!((s, body.unwrap()), (200, b"ok".to_vec()));
    }
    assert_eq!(conns(&log), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_request_dropped_on_a_reused_connection_is_sent_again_when_safe() {
    let (app, log) = gateway(script).await;
    // The second GET goes on the pooled connection, which the upstream
    // closes without answering: sent again on a new one.
    for _ in 0..2 {
        let (s, _, body) = get(&app, "GET", "/t/once").await;
        assert_eq!((s, body.unwrap()), (200, b"once".to_vec()));
    }
    assert_eq!(conns(&log), [0, 0, 1]);
    // A POST is not: the upstream may have acted on it.
    let (s, _, body) = get(&app, "POST", "/t/once").await;
    assert_upstream_unavailable(s, body, "");
    assert_eq!(conns(&log), [0, 0, 1, 1]);
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413_and_a_chunked_one_arrives_whole() {
    let (url, log) = raw_upstream(script).await;
    let app = spawn_app_with(&[
        "--upstream",
        &url,
        "--public-path",
        "/t",
        "--max-body",
        "1000",
    ])
    .await;
    let parts = |n: usize| {
        futures_util::stream::iter((0..n).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 100])))
    };
    let resp = app
        .http
        .post(format!("{}/t/plain", app.url))
        .body(reqwest::Body::wrap_stream(parts(30)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");
    assert!(log.lock().unwrap().is_empty());
    // Within the limit: streamed upstream (chunked), answered. (On a new
    // client connection: the server closes the one it answered 413 on.)
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http
        .post(format!("{}/t/plain", app.url))
        .body(reqwest::Body::wrap_stream(parts(9)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "plain");
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_get_with_a_chunked_body_goes_upstream_without_it() {
    // An upstream that records everything it receives on its one
    // connection: the head, then whatever follows within a moment.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a head");
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await
        {
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    let app = spawn_app_with(&["--upstream", &url, "--public-path", "/t"]).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The chunk holds a second request: an upstream that ignored a GET's
    // body would serve it, with an identity armor never checked.
    let smuggled = "GET /t/admin HTTP/1.1\r\nX-Armor-User-Id: 1\r\n\r\n";
    let req = format!(
        "GET /t/x HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    client.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let upstream = received.await.unwrap();
    assert!(upstream.starts_with("GET /t/x HTTP/1.1\r\n"), "{upstream}");
    let lower = upstream.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{upstream}");
    assert!(!upstream.contains("/t/admin"), "{upstream}");
}

/// A 502 `upstream_unavailable` answer (`what` names the case on failure).
fn assert_upstream_unavailable(s: u16, body: Result<Vec<u8>, String>, what: &str) {
    let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(
        (s, body["error"].as_str()),
        (502, Some("upstream_unavailable")),
        "{what}: {body}"
    );
}
