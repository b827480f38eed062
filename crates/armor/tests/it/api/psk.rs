//! ARMOR-PSK through the real server: every rule of SPEC.md.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;

use super::*;

async fn app_with_key() -> (TestApp, Key) {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "psk").await;
    (app, key)
}

#[tokio::test]
async fn signed_get_and_post_with_body_and_query() {
    let (app, key) = app_with_key().await;
    let (s, me) = app.psk(&key, "GET", "/me", b"").await;
    assert_eq!((s, me["authentication"].as_str()), (200, Some("ARMOR-PSK")));
    assert_eq!(me["user"]["links"]["userId"], 1);

    let body = br#"{"subject":"disk full","priority":2}"#;
    let (s, who) = app.psk(&key, "POST", "/auth/whoami", body).await;
    assert_eq!(s, 200, "{who}");
    assert_eq!(who["keyId"], key.id.as_str());
    assert_eq!(who["bodyLength"], body.len());
    assert_eq!(who["bodySha256"], hex::encode(sha2::Sha256::digest(body)));

    // Vendor form: the query is not signed.
    let (s, _) = app.psk(&key, "GET", "/me?$top=10&x=%20y", b"").await;
    assert_eq!(s, 200);
    // Signed-query variant.
    let auth = sign(&key, "GET", "/me?$top=10", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send("GET", "/me?$top=10", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    // Hashed-body variant.
    let hashed = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(body));
    let auth = sign(
        &key,
        "PUT",
        "/auth/whoami",
        hashed.as_bytes(),
        &fresh_nonce(),
        now(),
    );
    let (s, _, b) = app
        .send(
            "PUT",
            "/auth/whoami",
            &[("Authorization", &auth)],
            body.to_vec(),
        )
        .await;
    // PUT is not a route of whoami: authenticated, then 405.
    assert_eq!(s, 405, "{b}");
    let auth = sign(
        &key,
        "POST",
        "/auth/whoami",
        hashed.as_bytes(),
        &fresh_nonce(),
        now(),
    );
    let (s, _, _) = app
        .send(
            "POST",
            "/auth/whoami",
            &[("Authorization", &auth)],
            body.to_vec(),
        )
        .await;
    assert_eq!(s, 200);
    // A body that is not the signed one.
    let auth = sign(&key, "POST", "/auth/whoami", body, &fresh_nonce(), now());
    let (s, _, b) = app
        .send(
            "POST",
            "/auth/whoami",
            &[("Authorization", &auth)],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_signature")));
    // Scheme in lower case.
    let auth =
        sign(&key, "GET", "/me", b"", &fresh_nonce(), now()).replacen("ARMOR-PSK", "armor-psk", 1);
    let (s, _, _) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn require_signed_query() {
    let app = spawn_app_with(&["--require-signed-query"]).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "q").await;
    let (s, b) = app.psk(&key, "GET", "/me?a=1", b"").await;
    assert_eq!((s, b["error"].as_str()), (401, Some("query_not_signed")));
    let auth = sign(&key, "GET", "/me?a=1", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send("GET", "/me?a=1", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
}

#[tokio::test]
async fn replays_are_refused_and_64_copies_succeed_once() {
    let (app, key) = app_with_key().await;
    let auth = sign(&key, "GET", "/me", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    let (s, _, b) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("nonce_reused")));

    // Same nonce, new timestamp (a different signature): still the same pair.
    let nonce = fresh_nonce();
    let a1 = sign(&key, "GET", "/me", b"", &nonce, now());
    let a2 = sign(&key, "GET", "/me", b"", &nonce, now() - 1);
    assert_eq!(
        app.send("GET", "/me", &[("Authorization", &a1)], vec![])
            .await
            .0,
        200
    );
    assert_eq!(
        app.send("GET", "/me", &[("Authorization", &a2)], vec![])
            .await
            .0,
        401
    );

    // The re-split: GET /users/1 with nonce "2n" signs the same bytes as
    // GET /users/12 with nonce "n": the signature is claimed too.
    let ts = now();
    let a = sign(&key, "GET", "/users/12", b"", "n7", ts);
    let b = sign(&key, "GET", "/users/1", b"", "2n7", ts);
    assert_eq!(a.split(':').nth(1), b.split(':').nth(1));
    let (s1, _, _) = app
        .send("GET", "/users/12", &[("Authorization", &a)], vec![])
        .await;
    assert_eq!(s1, 404);
    let (s2, _, body) = app
        .send("GET", "/users/1", &[("Authorization", &b)], vec![])
        .await;
    assert_eq!((s2, body["error"].as_str()), (401, Some("nonce_reused")));

    let app = Arc::new(app);
    let auth = Arc::new(sign(&key, "GET", "/me", b"", &fresh_nonce(), now()));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (app, auth) = (app.clone(), auth.clone());
            tokio::spawn(async move {
                app.send("GET", "/me", &[("Authorization", &auth)], vec![])
                    .await
                    .0
            })
        })
        .collect();
    let mut ok = 0;
    let mut reused = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            401 => reused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, reused), (1, 63));
}

/// Waits until early in a second, so a request signed now reaches the
/// server within the same second.
async fn start_of_second() -> u64 {
    loop {
        #[allow(clippy::disallowed_methods)]
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if d.subsec_millis() < 300 {
            return d.as_secs();
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            1000 - u64::from(d.subsec_millis()) + 5,
        ))
        .await;
    }
}

