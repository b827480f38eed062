//! User administration and account security, black-box: each
//! route's happy path and refusals (permission, other account, API key),
//! the outbox read through `armor admin outbox`, and the audit rows left.

use armor_server::core::totp;
use serde_json::{json, Value};

use super::*;

/// One JSON request with an optional FH-AUTH token; (status, headers, body).
pub(super) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.http.request(method, format!("{}{path}", app.url));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.header("Authorization", format!("FH-AUTH {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// [`call`] with a JSON body; (status, body).
pub(super) async fn j(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> (u16, Value) {
    let (s, _, b) = call(app, method, path, Some(body), token).await;
    (s, b)
}

/// Audit rows of account 1 (through the API, as the owner).
async fn audit(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (s, _, b) = call(app, "GET", &format!("/auditlog?{query}"), None, Some(token)).await;
    assert_eq!(s, 200, "{b}");
    b.as_array().unwrap().clone()
}

fn has_event(rows: &[Value], event: &str, target: i64) -> bool {
    rows.iter()
        .any(|r| r["event"] == event && r["target"].as_str() == Some(&*target.to_string()))
}

async fn me(app: &TestApp, token: &str) -> u16 {
    call(app, "GET", "/me", None, Some(token)).await.0
}

async fn invite(app: &TestApp, token: &str, email: &str, role: &str) -> i64 {
    let (s, b) = j(
        app,
        "POST",
        "/users/",
        json!({"email": email, "firstName": "Ann", "lastName": "Lee", "roles": [role]}),
        Some(token),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "invited");
    assert_eq!(b["role"], role);
    b["id"].as_i64().unwrap()
}

#[tokio::test]
async fn invite_activate_and_sign_in() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = invite(&app, &owner, "ann@example.com", "User").await;
    let msgs = app.outbox();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["channel"], "email");
    assert_eq!(msgs[0]["subject"], "Your armor invitation");
    let code = app.code_sent_to("ann@example.com");
    // An invited user has no password to sign in with.
    let (s, b) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "ann@example.com", "password": "anything at all"}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    // Too short a password: refused, the code still works after.
    let (s, b) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": code, "password": "short"}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"activationCode": code, "newPassword": "ann's own passphrase"}),
        None,
    )
    .await;
    assert_eq!((s, &b), (200, &json!(true)));
    app.login_as("ann@example.com", "ann's own passphrase")
        .await;
    // Single use.
    let (s, b) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": code, "password": "a different passphrase"}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    // An active user is not invited again.
    let (s, b) = j(
        &app,
        "POST",
        &format!("/users/{uid}/invite"),
        json!({}),
        Some(&owner),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (409, Some("conflict")));
    let rows = audit(&app, &owner, "").await;
    assert!(has_event(&rows, "user_created", uid));
    assert!(has_event(&rows, "password_changed", uid));
    // Codes never reach the logs.
    assert!(!app.logs_text().contains(&code));
}

#[tokio::test]
async fn activation_code_and_reinvite_replace_the_pending_code() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = invite(&app, &owner, "bob@example.com", "Read Only").await;
    let mailed = app.code_sent_to("bob@example.com");
    let (s, h, b) = call(
        &app,
        "GET",
        &format!("/users/{uid}/ActivationCode"),
        None,
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["cache-control"], "no-store");
    let read_out = b["activationCode"].as_str().unwrap().to_owned();
    assert_ne!(read_out, mailed);
    assert!(b["expiresAt"].is_string());
    let (s, _) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": mailed, "password": "bob's own passphrase"}),
        None,
    )
    .await;
    assert_eq!(s, 400);
    // Re-inviting mails a new code.
    let (s, _) = j(
        &app,
        "POST",
        &format!("/users/{uid}/invite"),
        json!({}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200);
    let fresh = app.code_sent_to("bob@example.com");
    assert_ne!(fresh, mailed);
    // Typed in lower case with spaces for dashes: accepted.
    let typed = fresh.to_ascii_lowercase().replace('-', " ");
    let (s, b) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": typed, "password": "bob's own passphrase"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let rows = audit(&app, &owner, &format!("user={uid}")).await;
    assert!(has_event(&rows, "activation_code_issued", uid));
    assert!(has_event(&rows, "user_invited", uid));
    // The read-out code died with the re-invitation.
    assert!(!app.logs_text().contains(&read_out));
}

