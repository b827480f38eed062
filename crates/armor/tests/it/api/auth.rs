//! Password login (FH-AUTH), `/me` and the identity routes, account context.

use serde_json::json;

use super::*;

#[tokio::test]
async fn login_token_reissue_logout() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = format!("FH-AUTH {token}");

    // A GET with a JSON body `{}`, as the public armorapi client sends.
    let (s, _, me) = app
        .send(
            "GET",
            "/me",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"]["username"], ADMIN_EMAIL);
    assert_eq!(me["user"]["type"], "user");
    assert_eq!(me["user"]["links"]["userId"], 1);
    assert_eq!(me["accounts"][0]["id"], 1);
    assert_eq!(me["features"], json!([]));
    let perms = me["permissions"]["1"].as_array().unwrap();
    for p in [
        "API Keys All Read",
        "API Keys All Delete",
        "API Keys Self Manage",
    ] {
        assert!(perms.contains(&json!(p)), "{perms:?}");
    }

    // Bearer works too.
    let (s, _, _) = app
        .send(
            "GET",
            "/me",
            &[("Authorization", &format!("Bearer {token}"))],
            vec![],
        )
        .await;
    assert_eq!(s, 200);

    // Reissue: a fresh token; the old one is revoked.
    let (s, fresh) = app
        .post_json("/auth/token/reissue", json!({"token": token}), None)
        .await;
    assert_eq!(s, 200, "{fresh}");
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    let (s, _, body) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_token")));

    // Logout revokes.
    let fresh_auth = format!("FH-AUTH {fresh}");
    let (s, _) = app
        .post_json("/auth/logout", json!({}), Some(&fresh_auth))
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = app
        .send("GET", "/me", &[("Authorization", &fresh_auth)], vec![])
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn codes_are_single_use_and_username_spellings() {
    let app = spawn_app().await;
    let (s, body) = app
        .post_json(
            "/auth/authorize",
            json!({"userName": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let exchange = json!({"code": body["code"], "grant_type": "authorization_code"});
    let (s, _) = app.post_json("/auth/token", exchange.clone(), None).await;
    assert_eq!(s, 200);
    let (s, again) = app.post_json("/auth/token", exchange, None).await;
    assert_eq!((s, again["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_answer_the_same() {
    let app = spawn_app().await;
    let (s1, b1) = app
        .post_json(
            "/auth/authorize",
            json!({"username": ADMIN_EMAIL, "password": "nope"}),
            None,
        )
        .await;
    let (s2, b2) = app
        .post_json(
            "/auth/authorize",
            json!({"username": "nobody@example.com", "password": "nope"}),
            None,
        )
        .await;
    assert_eq!(s1, 401);
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(b1["error"], "invalid_credentials");
    for field in ["error", "error_description", "Message", "status"] {
        assert!(!b1[field].is_null(), "{field} missing in {b1}");
    }
    let (s, b) = app
        .post_json("/auth/authorize", json!({"username": ADMIN_EMAIL}), None)
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, _, b) = app
        .send(
            "POST",
            "/auth/authorize",
            &[("Content-Type", "application/json")],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn missing_and_foreign_credentials() {
    let app = spawn_app().await;
    let (s, h, b) = app.send("GET", "/me", &[], vec![]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("missing_authorization"))
    );
    assert_eq!(h["www-authenticate"], "ARMOR-PSK");
    let (s, _, b) = app
        .send(
            "GET",
            "/me",
            &[("Authorization", "Basic dXNlcjpwdw==")],
            vec![],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("not_armor_psk")));
    let (s, _, b) = app
        .send("GET", "/me", &[("Authorization", "FH-AUTH 0000")], vec![])
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_token")));
}

#[tokio::test]
async fn account_context_and_identity_routes() {
    let app = spawn_app().await;
    let other = app.admin(&["add-account", "--name", "Other", "--parent", "1"], &[]);
    let third = app.admin(&["add-account", "--name", "Third"], &[]);
    // The owner becomes a read-only member of "Other", not of "Third".
    app.admin(
        &[
            "set-role",
            "--user",
            "1",
            "--account",
            &other,
            "--role",
            "Read Only",
        ],
        &[],
    );
    let token = app.login().await;
    let auth = format!("FH-AUTH {token}");

    let (s, _, me) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    assert_eq!(me["accounts"].as_array().unwrap().len(), 2);
    assert_eq!(me["permissions"][&other], json!([]));

    let (s, _, p) = app
        .send(
            "GET",
            "/permissions",
            &[("Authorization", &auth), ("X-Account-Context", &other)],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["accountId"].to_string(), other);
    assert_eq!(p["permissions"], json!([]));
    for bad in [third.as_str(), "abc", "-1", "99999999999999999999999"] {
        let (s, _, b) = app
            .send(
                "GET",
                "/me",
                &[("Authorization", &auth), ("X-Account-Context", bad)],
                vec![],
            )
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (403, Some("invalid_account_context")),
            "{bad}"
        );
    }

    let (s, _, a) = app
        .send("GET", "/accounts", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, a.as_array().unwrap().len()), (200, 2));
    let (s, _, a) = app
        .send(
            "GET",
            &format!("/accounts/{other}"),
            &[("Authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!((s, a["parent"].as_i64()), (200, Some(1)));
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/accounts/{third}"),
            &[("Authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!(s, 404);

    let bob = app.add_user("bob@example.com", "User", 1);
    let (s, _, users) = app
        .send("GET", "/users", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, users.as_array().unwrap().len()), (200, 2));
    let (s, _, u) = app
        .send(
            "GET",
            &format!("/users/{bob}"),
            &[("Authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!((s, u["email"].as_str()), (200, Some("bob@example.com")));
    // In "Other", bob is not a member: not found, and the owner may not list users there.
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/users/{bob}"),
            &[("Authorization", &auth), ("X-Account-Context", &other)],
            vec![],
        )
        .await;
    assert_eq!(s, 404);
    let (s, _, b) = app
        .send(
            "GET",
            "/users",
            &[("Authorization", &auth), ("X-Account-Context", &other)],
            vec![],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("permission_denied")));
    // Bob sees himself but not the user list.
    let bob_token = app.login_as("bob@example.com", ADMIN_PASSWORD).await;
    let bob_auth = format!("FH-AUTH {bob_token}");
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/users/{bob}"),
            &[("Authorization", &bob_auth)],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = app
        .send("GET", "/users/1", &[("Authorization", &bob_auth)], vec![])
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = app
        .send(
            "GET",
            "/users/notanumber",
            &[("Authorization", &bob_auth)],
            vec![],
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn health_metrics_openapi_docs() {
    let app = spawn_app().await;
    let (s, _, b) = app.send("GET", "/health", &[], vec![]).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")));
    let (s, _, m) = app.send("GET", "/metrics", &[], vec![]).await;
    assert_eq!(s, 200);
    assert!(
        m.as_str().unwrap().contains("armor_psk_accepted_total 0"),
        "{m}"
    );
    let (s, _, doc) = app.send("GET", "/openapi.json", &[], vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["paths"]["/users/{id}/keys"]["post"]["x-armor-policy"],
        "password-only"
    );
    let (s, h, page) = app.send("GET", "/docs", &[], vec![]).await;
    assert_eq!(s, 200);
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(page.as_str().unwrap().contains("/users/{id}/keys"));
}

/// What public clients of the vendor's API send (docs/compat-notes.md).
#[tokio::test]
async fn login_as_the_public_clients_do() {
    let app = spawn_app().await;
    // A stale token and a junk ARMOR-PSK header on the login routes are
    // ignored (armorapi re-logs in with its old session headers).
    for stale in [
        "FH-AUTH 00000000000000000000000000000000",
        "ARMOR-PSK :x:y:z",
    ] {
        let (s, body) = app
            .post_json(
                "/auth/authorize",
                json!({"Username": ADMIN_EMAIL, "Password": ADMIN_PASSWORD}),
                Some(stale),
            )
            .await;
        assert_eq!(s, 200, "{stale}: {body}");
        assert_eq!(body["success"], true);
        assert!(body["redirect_uri"].is_null());
        let (s, tok) = app
            .post_json(
                "/auth/token",
                json!({"code": body["code"], "grant_type": "authorization_code"}),
                Some(stale),
            )
            .await;
        assert_eq!(s, 200, "{tok}");
    }
    // Form-encoded bodies, as a script posting `data=dict` sends them.
    let form = format!(
        "username={}&password={}",
        ADMIN_EMAIL.replace('@', "%40"),
        ADMIN_PASSWORD.replace(' ', "+")
    );
    let (s, _, body) = app
        .send(
            "POST",
            "/auth/authorize",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.into_bytes(),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let form = format!(
        "code={}&grant_type=authorization_code",
        body["code"].as_str().unwrap()
    );
    let (s, _, tok) = app
        .send(
            "POST",
            "/auth/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.into_bytes(),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    let token = tok["access_token"].as_str().unwrap();
    // An empty X-Account-Context is no context; a typo'd Content-Type on a
    // bodiless GET is not an error; the id_token works like the access token.
    let auth = format!("FH-AUTH {}", tok["id_token"].as_str().unwrap());
    let (s, _, me) = app
        .send(
            "GET",
            "/me?%7B%0A%22requestType%22",
            &[
                ("Authorization", &auth),
                ("X-Account-Context", ""),
                ("Content-Type", "application-json"),
            ],
            vec![],
        )
        .await;
    assert_eq!((s, me["accountContext"].as_i64()), (200, Some(1)), "{me}");
    assert!(!token.is_empty());
}

/// A GET with a small body (`Content-Length: 2`, `{}`: what the vendor's
/// Python client sends) whose body arrives after the head: the answer keeps
/// the connection open, and the next request on it is served. Answered
/// before its body was read, the connection used to be closed under the
/// client, which then lost its next request.
#[tokio::test]
async fn a_get_whose_body_comes_late_keeps_the_connection() {
    use std::io::{Read as _, Write as _};
    let app = spawn_app().await;
    let token = app.login().await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: FH-AUTH {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.write_all(b"{}").unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // Both answers, read until the second one's body has come.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"pong\"") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    assert!(
        !answers.to_ascii_lowercase().contains("connection: close"),
        "{answers}"
    );
}
