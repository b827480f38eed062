//! Keys that do less than their user: expiry, rolling, permissions,
//! routes, networks and a rate limit (`docs/keys.md`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

fn fh(token: &str) -> String {
    format!("FH-AUTH {token}")
}

/// Creates a key for `user` with `fields` besides its name.
async fn create_with(app: &TestApp, token: &str, user: i64, fields: Value) -> (u16, Value) {
    let mut body = json!({"name": "restricted"});
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        b.extend(f.clone());
    }
    let (s, v) = app
        .post_json(&format!("/users/{user}/keys"), body, Some(&fh(token)))
        .await;
    if let Some(secret) = v["apiKey"].as_str() {
        app.remember_secret(secret);
    }
    (s, v)
}

async fn restricted(app: &TestApp, token: &str, fields: Value) -> Key {
    let (s, v) = create_with(app, token, 1, fields).await;
    assert_eq!(s, 200, "{v}");
    Key::from_answer(&v)
}

async fn roll(app: &TestApp, token: &str, key: &Key, grace: Value) -> (u16, Value) {
    let (s, v) = app
        .post_json(
            &format!("/users/1/keys/{}/roll", key.id),
            grace,
            Some(&fh(token)),
        )
        .await;
    if let Some(secret) = v["apiKey"].as_str() {
        app.remember_secret(secret);
    }
    (s, v)
}

async fn list(app: &TestApp, token: &str) -> Vec<Value> {
    let (s, _, v) = app
        .send(
            "GET",
            "/users/1/keys",
            &[("Authorization", &fh(token))],
            vec![],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn item<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter().find(|k| k["id"] == id).expect("listed")
}

#[tokio::test]
async fn keys_without_the_new_fields_work_as_before_and_show_them_empty() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "plain").await;
    assert_eq!(app.psk(&key, "GET", "/users", b"").await.0, 200);
    let keys = list(&app, &token).await;
    let k = item(&keys, &key.id);
    for field in [
        "expiresAt",
        "permissions",
        "allowedRoutes",
        "allowedIps",
        "rateLimit",
        "rolledFrom",
    ] {
        assert!(k[field].is_null(), "{field}: {k}");
    }
    assert_eq!(k["keyStatus"], "Active");
}