#[tokio::test]
async fn user_administration_needs_users_manage() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let plain_id = app.add_user("plain@example.com", "User", 1);
    let plain = app.login_as("plain@example.com", ADMIN_PASSWORD).await;
    let target = invite(&app, &owner, "target@example.com", "User").await;
    let cases: Vec<(&str, String, Value)> = vec![
        ("POST", "/users/".into(), json!({"email": "x@example.com"})),
        (
            "PUT",
            format!("/users/{target}"),
            json!({"role": "User", "email": "t2@example.com"}),
        ),
        (
            "POST",
            "/users/status".into(),
            json!({"userId": target, "status": "disabled"}),
        ),
        ("POST", format!("/users/{target}/invite"), json!({})),
        (
            "GET",
            format!("/users/{target}/ActivationCode"),
            Value::Null,
        ),
        (
            "DELETE",
            "/users/softDelete".into(),
            json!({"userId": target}),
        ),
        (
            "GET",
            "/users/LockedOut/1/owner%40example.com".into(),
            Value::Null,
        ),
        (
            "POST",
            "/users/unlock/1/owner%40example.com".into(),
            json!({}),
        ),
        ("GET", "/usersecurity/challengephrase/1".into(), Value::Null),
        (
            "PUT",
            "/usersecurity/challengephrase".into(),
            json!({"userId": 1, "challengePhrase": "x"}),
        ),
        (
            "POST",
            format!("/usersecurity/securityinformation/1/{target}"),
            json!({}),
        ),
        ("GET", "/auditlog".into(), Value::Null),
    ];
    for (method, path, body) in &cases {
        let body = (!body.is_null()).then(|| body.clone());
        let (s, _, b) = call(&app, method, path, body, Some(&plain)).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (403, Some("permission_denied")),
            "{method} {path}: {b}"
        );
    }
    // One's own names: allowed without Users Manage; one's own role: no.
    let (s, b) = j(
        &app,
        "PUT",
        &format!("/users/{plain_id}"),
        json!({"firstName": "Pat", "lastName": "Plain"}),
        Some(&plain),
    )
    .await;
    assert_eq!((s, b["firstName"].as_str()), (200, Some("Pat")), "{b}");
    let (s, _) = j(
        &app,
        "PUT",
        "/users/1",
        json!({"role": "User"}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn an_administrator_of_another_account_cannot_touch_these_users() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let victim = invite(&app, &owner, "victim@example.com", "User").await;
    let other: i64 = app
        .admin(&["add-account", "--name", "Other"], &[])
        .parse()
        .unwrap();
    app.add_user("boss@example.com", "Account Owner", other);
    let boss = app.login_as("boss@example.com", ADMIN_PASSWORD).await;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        (
            "PUT",
            format!("/users/{victim}"),
            Some(json!({"firstName": "X"})),
        ),
        (
            "POST",
            "/users/status".into(),
            Some(json!({"userId": victim, "enabled": false})),
        ),
        ("POST", format!("/users/{victim}/invite"), Some(json!({}))),
        ("GET", format!("/users/{victim}/ActivationCode"), None),
        (
            "DELETE",
            "/users/softDelete".into(),
            Some(json!({"userId": victim})),
        ),
        (
            "DELETE",
            "/users/softDelete".into(),
            Some(json!({"email": "owner@example.com"})),
        ),
        ("GET", "/users/LockedOut/1/owner%40example.com".into(), None),
        (
            "POST",
            "/users/unlock/1/owner%40example.com".into(),
            Some(json!({})),
        ),
        (
            "GET",
            format!("/users/LockedOut/{other}/owner%40example.com"),
            None,
        ),
        (
            "GET",
            format!("/usersecurity/challengephrase/{victim}"),
            None,
        ),
        (
            "POST",
            format!("/usersecurity/securityinformation/1/{victim}"),
            Some(json!({"clearSecondFactors": true})),
        ),
        (
            "POST",
            format!("/usersecurity/securityinformation/{other}/{victim}"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in cases {
        let (s, _, b) = call(&app, method, &path, body, Some(&boss)).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("not_found")),
            "{method} {path}: {b}"
        );
    }
    // Nor through the account context.
    let (s, _, b) = app
        .send(
            "GET",
            "/users/LockedOut/1/owner%40example.com",
            &[
                ("Authorization", &format!("FH-AUTH {boss}")),
                ("X-Account-Context", "1"),
            ],
            vec![],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("invalid_account_context"))
    );
    // And a user created by the other owner lands in the other account.
    let (s, b) = j(
        &app,
        "POST",
        "/users/",
        json!({"email": "theirs@example.com"}),
        Some(&boss),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let theirs = b["id"].as_i64().unwrap();
    let (s, _, _) = call(&app, "GET", &format!("/users/{theirs}"), None, Some(&owner)).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn api_keys_are_refused_even_with_the_permissions() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let key = app.create_key(&owner, 1, "admin-key").await;
    for (method, path, body) in [
        ("POST", "/users/", r#"{"email":"k@example.com"}"#),
        ("POST", "/users/status", r#"{"userId":1,"enabled":true}"#),
        (
            "POST",
            "/users/resetpassword",
            r#"{"email":"owner@example.com"}"#,
        ),
        (
            "POST",
            "/users/setpassword",
            r#"{"code":"x","password":"yyyyyyyyyyyyyy"}"#,
        ),
        ("POST", "/usersecurity/validatephoneapppin", "{}"),
    ] {
        let (s, b) = app.psk(&key, method, path, body.as_bytes()).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (403, Some("api_key_not_allowed")),
            "{path}"
        );
    }
    assert!(app.outbox().is_empty());
}

#[tokio::test]
async fn disabling_stops_tokens_and_keys_at_once_and_enabling_restores_them() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("dee@example.com", "User", 1);
    let token = app.login_as("dee@example.com", ADMIN_PASSWORD).await;
    let key = app.create_key(&token, uid, "dee").await;
    assert_eq!(me(&app, &token).await, 200);
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (s, b) = j(
        &app,
        "POST",
        "/users/status",
        json!({"userId": uid, "status": "disabled"}),
        Some(&owner),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("disabled")), "{b}");
    assert_eq!(me(&app, &token).await, 401);
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 401);
    let (s, b) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "dee@example.com", "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    let (s, _) = j(
        &app,
        "POST",
        "/users/status",
        json!({"userId": uid, "enabled": true}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(me(&app, &token).await, 200);
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    // Not oneself; not a bad status.
    let (s, _) = j(
        &app,
        "POST",
        "/users/status",
        json!({"userId": 1, "enabled": false}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = j(
        &app,
        "POST",
        "/users/status",
        json!({"userId": uid, "status": "maybe"}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 400);
    let rows = audit(&app, &owner, "event=status_changed").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["detail"], "from=disabled to=active");
    assert_eq!(rows[1]["detail"], "from=active to=disabled");
    assert_eq!(rows[0]["credential"], "password");
}

#[tokio::test]
async fn soft_delete_revokes_everything_and_keeps_the_record() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("gone@example.com", "User", 1);
    let token = app.login_as("gone@example.com", ADMIN_PASSWORD).await;
    let key = app.create_key(&token, uid, "gone").await;
    let (s, b) = j(
        &app,
        "DELETE",
        "/users/softDelete",
        json!({"userId": uid}),
        Some(&owner),
    )
    .await;
    assert_eq!((s, &b), (200, &json!(true)));
    assert_eq!(call(&app, "GET", "/me", None, Some(&token)).await.0, 401);
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 401);
    let (s, b) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "gone@example.com", "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    // Gone from the API, not from the audit trail.
    assert_eq!(
        call(&app, "GET", &format!("/users/{uid}"), None, Some(&owner))
            .await
            .0,
        404
    );
    let (_, _, users) = call(&app, "GET", "/users", None, Some(&owner)).await;
    assert!(users.as_array().unwrap().iter().all(|u| u["id"] != uid));
    let (s, _) = j(
        &app,
        "POST",
        "/users/status",
        json!({"userId": uid, "enabled": true}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 404);
    let rows = audit(&app, &owner, "").await;
    assert!(has_event(&rows, "user_deleted", uid));
    assert!(rows.iter().any(|r| r["event"] == "key_deleted"
        && r["target"] == key.id.as_str()
        && r["detail"] == format!("owner={uid} reason=user_deleted")));
    // Survives a restart: still deleted, key still refused.
    let mut app = app;
    app.restart();
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 401);
    // Not oneself.
    let owner = app.login().await;
    let (s, _) = j(
        &app,
        "DELETE",
        "/users/softDelete",
        json!({"userId": 1}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn lockout_answers_like_a_wrong_password_and_unlock_ends_it() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("lock@example.com", "User", 1);
    let wrong = json!({"username": "lock@example.com", "password": "nope"});
    let mut first = Value::Null;
    for _ in 0..5 {
        let (s, b) = j(&app, "POST", "/auth/authorize", wrong.clone(), None).await;
        assert_eq!(s, 401);
        first = b;
    }
    let (s, b) = j(
        &app,
        "GET",
        "/users/LockedOut/1/lock%40example.com",
        Value::Null,
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lockedOut"], true);
    assert_eq!(b["userId"], uid);
    assert!(b["lockedUntil"].as_str().unwrap().ends_with('Z'));
    // The right password while locked: the same answer as a wrong one.
    let (s, b) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "lock@example.com", "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    assert_eq!((s, &b), (401, &first));
    let (s, b) = j(
        &app,
        "POST",
        "/users/unlock/1/LOCK%40example.com",
        json!({}),
        Some(&owner),
    )
    .await;
    assert_eq!((s, b["wasLockedOut"].as_bool()), (200, Some(true)), "{b}");
    app.login_as("lock@example.com", ADMIN_PASSWORD).await;
    let (_, b) = j(
        &app,
        "GET",
        "/users/LockedOut/1/lock%40example.com",
        Value::Null,
        Some(&owner),
    )
    .await;
    assert_eq!(
        (b["lockedOut"].as_bool(), b["failedAttempts"].as_i64()),
        (Some(false), Some(0))
    );
    let (s, _) = j(
        &app,
        "GET",
        "/users/LockedOut/1/nobody%40example.com",
        Value::Null,
        Some(&owner),
    )
    .await;
    assert_eq!(s, 404);
    let rows = audit(&app, &owner, &format!("user={uid}")).await;
    assert!(has_event(&rows, "lockout", uid));
    assert!(has_event(&rows, "unlock", uid));
    let failed = audit(&app, &owner, "event=login_failed").await;
    assert_eq!(failed.len(), 6);
    assert!(failed.iter().all(|r| r["address"] == "127.0.0.1"));
    // The operator's view agrees.
    let lines = app.admin(&["audit", "--event", "lockout"], &[]);
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

#[tokio::test]
async fn reset_password_says_the_same_for_any_address() {
    let app = spawn_app().await;
    let (s1, known) = j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": ADMIN_EMAIL}),
        None,
    )
    .await;
    let (s2, unknown) = j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": "nobody@example.com"}),
        None,
    )
    .await;
    assert_eq!((s1, &known), (s2, &unknown));
    assert_eq!(s1, 200);
    let msgs = app.outbox();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["recipient"], ADMIN_EMAIL);
    let code = app.code_sent_to(ADMIN_EMAIL);
    let old = app.login().await;
    let (s, _) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"resetCode": code, "password": "a whole new passphrase"}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    // The reset revoked the tokens; the old password is gone.
    assert_eq!(call(&app, "GET", "/me", None, Some(&old)).await.0, 401);
    let (s, _) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let token = app.login_as(ADMIN_EMAIL, "a whole new passphrase").await;
    let (s, _) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": code, "password": "yet another passphrase"}),
        None,
    )
    .await;
    assert_eq!(s, 400);
    // `--mark-sent` empties the outbox.
    app.admin(&["outbox", "--mark-sent"], &[]);
    assert!(app.outbox().is_empty());
    let rows = audit(&app, &token, "event=password_changed").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["detail"], "via=reset");
    assert_eq!(
        audit(&app, &token, "event=password_reset_requested")
            .await
            .len(),
        1
    );
    assert!(!app.logs_text().contains(&code));
}

