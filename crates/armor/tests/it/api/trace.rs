//! Request tracing: the request id is echoed (or replaced when malformed)
//! and each request's span reaches the log with its fields, a refusal with
//! its `error` code; no secret reaches it (the scan on drop).

use super::*;

/// The server's log without terminal colours, one string per line.
fn log_lines(app: &TestApp) -> Vec<String> {
    let mut plain = String::new();
    let logs = app.logs_text();
    let mut chars = logs.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.lines().map(str::to_owned).collect()
}

/// The one log line of the request with this id that ends its span.
fn request_line(app: &TestApp, id: &str) -> String {
    let tag = format!("id={id} ");
    let lines: Vec<String> = log_lines(app)
        .into_iter()
        .filter(|l| l.contains("request{") && l.contains(&tag))
        .filter(|l| l.ends_with(": refused") || l.ends_with(": answered"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines[0].clone()
}

fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn request_ids_are_echoed_and_malformed_ones_replaced() {
    let app = spawn_app().await;
    let (s, h, _) = app
        .send("GET", "/ping", &[("X-Request-Id", "client-42.a_B")], vec![])
        .await;
    assert_eq!((s, request_id(&h).as_str()), (200, "client-42.a_B"));

    let long = "a".repeat(65);
    for bad in ["has space", "quote\"d", "x:y", long.as_str()] {
        let (s, h, _) = app
            .send("GET", "/ping", &[("X-Request-Id", bad)], vec![])
            .await;
        let id = request_id(&h);
        assert_eq!(s, 200);
        assert_ne!(id, bad);
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    // Refusals carry one too; without a header each request gets its own.
    let (s, h1, _) = app.send("GET", "/me", &[], vec![]).await;
    let (_, h2, _) = app.send("GET", "/me", &[], vec![]).await;
    assert_eq!(s, 401);
    assert_ne!(request_id(&h1), request_id(&h2));
    assert_eq!(request_id(&h1).len(), 32);
}

#[tokio::test]
async fn each_request_logs_its_span_and_refusals_their_code() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "traced").await;

    // An API-key caller, answered.
    let auth = sign(&key, "GET", "/Auth/WhoAmI", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send(
            "GET",
            "/Auth/WhoAmI",
            &[("Authorization", &auth), ("X-Request-Id", "trace-psk-ok")],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let line = request_line(&app, "trace-psk-ok");
    for field in [
        "method=GET",
        "route=/auth/whoami",
        "caller=api-key",
        &format!("key_id={}", key.id),
        "status=200",
        "latency_us=",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    assert!(line.ends_with(": answered") && !line.contains("error="));

    // A wrong signature: refused, with its code, the claimed key id and
    // neither the signature nor the secret.
    let good = sign(&key, "GET", "/users/1/keys", b"", &fresh_nonce(), now());
    let (head, rest) = good.split_once(':').unwrap();
    let (sig, tail) = rest.split_once(':').unwrap();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    let wrong_sig = format!("{first}{}", &sig[1..]);
    let forged = format!("{head}:{wrong_sig}:{tail}");
    let (s, _, body) = app
        .send(
            "GET",
            "/users/1/keys",
            &[
                ("Authorization", &forged),
                ("X-Request-Id", "trace-psk-bad"),
            ],
            vec![],
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let line = request_line(&app, "trace-psk-bad");
    for field in [
        "route=/users/{id}/keys",
        &format!("key_id={}", key.id),
        "status=401",
        "error=invalid_signature",
        " INFO ",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    assert!(line.ends_with(": refused"), "{line}");
    assert!(!line.contains("caller="), "{line}");
    let logs = app.logs_text();
    assert!(!logs.contains(&wrong_sig) && !logs.contains(sig));

    // A Secret Key sent where the key id goes is not logged (the secret
    // scan on drop looks for it and for its prefix).
    let misplaced = format!("ARMOR-PSK {}:{sig}:{}:{}", key.secret, fresh_nonce(), now());
    let (s, _, _) = app
        .send(
            "GET",
            "/me",
            &[
                ("Authorization", &misplaced),
                ("X-Request-Id", "trace-misplaced"),
            ],
            vec![],
        )
        .await;
    assert_eq!(s, 401);
    let line = request_line(&app, "trace-misplaced");
    assert!(!line.contains("key_id="), "{line}");

    // A password caller.
    let (s, _, _) = app
        .send(
            "GET",
            "/me",
            &[
                ("Authorization", &format!("FH-AUTH {token}")),
                ("X-Request-Id", "trace-password"),
            ],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let line = request_line(&app, "trace-password");
    for field in ["caller=password", "route=/me", "status=200"] {
        assert!(line.contains(field), "{field} not in {line}");
    }

    // Anonymous, on no route at all.
    let (s, _, _) = app
        .send(
            "GET",
            "/no/such/route",
            &[("X-Request-Id", "trace-404")],
            vec![],
        )
        .await;
    assert_eq!(s, 404);
    let line = request_line(&app, "trace-404");
    for field in [
        "caller=anonymous",
        "route=*",
        "status=404",
        "error=not_found",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
}

#[tokio::test]
async fn at_the_default_level_only_refusals_are_logged_with_their_fields() {
    let app = super::spawn_app_logging("info").await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "quiet").await;
    let auth = sign(&key, "GET", "/me", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send(
            "GET",
            "/me",
            &[("Authorization", &auth), ("X-Request-Id", "quiet-ok")],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let forged = sign(&key, "GET", "/me", b"x", &fresh_nonce(), now());
    let (s, _, _) = app
        .send(
            "GET",
            "/me",
            &[("Authorization", &forged), ("X-Request-Id", "quiet-no")],
            vec![],
        )
        .await;
    assert_eq!(s, 401);
    let lines = log_lines(&app);
    assert!(
        !lines.iter().any(|l| l.contains("quiet-ok")),
        "an answered request was logged at info"
    );
    let line = lines
        .iter()
        .find(|l| l.contains("id=quiet-no "))
        .unwrap_or_else(|| panic!("the refusal was not logged:\n{lines:#?}"));
    for field in [
        "INFO",
        "method=GET",
        "route=/me",
        &format!("key_id={}", key.id),
        "status=401",
        "error=invalid_signature",
        "refused",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
}