#[tokio::test]
async fn new_key_fields_are_checked_and_the_bad_one_named() {
    let app = spawn_app().await;
    let token = app.login().await;
    let user = app.add_user("plain@example.com", "User", 1);
    let user_token = app.login_as("plain@example.com", ADMIN_PASSWORD).await;
    for (fields, names) in [
        (json!({"expiresIn": 59}), "expiresIn"),
        (json!({"expiresIn": 11 * 365 * 86_400}), "expiresIn"),
        (json!({"expiresAt": "2020-01-01T00:00:00Z"}), "expiresAt"),
        (json!({"expiresAt": "tomorrow"}), "expiresAt"),
        (
            json!({"expiresIn": 600, "expiresAt": "2099-01-01T00:00:00Z"}),
            "expiresAt",
        ),
        (
            json!({"permissions": ["No Such Permission"]}),
            "No Such Permission",
        ),
        (json!({"allowedRoutes": ["GET /a/../b"]}), "allowedRoutes"),
        (json!({"allowedRoutes": ["fetch /me"]}), "allowedRoutes"),
        (json!({"allowedRoutes": []}), "allowedRoutes"),
        (json!({"allowedIps": ["10.0.0.0/33"]}), "10.0.0.0/33"),
        (json!({"allowedIps": ["2001:db8::/129"]}), "2001:db8::/129"),
        (
            json!({"rateLimit": {"limit": 0, "windowSeconds": 60}}),
            "rateLimit.limit",
        ),
        (
            json!({"rateLimit": {"limit": 5, "windowSeconds": 0}}),
            "rateLimit.windowSeconds",
        ),
    ] {
        let (s, v) = create_with(&app, &token, 1, fields.clone()).await;
        assert_eq!(s, 400, "{fields}: {v}");
        assert_eq!(v["error"], "invalid_request", "{fields}");
        let text = v["error_description"].as_str().unwrap();
        assert!(text.contains(names), "{fields}: {text}");
    }
    // Escalation: a user cannot give a key a permission they lack.
    let (s, v) = create_with(
        &app,
        &user_token,
        user,
        json!({"permissions": ["API Keys Self Manage", "Users Manage"]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("'Users Manage'"));
    // The longest lifetime and the shortest are accepted.
    for life in [60, 10 * 365 * 86_400] {
        let (s, v) = create_with(&app, &token, 1, json!({"expiresIn": life})).await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test]
async fn a_key_acts_with_its_permissions_and_its_users_only() {
    let app = spawn_app().await;
    let token = app.login().await;
    let all = app.create_key(&token, 1, "all").await;
    let none = restricted(&app, &token, json!({"permissions": []})).await;
    let read = restricted(&app, &token, json!({"permissions": ["Users Read"]})).await;
    // The owner may list users; a key without Users Read may not.
    assert_eq!(app.psk(&all, "GET", "/users", b"").await.0, 200);
    let (s, v) = app.psk(&none, "GET", "/users", b"").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    assert_eq!(app.psk(&read, "GET", "/users", b"").await.0, 200);
    let (s, v) = app.psk(&read, "GET", "/permissions", b"").await;
    assert_eq!(s, 200);
    assert_eq!(v["permissions"], json!(["Users Read"]));
    // GET /me shows what the key may do, not all of its user's.
    let (s, v) = app.psk(&read, "GET", "/me", b"").await;
    assert_eq!(s, 200);
    assert_eq!(v["permissions"], json!({"1": ["Users Read"]}), "{v}");
    let (_, v) = app.psk(&none, "GET", "/me", b"").await;
    assert_eq!(v["permissions"], json!({"1": []}), "{v}");
    let (_, v) = app.psk(&all, "GET", "/me", b"").await;
    assert_eq!(v["permissions"]["1"].as_array().unwrap().len(), 6, "{v}");
    let keys = list(&app, &token).await;
    assert_eq!(item(&keys, &read.id)["permissions"], json!(["Users Read"]));
}

#[tokio::test]
async fn allowed_routes_admit_the_listed_methods_and_paths_only() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = restricted(
        &app,
        &token,
        json!({"allowedRoutes": ["GET /me", "GET /accounts/*", "* /auth/whoami"]}),
    )
    .await;
    for (method, path) in [
        ("GET", "/me"),
        ("GET", "/ME/"),
        ("GET", "/accounts/1"),
        ("GET", "/auth/whoami"),
        ("POST", "/auth/whoami"),
    ] {
        let (s, v) = app.psk(&key, method, path, b"").await;
        assert_eq!(s, 200, "{method} {path}: {v}");
    }
    for (method, path) in [("GET", "/accounts"), ("GET", "/users"), ("POST", "/me")] {
        let (s, v) = app.psk(&key, method, path, b"").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("route_not_allowed")),
            "{method} {path}: {v}"
        );
    }
    let keys = list(&app, &token).await;
    assert_eq!(
        item(&keys, &key.id)["allowedRoutes"],
        json!(["GET /me", "GET /accounts/*", "* /auth/whoami"])
    );
}

#[tokio::test]
async fn allowed_ips_match_the_peer_address_over_ipv4() {
    let app = spawn_app().await;
    let token = app.login().await;
    let inside = restricted(&app, &token, json!({"allowedIps": ["127.0.0.0/8", "::1"]})).await;
    let outside = restricted(
        &app,
        &token,
        json!({"allowedIps": ["10.0.0.0/8", "::1/128"]}),
    )
    .await;
    // Peers are compared as IPv4 when IPv4-mapped: a mapped range could
    // never match, so it is refused at creation rather than kept silently.
    let (s, v) = create_with(&app, &token, 1, json!({"allowedIps": ["::ffff:0:0/96"]})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("IPv4-mapped"),
        "{v}"
    );
    assert_eq!(app.psk(&inside, "GET", "/me", b"").await.0, 200);
    let (s, v) = app.psk(&outside, "GET", "/me", b"").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("ip_not_allowed")),
        "{v}"
    );
    // Without --trusted-proxy, a forwarded address is the client's own
    // claim and is ignored.
    let auth = sign(&outside, "GET", "/me", b"", &fresh_nonce(), now());
    let forwarded = [
        ("Authorization", auth.as_str()),
        ("X-Forwarded-For", "10.1.2.3"),
    ];
    let (s, _, v) = app.send("GET", "/me", &forwarded, vec![]).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("ip_not_allowed")),
        "{v}"
    );
    let keys = list(&app, &token).await;
    assert_eq!(
        item(&keys, &inside.id)["allowedIps"],
        json!(["127.0.0.0/8", "::1/128"])
    );
}