#[tokio::test]
async fn edits_change_names_email_and_role_with_audit() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("ed@example.com", "User", 1);
    let (s, b) = j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"firstName": "Ed", "email": "edward@example.com", "roles": ["Read Only"]}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["firstName"].as_str(),
            b["email"].as_str(),
            b["role"].as_str()
        ),
        (Some("Ed"), Some("edward@example.com"), Some("Read Only"))
    );
    app.login_as("edward@example.com", ADMIN_PASSWORD).await;
    let (s, _) = j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"email": ADMIN_EMAIL}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"role": "Emperor"}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"roles": ["User", "Read Only"]}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 400);
    let rows = audit(&app, &owner, "event=role_changed").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["detail"], "from=User to=Read Only");
    assert_eq!(rows[0]["actorId"], 1);
    assert_eq!(rows[0]["target"], uid.to_string());
    let rows = audit(&app, &owner, "event=user_updated").await;
    assert_eq!(rows[0]["detail"], "changed=email,firstName");
}

pub(super) fn base32_decode(s: &str) -> Vec<u8> {
    let (mut bits, mut n, mut out) = (0u64, 0, Vec::new());
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("bad base32"),
        };
        bits = bits << 5 | u64::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[tokio::test]
async fn authenticator_app_enrolment_makes_the_login_ask_for_a_code() {
    let app = spawn_app().await;
    let uid = app.add_user("app@example.com", "User", 1);
    let token = app.login_as("app@example.com", ADMIN_PASSWORD).await;
    let (s, h, b) = call(
        &app,
        "POST",
        "/usersecurity/validatephoneapppin",
        Some(json!({})),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["cache-control"], "no-store");
    let secret = base32_decode(b["secret"].as_str().unwrap());
    let uri = b["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/armor:app%40example.com?secret="),
        "{uri}"
    );
    let t = now();
    let (s, b) = j(
        &app,
        "POST",
        "/usersecurity/validatephoneapppin",
        json!({"pin": totp::code_at(&secret, t, 6)}),
        Some(&token),
    )
    .await;
    assert_eq!((s, b["newlyEnabled"].as_bool()), (200, Some(true)), "{b}");
    // The password alone: mfa_required; a wrong password: nothing more.
    let creds = json!({"username": "app@example.com", "password": ADMIN_PASSWORD});
    let (s, b) = j(&app, "POST", "/auth/authorize", creds.clone(), None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("mfa_required")));
    let (s, b) = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "app@example.com", "password": "wrong", "mfaCode": "123456"}),
        None,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    // The next step's code (within the drift allowed) signs in.
    let mut with_code = creds.clone();
    with_code["mfaCode"] = json!(totp::code_at(&secret, t + 30, 6));
    let (s, b) = j(&app, "POST", "/auth/authorize", with_code.clone(), None).await;
    assert_eq!(s, 200, "{b}");
    // Used once only.
    let (s, b) = j(&app, "POST", "/auth/authorize", with_code, None).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_mfa_code")));
    // The administrator sees it and can reset it.
    let owner = app.login().await;
    let (s, b) = j(
        &app,
        "POST",
        &format!("/usersecurity/securityinformation/1/{uid}"),
        json!({}),
        Some(&owner),
    )
    .await;
    assert_eq!(
        (s, b["authenticatorApp"].as_bool()),
        (200, Some(true)),
        "{b}"
    );
    let (s, b) = j(
        &app,
        "POST",
        &format!("/usersecurity/securityinformation/1/{uid}"),
        json!({"clearSecondFactors": true}),
        Some(&owner),
    )
    .await;
    assert_eq!(
        (s, b["authenticatorApp"].as_bool()),
        (200, Some(false)),
        "{b}"
    );
    app.login_as("app@example.com", ADMIN_PASSWORD).await;
    let rows = audit(&app, &owner, &format!("user={uid}")).await;
    assert!(rows
        .iter()
        .any(|r| r["event"] == "mfa_enrolled" && r["detail"] == "factor=totp"));
    assert!(has_event(&rows, "mfa_reset", uid));
}