#[tokio::test]
async fn clock_skew_window() {
    let (app, key) = app_with_key().await;
    for (offset, want) in [
        (-299i64, 200u16),
        (299, 200),
        (-301, 401),
        (301, 401),
        (0, 200),
    ] {
        // Sent and answered within one second (else sent again), so the
        // server's clock read the same second as `t`.
        let mut attempts = 0;
        let (t, s, h, b) = loop {
            attempts += 1;
            assert!(attempts <= 20, "no request answered within its second");
            let t = start_of_second().await;
            let ts = t.checked_add_signed(offset).unwrap();
            let auth = sign(&key, "GET", "/me", b"", &fresh_nonce(), ts);
            let (s, h, b) = app
                .send("GET", "/me", &[("Authorization", &auth)], vec![])
                .await;
            if now() == t {
                break (t, s, h, b);
            }
        };
        assert_eq!(s, want, "offset {offset}: {b}");
        if want == 401 {
            assert_eq!(b["error"], "timestamp_out_of_window");
            let server_time = b["serverTime"].as_u64().unwrap();
            assert_eq!(server_time, t);
            assert!(h.contains_key("date"));
        }
    }
}

#[tokio::test]
async fn wrong_secret_unknown_and_deleted_keys_look_the_same() {
    let (app, key) = app_with_key().await;
    let token = app.login().await;
    let doomed = app.create_key(&token, 1, "doomed").await;
    let (s, _, _) = app
        .send(
            "DELETE",
            &format!("/users/1/keys/{}", doomed.id),
            &[("Authorization", &format!("FH-AUTH {token}"))],
            vec![],
        )
        .await;
    assert_eq!(s, 200);

    let nonce = fresh_nonce();
    let ts = now();
    let wrong = Key {
        id: key.id.clone(),
        secret: "apsk_wrong".into(),
    };
    let unknown = Key {
        id: "7f1c7a52-5d3e-4c11-9f0e-2b0f3f3c9a10".into(),
        secret: key.secret.clone(),
    };
    let mut bodies = Vec::new();
    for k in [&wrong, &unknown, &doomed] {
        let auth = sign(k, "GET", "/me", b"", &nonce, ts);
        let (s, h, b) = app
            .send("GET", "/me", &[("Authorization", &auth)], vec![])
            .await;
        assert_eq!(s, 401);
        assert_eq!(h["www-authenticate"], "ARMOR-PSK");
        assert_eq!(b["error"], "invalid_signature");
        assert!(!b.to_string().contains(&key.secret));
        bodies.push(b);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    // The description says what the server signed over, to diff with.
    let d = bodies[0]["error_description"].as_str().unwrap();
    assert!(
        d.contains("requestPath=/me") && d.contains(&format!("nonce={nonce}")),
        "{d}"
    );
    // A refused request does not burn the nonce.
    let auth = sign(&key, "GET", "/me", b"", &nonce, ts);
    assert_eq!(
        app.send("GET", "/me", &[("Authorization", &auth)], vec![])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn malformed_headers() {
    let (app, key) = app_with_key().await;
    let good = sign(&key, "GET", "/me", b"", &fresh_nonce(), now());
    let parts: Vec<&str> = good.split_once(' ').unwrap().1.split(':').collect();
    let cases = [
        "ARMOR-PSK".to_owned(),
        format!("ARMOR-PSK {}:{}:{}", parts[0], parts[1], parts[3]),
        format!("ARMOR-PSK {}:{}:a:b:{}", parts[0], parts[1], parts[3]),
        format!("ARMOR-PSK {}:{}:{}:{}", parts[0], "abc", parts[2], parts[3]),
        format!(
            "ARMOR-PSK {}:{}:{}:{}",
            parts[0],
            parts[1],
            "n".repeat(129),
            parts[3]
        ),
        format!("ARMOR-PSK {}:{}:{}:-5", parts[0], parts[1], parts[2]),
        format!(
            "ARMOR-PSK {}:{}:{}:99999999999999999999999",
            parts[0], parts[1], parts[2]
        ),
    ];
    for c in cases {
        let (s, _, b) = app
            .send("GET", "/me", &[("Authorization", &c)], vec![])
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("malformed_authorization")),
            "{c}"
        );
    }
}

#[tokio::test]
async fn body_limit() {
    let app = spawn_app_with(&["--max-body", "1024"]).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "big").await;
    let body = vec![b'x'; 2048];
    let auth = sign(&key, "POST", "/auth/whoami", &body, &fresh_nonce(), now());
    let (s, _, b) = app
        .send(
            "POST",
            "/auth/whoami",
            &[("Authorization", &auth)],
            body.clone(),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (413, Some("body_too_large")));
    // Chunked, without a Content-Length: refused once past the limit.
    let stream = futures_stream(body.clone());
    let resp = app
        .http
        .post(format!("{}/auth/whoami", app.url))
        .header("Authorization", auth)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let ok = vec![b'y'; 1024];
    let (s, who) = app.psk(&key, "POST", "/auth/whoami", &ok).await;
    assert_eq!((s, who["bodyLength"].as_u64()), (200, Some(1024)));
    let (s, b) = app
        .post_json(
            "/auth/authorize",
            json!({"username": "x".repeat(4096), "password": "y"}),
            None,
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (413, Some("body_too_large")));
}

fn futures_stream(
    body: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    ChunkStream {
        chunks: body
            .chunks(256)
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter(),
    }
}

struct ChunkStream {
    chunks: std::vec::IntoIter<Vec<u8>>,
}

impl futures_core::Stream for ChunkStream {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.chunks.next().map(Ok))
    }
}