#[tokio::test]
async fn allowed_ips_match_the_peer_address_over_ipv6() {
    let app = spawn_app_with(&["--listen", "[::1]:0"]).await;
    assert!(app.url.contains("[::1]"), "{}", app.url);
    let token = app.login().await;
    let inside = restricted(&app, &token, json!({"allowedIps": ["::/127"]})).await;
    let v4_only = restricted(&app, &token, json!({"allowedIps": ["127.0.0.0/8"]})).await;
    let other = restricted(&app, &token, json!({"allowedIps": ["2001:db8::/32"]})).await;
    assert_eq!(app.psk(&inside, "GET", "/me", b"").await.0, 200);
    for key in [&v4_only, &other] {
        let (s, v) = app.psk(key, "GET", "/me", b"").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("ip_not_allowed")),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_the_ratelimit_headers() {
    let app = spawn_app().await;
    let token = app.login().await;
    // A day's window: the test does not cross its end but once a day.
    let key = restricted(
        &app,
        &token,
        json!({"rateLimit": {"limit": 3, "windowSeconds": 86_400}}),
    )
    .await;
    let other = restricted(
        &app,
        &token,
        json!({"rateLimit": {"limit": 3, "windowSeconds": 86_400}}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    }
    let auth = sign(&key, "GET", "/me", b"", &fresh_nonce(), now());
    let (s, h, v) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&reset), "{reset}");
    assert_eq!(h["retry-after"], h["ratelimit-reset"]);
    // Each key has its own count.
    assert_eq!(app.psk(&other, "GET", "/me", b"").await.0, 200);
    let keys = list(&app, &token).await;
    assert_eq!(
        item(&keys, &key.id)["rateLimit"],
        json!({"limit": 3, "windowSeconds": 86_400})
    );
}