#[tokio::test]
async fn phone_verification_and_sign_in_codes_go_through_the_outbox() {
    let app = spawn_app().await;
    app.add_user("tel@example.com", "User", 1);
    let token = app.login_as("tel@example.com", ADMIN_PASSWORD).await;
    let (s, b) = j(
        &app,
        "POST",
        "/usersecurity/validatemfaphone",
        json!({"phoneNumber": "+44 20 7946 0018"}),
        Some(&token),
    )
    .await;
    assert_eq!((s, b["codeSent"].as_bool()), (200, Some(true)), "{b}");
    let code = app.code_sent_to("+442079460018");
    assert_eq!(code.len(), 6);
    let (s, _) = j(
        &app,
        "POST",
        "/usersecurity/validatemfaphone",
        json!({"phoneNumber": "12", "code": code}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 400);
    let (s, b) = j(
        &app,
        "POST",
        "/usersecurity/validatemfaphone",
        json!({"phoneNumber": "+442079460018", "code": code}),
        Some(&token),
    )
    .await;
    assert_eq!((s, b["verified"].as_bool()), (200, Some(true)), "{b}");
    let creds = json!({"username": "tel@example.com", "password": ADMIN_PASSWORD});
    let (s, b) = j(&app, "POST", "/auth/authorize", creds.clone(), None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("mfa_required")));
    let login_code = app.code_sent_to("+442079460018");
    assert_ne!(login_code, code);
    let mut with_code = creds;
    with_code["otp"] = json!(login_code);
    let (s, b) = j(&app, "POST", "/auth/authorize", with_code, None).await;
    assert_eq!(s, 200, "{b}");
    assert!(!app.logs_text().contains(&login_code));
}

