//! Upstreams that answer while the gateway is still writing a request
//! larger than loopback's socket buffers: a refusal is relayed at once,
//! whether the upstream closes or keeps the connection open; an interim
//! `100 Continue` or an early `200` does not cut the request short.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{fresh_nonce, now, sign, spawn_app_with, Key, TestApp};

/// More than loopback's socket buffers hold: the gateway's write blocks
/// while the upstream does not read.
const BODY: usize = 24 << 20;

/// Reads one request head; returns its `Content-Length` (0 without one).
async fn read_head(s: &mut TcpStream) -> usize {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads `n` bytes of body; returns how many came.
async fn read_body(s: &mut TcpStream, n: usize) -> usize {
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < n {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    got
}

/// A gateway in front of a one-connection upstream run by `serve`.
async fn gateway<F, Fut>(serve: F) -> TestApp
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        serve(s).await;
    });
    spawn_gateway(&url).await
}

/// A gateway in front of `url`, taking 24 MiB bodies and waiting 20 s
/// for an answer.
async fn spawn_gateway(url: &str) -> TestApp {
    spawn_app_with(&[
        "--upstream",
        url,
        "--max-body",
        "33554432",
        "--upstream-timeout",
        "20",
    ])
    .await
}

/// A signed `PUT /upload` of [`BODY`] bytes with `key`.
async fn put_upload(app: &TestApp, key: &Key) -> reqwest::Response {
    let body = vec![b'x'; BODY];
    let auth = sign(key, "PUT", "/upload", &body, &fresh_nonce(), now());
    tokio::time::timeout(
        Duration::from_secs(40),
        app.http
            .put(format!("{}/upload", app.url))
            .header("Authorization", auth)
            .body(body)
            .send(),
    )
    .await
    .expect("no answer within 40 s")
    .unwrap()
}

/// [`put_upload`] with a new key: status, body, time taken.
async fn upload(app: &TestApp) -> (u16, String, Duration) {
    let token = app.login().await;
    let key = app.create_key(&token, 1, "upload").await;
    let start = Instant::now();
    let resp = put_upload(app, &key).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, text, start.elapsed())
}

/// An upstream that reads the head, writes `parts` (pausing after each as
/// long as said), and then neither reads the body nor closes: its answer
/// comes back whole, long before the upstream timeout's 504 (20 s). A
/// second attempt would wait for a connection nobody accepts.
async fn relayed_at_once(parts: &'static [(&'static [u8], u64)]) -> (u16, String) {
    let app = gateway(move |mut s| async move {
        read_head(&mut s).await;
        for (bytes, pause_ms) in parts {
            s.write_all(bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    })
    .await;
    let (status, text, took) = upload(&app).await;
    assert!(took < Duration::from_secs(15), "took {took:?}");
    (status, text)
}

#[tokio::test]
async fn an_upstream_that_answers_early_and_closes_is_relayed() {
    // It reads the head only, answers 413 and closes with the body unread,
    // which resets the connection while the gateway is still writing.
    let app = gateway(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo long",
            )
            .await;
    })
    .await;
    let (status, text, _) = upload(&app).await;
    assert_eq!((status, text.as_str()), (413, "too long"));
}

#[tokio::test]
async fn a_refusal_from_an_upstream_that_keeps_the_connection_open_is_relayed_at_once() {
    let got = relayed_at_once(&[(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo long",
        0,
    )])
    .await;
    assert_eq!(got, (413, "too long".to_owned()));
}

#[tokio::test]
async fn a_refusal_after_an_interim_answer_is_relayed_at_once() {
    let got = relayed_at_once(&[(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno",
        0,
    )])
    .await;
    assert_eq!(got, (401, "no".to_owned()));
}

#[tokio::test]
async fn a_refusal_whose_head_comes_in_parts_is_relayed_whole_and_sent_once() {
    // A pause longer than the gateway waits for an answer after a failed
    // write, between the status line and the rest of the head.
    let got = relayed_at_once(&[
        (b"HTTP/1.1 413 Payload Too Large\r\n", 2000),
        (b"x-why: size\r\ncontent-length: 8\r\n\r\ntoo long", 0),
    ])
    .await;
    assert_eq!(got, (413, "too long".to_owned()));
}

#[tokio::test]
async fn a_refusal_whose_head_cannot_be_relayed_is_502_at_once() {
    let (status, text) = relayed_at_once(&[(
        b"HTTP/1.1 413 x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        0,
    )])
    .await;
    assert_eq!(status, 502);
    assert!(text.contains("could not be relayed"), "{text}");
}

#[tokio::test]
async fn an_interim_answer_while_the_body_is_written_does_not_cut_it_short() {
    // `100 Continue` at once, then the body read only after a pause (the
    // gateway's write blocks with the interim answer waiting), then 200.
    let app = gateway(|mut s| async move {
        let n = read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = read_body(&mut s, n).await;
        let text = got.to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        s.write_all(answer.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (status, text, _) = upload(&app).await;
    assert_eq!((status, text), (200, BODY.to_string()));
}

#[tokio::test]
async fn an_upstream_that_answers_200_while_it_reads_gets_the_whole_body() {
    // The answer's head at once (chunked), the body read after a pause,
    // then one chunk with the count.
    let app = gateway(|mut s| async move {
        let n = read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = read_body(&mut s, n).await.to_string();
        let chunk = format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len());
        s.write_all(chunk.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (status, text, _) = upload(&app).await;
    assert_eq!((status, text), (200, BODY.to_string()));
}

#[tokio::test]
async fn an_interim_answer_ended_by_bare_line_feeds_does_not_hide_the_answer_head() {
    // After `100 Continue\n\n`, a 200 whose body looks like an answer
    // head: the client must get the 200 and that text as its body.
    let forged = "HTTP/1.1 418 x\r\nset-cookie: evil=1\r\ncontent-length: 5\r\n\r\nforge";
    let app = gateway(move |mut s| async move {
        let n = read_head(&mut s).await;
        let answer = format!(
            "HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{forged}",
            forged.len()
        );
        s.write_all(answer.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        read_body(&mut s, n).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "upload").await;
    let resp = put_upload(&app, &key).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(resp.text().await.unwrap(), forged);
}

#[tokio::test]
async fn a_request_whose_answer_began_is_not_sent_again_on_a_new_connection() {
    // Connection 1 answers a first request (so the gateway pools it), then
    // meets the upload with `100 Continue` and stops sending (its write
    // side shut, the body unread). A second attempt of the upload would
    // open connection 2, which answers 200.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if n == 0 {
                    read_head(&mut s).await;
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    read_head(&mut s).await;
                    s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
                    s.shutdown().await.unwrap();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else {
                    let len = read_head(&mut s).await;
                    read_body(&mut s, len).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
                        .await;
                }
            });
        }
    });
    let app = spawn_gateway(&url).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "again").await;
    let auth = sign(&key, "GET", "/warm", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send("GET", "/warm", &[("Authorization", auth.as_str())], vec![])
        .await;
    assert_eq!(s, 200);
    let resp = put_upload(&app, &key).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upload was sent again"
    );
}
