//! Limits on password logins and tokens that must hold under concurrency:
//! token reissue (the first token's absolute expiry carried forward,
//! inactive or locked-out users refused, one winner among concurrent
//! reissues), the lockout counted before the password or code is checked,
//! and the failed-login limit per client address and user name.

use serde_json::{json, Value};

use super::*;

/// Runs one SQL statement on the app's database (Python's sqlite3, or
/// psql); returns the rows, one a line, columns joined by `|`.
pub(super) fn sql(app: &TestApp, statement: &str) -> String {
    let out = match app.database_url() {
        None => {
            let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
                 rows=c.execute(sys.argv[2]).fetchall()\nc.commit()\n\
                 print('\\n'.join('|'.join(str(v) for v in r) for r in rows))\n";
            std::process::Command::new("python3")
                .args(["-c", script])
                .arg(app.data_dir().join("armor.db"))
                .arg(statement)
                .output()
                .unwrap()
        }
        Some(url) => std::process::Command::new("psql")
            .arg(&url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", statement])
            .output()
            .unwrap(),
    };
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn reissue(app: &TestApp, token: &str) -> (u16, Value) {
    let (s, b) = app
        .post_json("/auth/token/reissue", json!({"token": token}), None)
        .await;
    if let Some(t) = b["access_token"].as_str() {
        app.remember_secret(t);
    }
    (s, b)
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.send(
        "GET",
        "/me",
        &[("Authorization", &format!("FH-AUTH {token}"))],
        vec![],
    )
    .await
    .0
}

async fn authorize(app: &TestApp, body: Value) -> (u16, Value) {
    app.post_json("/auth/authorize", body, None).await
}

/// `login_failed` audit rows of `user`, by their `reason=`.
async fn failed_logins(app: &TestApp, owner: &str, user: i64, reason: &str) -> usize {
    let (s, _, rows) = app
        .send(
            "GET",
            &format!("/auditlog?event=login_failed&user={user}&limit=500"),
            &[("Authorization", &format!("FH-AUTH {owner}"))],
            vec![],
        )
        .await;
    assert_eq!(s, 200, "{rows}");
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["detail"] == format!("reason={reason}"))
        .count()
}

/// `n` logins at once with `body`; their statuses.
async fn at_once(app: &TestApp, n: usize, body: Value) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, http, body) = (app.url.clone(), app.http.clone(), body.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/auth/authorize"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_reissued_token_keeps_the_absolute_expiry_of_the_first() {
    let app = spawn_app().await;
    let mut token = app.login().await;
    // An hour off the first token's absolute expiry: a reissue that
    // restarted the 12 hours would show.
    sql(&app, "UPDATE tokens SET expires_at = expires_at - 3600");
    let first = sql(&app, "SELECT expires_at FROM tokens");
    for _ in 0..3 {
        let (s, b) = reissue(&app, &token).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["token_type"], "FH-AUTH");
        assert_eq!(b["expires_in"], 900);
        token = b["access_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        sql(&app, "SELECT expires_at FROM tokens WHERE revoked = 0"),
        first
    );
    assert_eq!(
        sql(&app, "SELECT count(*) FROM tokens WHERE revoked = 0"),
        "1"
    );
    assert_eq!(me(&app, &token).await, 200);
}