/// Sends signed `GET /me` until it answers `want`, for at most `limit`.
async fn until_refused(app: &TestApp, key: &Key, want: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let (s, v) = app.psk(key, "GET", "/me", b"").await;
        if v["error"] == want {
            assert_eq!(s, 401);
            return;
        }
        assert_eq!(s, 200, "{v}");
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rolled_key_works_through_its_grace_period_then_expires_mid_run() {
    let app = spawn_app().await;
    let token = app.login().await;
    let old = restricted(
        &app,
        &token,
        json!({"allowedRoutes": ["GET /me"], "expiresIn": 3600}),
    )
    .await;
    assert_eq!(app.psk(&old, "GET", "/me", b"").await.0, 200);
    let (s, v) = roll(&app, &token, &old, json!({"graceSeconds": 2})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rolledFrom"], old.id.as_str());
    assert_eq!(v["name"], "restricted");
    assert_eq!(v["allowedRoutes"], json!(["GET /me"]));
    assert_eq!(v["keyStatus"], "Active");
    assert!(v["expiresAt"].is_string());
    let new = Key::from_answer(&v);
    assert_ne!(new.id, old.id);
    assert_eq!(app.psk(&new, "GET", "/me", b"").await.0, 200);
    let keys = list(&app, &token).await;
    assert_eq!(item(&keys, &old.id)["keyStatus"], "Rolled");
    assert_eq!(item(&keys, &new.id)["rolledFrom"], old.id.as_str());
    // The old key ends at most a couple of seconds on.
    until_refused(&app, &old, "key_expired", Duration::from_secs(15)).await;
    assert_eq!(app.psk(&new, "GET", "/me", b"").await.0, 200);
    // Expiry is said only to the holder of the secret.
    let forged = Key {
        id: old.id.clone(),
        secret: "apsk_not-the-secret-at-all-000000000000000000".into(),
    };
    let (s, v) = app.psk(&forged, "GET", "/me", b"").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_signature")));
    // A rolled key is not rolled again.
    let (s, v) = roll(&app, &token, &old, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
}

#[tokio::test]
async fn rolling_keeps_both_keys_working_during_the_grace_period() {
    let app = spawn_app().await;
    let token = app.login().await;
    let old = app.create_key(&token, 1, "ci").await;
    let (s, v) = roll(&app, &token, &old, json!({})).await;
    assert_eq!(s, 200, "{v}");
    let new = Key::from_answer(&v);
    for _ in 0..2 {
        assert_eq!(app.psk(&old, "GET", "/me", b"").await.0, 200);
        assert_eq!(app.psk(&new, "GET", "/me", b"").await.0, 200);
    }
    let keys = list(&app, &token).await;
    let o = item(&keys, &old.id);
    assert_eq!(o["keyStatus"], "Rolled");
    // A day's grace by default.
    assert!(o["expiresAt"].is_string(), "{o}");
    for (grace, code) in [
        (json!({"graceSeconds": -1}), 400),
        (json!({"graceSeconds": 604_801}), 400),
    ] {
        let (s, v) = roll(&app, &token, &new, grace).await;
        assert_eq!(s, code, "{v}");
        assert_eq!(v["error"], "invalid_request");
    }
    // Someone else's key is not rolled by a user without the right.
    let _ = app.add_user("other@example.com", "User", 1);
    let other = app.login_as("other@example.com", ADMIN_PASSWORD).await;
    let (s, v) = roll(&app, &other, &new, json!({})).await;
    assert_eq!(s, 403, "{v}");
}

#[tokio::test]
async fn a_key_loses_a_permission_when_its_user_does() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("second@example.com", "Account Owner", 1);
    let token = app.login_as("second@example.com", ADMIN_PASSWORD).await;
    let (s, v) = create_with(&app, &token, uid, json!({"permissions": ["Users Read"]})).await;
    assert_eq!(s, 200, "{v}");
    let key = Key::from_answer(&v);
    assert_eq!(app.psk(&key, "GET", "/users", b"").await.0, 200);
    let (s, v) = super::users::j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"role": "User"}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.psk(&key, "GET", "/users", b"").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    let (_, v) = app.psk(&key, "GET", "/permissions", b"").await;
    assert_eq!(v["permissions"], json!([]));
}

/// Behind a `--trusted-proxy` (here the tests' own loopback), the client is
/// the last address `X-Forwarded-For` names that is not a trusted proxy: a
/// key's allowed networks are checked against it, and refused attempts
/// are counted per forwarded client, not for everyone behind the proxy.
/// Without the flag the header is ignored (the test above).
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_checked_and_limited() {
    let app = spawn_app_with(&[
        "--trusted-proxy",
        "127.0.0.0/8,::1",
        "--auth-failure-limit",
        "0.001:2",
    ])
    .await;
    let token = app.login().await;
    let key = restricted(&app, &token, json!({"allowedIps": ["198.51.100.0/24"]})).await;
    let from = |key: &Key, forwarded: Option<&'static str>| {
        let auth = sign(key, "GET", "/me", b"", &fresh_nonce(), now());
        let app = &app;
        async move {
            let mut headers = vec![("Authorization", auth.as_str())];
            headers.extend(forwarded.map(|f| ("X-Forwarded-For", f)));
            let (s, _, v) = app.send("GET", "/me", &headers, vec![]).await;
            (s, v["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    // The client's own claim sits left of the address the proxy saw.
    assert_eq!(from(&key, Some("203.0.113.9, 198.51.100.7")).await.0, 200);
    let refused = (403, "ip_not_allowed".to_owned());
    assert_eq!(from(&key, Some("198.51.100.7, 203.0.113.9")).await, refused);
    assert_eq!(from(&key, None).await, refused, "the proxy itself");

    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    for _ in 0..2 {
        assert_eq!(from(&wrong, Some("198.51.100.7")).await.0, 401);
    }
    let limited = (429, "rate_limited".to_owned());
    assert_eq!(from(&key, Some("198.51.100.7")).await, limited);
    // Another client behind the same proxy keeps its own budget.
    assert_eq!(from(&key, Some("198.51.100.8")).await.0, 200);
}