#[tokio::test]
async fn challenge_phrase_and_security_information() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("sec@example.com", "User", 1);
    let token = app.login_as("sec@example.com", ADMIN_PASSWORD).await;
    let (s, _) = j(
        &app,
        "PUT",
        "/usersecurity/challengephrase",
        json!({"challengePhrase": "blue heron at dawn"}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = j(
        &app,
        "GET",
        &format!("/usersecurity/challengephrase/{uid}"),
        Value::Null,
        Some(&token),
    )
    .await;
    assert_eq!(
        (s, b["challengePhrase"].as_str()),
        (200, Some("blue heron at dawn"))
    );
    let (s, b) = j(
        &app,
        "GET",
        &format!("/usersecurity/challengephrase/{uid}"),
        Value::Null,
        Some(&owner),
    )
    .await;
    assert_eq!(
        (s, b["challengePhrase"].as_str()),
        (200, Some("blue heron at dawn"))
    );
    let path = "/usersecurity/securityinformation/recovery-email";
    let (s, b) = j(&app, "GET", path, Value::Null, Some(&token)).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = j(
        &app,
        "POST",
        path,
        json!({"value": "me@elsewhere.example"}),
        Some(&token),
    )
    .await;
    assert_eq!(
        (s, b["value"].as_str()),
        (200, Some("me@elsewhere.example")),
        "{b}"
    );
    let (s, _) = j(&app, "POST", path, json!({"value": "again"}), Some(&token)).await;
    assert_eq!(s, 409);
    let (s, _) = j(
        &app,
        "POST",
        "/usersecurity/securityinformation/existing/recovery-email",
        json!({"value": "new@elsewhere.example"}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = j(
        &app,
        "POST",
        "/usersecurity/securityinformation/existing/missing",
        json!({"value": "x"}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 404);
    let (_, b) = j(&app, "GET", path, Value::Null, Some(&token)).await;
    assert_eq!(b["value"], "new@elsewhere.example");
    // Another user's information is not theirs to read: the owner sees keys only.
    let (_, b) = j(&app, "GET", path, Value::Null, Some(&owner)).await;
    assert_eq!(b["error"], "not_found");
    let (s, b) = j(
        &app,
        "POST",
        &format!("/usersecurity/securityinformation/1/{uid}"),
        json!({}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["referenceKeys"], json!(["recovery-email"]));
    assert_eq!(b["challengePhraseSet"], true);
    assert!(!b.to_string().contains("new@elsewhere.example"));
    let rows = audit(&app, &owner, &format!("user={uid}")).await;
    assert!(has_event(&rows, "challenge_phrase_set", uid));
    assert_eq!(
        rows.iter()
            .filter(|r| r["event"] == "security_info_set")
            .count(),
        2
    );
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("aud@example.com", "User", 1);
    let t = app.login_as("aud@example.com", ADMIN_PASSWORD).await;
    app.create_key(&t, uid, "k1").await;
    app.create_key(&t, uid, "k2").await;
    let _ = j(
        &app,
        "POST",
        "/auth/authorize",
        json!({"username": "aud@example.com", "password": "bad"}),
        None,
    )
    .await;
    let all = audit(&app, &owner, "").await;
    assert!(all.len() >= 5, "{all:?}");
    // Newest first, by event, by user.
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    let created = audit(&app, &owner, "event=key_created").await;
    assert_eq!(created.len(), 2);
    assert!(created
        .iter()
        .all(|r| r["actorId"] == uid && r["credential"] == "password"));
    let theirs = audit(&app, &owner, &format!("user={uid}")).await;
    assert!(theirs
        .iter()
        .all(|r| r["actorId"] == uid || r["target"].as_str() == Some(&*uid.to_string())));
    assert!(theirs.iter().any(|r| r["event"] == "login_failed"));
    // Pages of two, following X-Next-Before.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (s, h, b) = call(
            &app,
            "GET",
            &format!("/auditlog?{query}"),
            None,
            Some(&owner),
        )
        .await;
        assert_eq!(s, 200);
        let page = b.as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| r["id"].as_i64().unwrap()));
        match h.get("x-next-before") {
            Some(v) => query = format!("limit=2&before={}", v.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // Time bounds.
    let at = all[0]["at"].as_i64().unwrap();
    assert!(audit(&app, &owner, &format!("since={}", at + 1000))
        .await
        .is_empty());
    assert_eq!(
        audit(&app, &owner, &format!("until={}", at + 1000))
            .await
            .len(),
        all.len()
    );
    // Needs Audit Log Read (and a password).
    let (s, _, _) = call(&app, "GET", "/auditlog", None, Some(&t)).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_role_change_applies_to_the_next_request() {
    // The server caches permissions per user and account: a change made
    // through the API must still apply at once, to keys and tokens alike.
    let app = spawn_app().await;
    let owner = app.login().await;
    let uid = app.add_user("rho@example.com", "User", 1);
    let token = app.login_as("rho@example.com", ADMIN_PASSWORD).await;
    let key = app.create_key(&token, uid, "rho").await;
    for _ in 0..2 {
        let (s, b) = app.psk(&key, "GET", "/permissions", b"").await;
        assert_eq!(
            (s, &b["permissions"]),
            (200, &json!(["API Keys Self Manage"]))
        );
        let (s, _, b) = call(&app, "GET", "/permissions", None, Some(&token)).await;
        assert_eq!(
            (s, &b["permissions"]),
            (200, &json!(["API Keys Self Manage"]))
        );
    }
    let (s, b) = j(
        &app,
        "PUT",
        &format!("/users/{uid}"),
        json!({"roles": ["Read Only"]}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.psk(&key, "GET", "/permissions", b"").await;
    assert_eq!((s, &b["permissions"]), (200, &json!([])));
    let (s, _, b) = call(&app, "GET", "/permissions", None, Some(&token)).await;
    assert_eq!((s, &b["permissions"]), (200, &json!([])));
}