#[tokio::test]
async fn reissue_refuses_disabled_and_locked_out_users_like_a_bad_token() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let (s, bad) = reissue(&app, "not-a-token-at-all").await;
    assert_eq!((s, bad["error"].as_str()), (401, Some("invalid_token")));

    let dee = app.add_user("dee@example.com", "User", 1);
    let dee_token = app.login_as("dee@example.com", ADMIN_PASSWORD).await;
    let (s, b) = app
        .post_json(
            "/users/status",
            json!({"userId": dee, "status": "disabled"}),
            Some(&format!("FH-AUTH {owner}")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(reissue(&app, &dee_token).await, (401, bad.clone()));

    app.add_user("lee@example.com", "User", 1);
    let lee_token = app.login_as("lee@example.com", ADMIN_PASSWORD).await;
    for _ in 0..5 {
        let (s, _) = authorize(
            &app,
            json!({"username": "lee@example.com", "password": "nope"}),
        )
        .await;
        assert_eq!(s, 401);
    }
    assert_eq!(reissue(&app, &lee_token).await, (401, bad));
}

#[tokio::test]
async fn of_concurrent_reissues_of_one_token_exactly_one_wins() {
    let app = spawn_app().await;
    let token = app.login().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (url, http, token) = (app.url.clone(), app.http.clone(), token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{url}/auth/token/reissue"))
                    .json(&json!({"token": token}))
                    .send()
                    .await
                    .unwrap();
                let s = resp.status().as_u16();
                (s, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            200 => {
                let t = b["access_token"].as_str().unwrap().to_owned();
                app.remember_secret(&t);
                won.push(t);
            }
            _ => assert_eq!(
                (s, b["error"].as_str()),
                (401, Some("invalid_token")),
                "{b}"
            ),
        }
    }
    assert_eq!(won.len(), 1, "several reissues won");
    assert_eq!(me(&app, &won[0]).await, 200);
    assert_eq!(me(&app, &token).await, 401);
    assert_eq!(
        sql(&app, "SELECT count(*) FROM tokens WHERE revoked = 0"),
        "1"
    );
}

#[tokio::test]
async fn concurrent_wrong_passwords_check_the_real_hash_at_most_threshold_times() {
    let app = spawn_app_with(&["--login-failure-limit", "off"]).await;
    let owner = app.login().await;
    let uid = app.add_user("race@example.com", "User", 1);
    let statuses = at_once(
        &app,
        16,
        json!({"username": "race@example.com", "password": "wrong password"}),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // Five (the threshold) were checked against the password and failed;
    // the others were refused as locked, unchecked.
    assert_eq!(failed_logins(&app, &owner, uid, "password").await, 5);
    assert_eq!(failed_logins(&app, &owner, uid, "locked").await, 11);
    let (s, _) = authorize(
        &app,
        json!({"username": "race@example.com", "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(s, 401, "the account is locked");
}

#[tokio::test]
async fn concurrent_wrong_second_factor_codes_are_checked_at_most_threshold_times() {
    let app = spawn_app_with(&["--login-failure-limit", "off"]).await;
    let owner = app.login().await;
    let uid = app.add_user("app@example.com", "User", 1);
    let token = app.login_as("app@example.com", ADMIN_PASSWORD).await;
    let auth = format!("FH-AUTH {token}");
    let (s, b) = app
        .post_json("/usersecurity/validatephoneapppin", json!({}), Some(&auth))
        .await;
    assert_eq!(s, 200, "{b}");
    let secret = super::users::base32_decode(b["secret"].as_str().unwrap());
    let (s, b) = app
        .post_json(
            "/usersecurity/validatephoneapppin",
            json!({"pin": armor_server::core::totp::code_at(&secret, now(), 6)}),
            Some(&auth),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A code no step near now gives.
    let t = now();
    let near: Vec<String> = (0..=8)
        .map(|i| armor_server::core::totp::code_at(&secret, t + i * 30 - 120, 6))
        .collect();
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap();
    let statuses = at_once(
        &app,
        16,
        json!({"username": "app@example.com", "password": ADMIN_PASSWORD, "mfaCode": wrong}),
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 401),
        "{statuses:?}"
    );
    // Five codes checked (and wrong); the others refused as locked before
    // the password, let alone the code, was checked.
    assert_eq!(failed_logins(&app, &owner, uid, "mfa").await, 5);
    assert_eq!(failed_logins(&app, &owner, uid, "locked").await, 11);
}

#[tokio::test]
async fn failed_logins_past_the_limit_get_429_unchecked_and_other_users_still_sign_in() {
    let app = spawn_app_with(&["--login-failure-limit", "0.001:3"]).await;
    let owner = app.login().await;
    let uid = app.add_user("guess@example.com", "User", 1);
    app.add_user("fine@example.com", "User", 1);
    let wrong = json!({"username": "guess@example.com", "password": "wrong password"});
    for _ in 0..3 {
        let (s, b) = authorize(&app, wrong.clone()).await;
        assert_eq!((s, b["error"].as_str()), (401, Some("invalid_credentials")));
    }
    for password in ["wrong password", ADMIN_PASSWORD] {
        let (s, h, b) = app
            .send(
                "POST",
                "/auth/authorize",
                &[("Content-Type", "application/json")],
                serde_json::to_vec(&json!({"username": "GUESS@example.com", "password": password}))
                    .unwrap(),
            )
            .await;
        assert_eq!((s, b["error"].as_str()), (429, Some("rate_limited")), "{b}");
        assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    }
    // The refused attempts were not checked: three failures counted, no lock.
    let (s, _, b) = app
        .send(
            "GET",
            "/users/LockedOut/1/guess%40example.com",
            &[("Authorization", &format!("FH-AUTH {owner}"))],
            vec![],
        )
        .await;
    assert_eq!((s, b["lockedOut"].as_bool()), (200, Some(false)), "{b}");
    assert_eq!(failed_logins(&app, &owner, uid, "password").await, 3);
    // Another user signs in from the same address, and again: right
    // passwords take nothing from the limit.
    for _ in 0..5 {
        app.login_as("fine@example.com", ADMIN_PASSWORD).await;
    }
}

#[tokio::test]
async fn failed_logins_share_one_limit_whatever_spelling_the_store_matches() {
    let app = spawn_app_with(&["--login-failure-limit", "0.001:3"]).await;
    app.add_user("spell@example.com", "User", 1);
    // Spellings PostgreSQL's case-insensitive collation takes for the
    // name (an ignorable soft hyphen); on SQLite they name nobody, and
    // each is limited by itself.
    let spellings = [
        "spell@example.com",
        "s\u{ad}pell@example.com",
        "sp\u{ad}ell@example.com",
        "spe\u{ad}ll@example.com",
    ];
    let mut statuses = Vec::new();
    for name in spellings {
        let body = json!({"username": name, "password": "wrong password"});
        statuses.push(authorize(&app, body).await.0);
    }
    let by_user = app.database_url().is_some();
    let expected = if by_user {
        [401, 401, 401, 429]
    } else {
        [401, 401, 401, 401]
    };
    assert_eq!(statuses, expected);
}
