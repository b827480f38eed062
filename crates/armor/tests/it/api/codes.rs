//! Codes at rest: every kind of code the server issues (activation by
//! invitation and by `GET /users/{id}/ActivationCode`, password reset,
//! phone verification, SMS sign-in) is looked for in every file of the
//! data directory (the SQLite database and its -wal/-shm files) or in a
//! dump of the PostgreSQL database, while the message is pending and after
//! it is delivered. The messages stay readable with `armor admin outbox`,
//! also after a master-key rotation.

use serde_json::{json, Value};

use super::users::j;
use super::*;

/// Every byte the database holds: each file of the data directory (the
/// SQLite database, its WAL and shared-memory files), or a dump of the
/// PostgreSQL database.
fn database_bytes(app: &TestApp) -> Vec<u8> {
    if let Some(url) = app.database_url() {
        let out = Command::new("pg_dump")
            .arg("--data-only")
            .arg(&url)
            .output()
            .expect("pg_dump (scripts/with-pg-redis installs postgresql)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return out.stdout;
    }
    let mut all = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(app.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "master.key") {
            continue;
        }
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
            files += 1;
        }
    }
    assert!(files >= 2, "the database and its WAL");
    all
}

/// The spellings of a code a reader could use: as sent, without dashes,
/// in lower case.
fn spellings(code: &str) -> Vec<String> {
    let bare: String = code.chars().filter(|c| *c != '-').collect();
    vec![code.to_owned(), bare.clone(), bare.to_ascii_lowercase()]
}

pub(super) fn assert_nowhere_in_the_database(app: &TestApp, codes: &[String], when: &str) {
    let bytes = database_bytes(app);
    for code in codes {
        for s in spellings(code) {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{when}: code {code} found in the database as {s:?}"
            );
        }
    }
}

#[tokio::test]
async fn no_code_is_stored_in_clear_before_or_after_delivery() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let mut codes = Vec::new();

    // Activation: by invitation mail, and read out by an administrator.
    let (s, b) = j(
        &app,
        "POST",
        "/users/",
        json!({"email": "new@example.com", "firstName": "N", "lastName": "U", "roles": ["User"]}),
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let uid = b["id"].as_i64().unwrap();
    codes.push(app.code_sent_to("new@example.com"));
    let (s, b) = j(
        &app,
        "GET",
        &format!("/users/{uid}/ActivationCode"),
        Value::Null,
        Some(&owner),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    codes.push(b["activationCode"].as_str().unwrap().to_owned());

    // Password reset.
    let (s, _) = j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": ADMIN_EMAIL}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    codes.push(app.code_sent_to(ADMIN_EMAIL));

    // Phone verification, then an SMS sign-in code.
    app.add_user("tel@example.com", "User", 1);
    let token = app.login_as("tel@example.com", ADMIN_PASSWORD).await;
    let phone = "+442079460018";
    let (s, _) = j(
        &app,
        "POST",
        "/usersecurity/validatemfaphone",
        json!({"phoneNumber": phone}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200);
    let phone_code = app.code_sent_to(phone);
    let (s, _) = j(
        &app,
        "POST",
        "/usersecurity/validatemfaphone",
        json!({"phoneNumber": phone, "code": phone_code}),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200);
    codes.push(phone_code);
    let creds = json!({"username": "tel@example.com", "password": ADMIN_PASSWORD});
    let (s, b) = j(&app, "POST", "/auth/authorize", creds, None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("mfa_required")));
    codes.push(app.code_sent_to(phone));
    assert_eq!(codes.len(), 5);

    // Pending: the operator reads every message, the database holds none
    // of the codes.
    assert_eq!(app.outbox().len(), 4);
    assert_nowhere_in_the_database(&app, &codes, "pending");

    // Delivered: the bodies are wiped.
    app.admin(&["outbox", "--mark-sent"], &[]);
    assert!(app.outbox().is_empty());
    assert_nowhere_in_the_database(&app, &codes, "delivered");
    assert!(codes.iter().all(|c| !app.logs_text().contains(c.as_str())));
}

#[tokio::test]
async fn pending_messages_still_open_after_a_master_key_rotation() {
    let app = spawn_app().await;
    let (s, _) = j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": ADMIN_EMAIL}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let code = app.code_sent_to(ADMIN_EMAIL);
    let out = app.admin(&["rotate-master-key"], &[]);
    assert!(out.contains("1 outbox messages re-sealed"), "{out}");
    assert_eq!(app.code_sent_to(ADMIN_EMAIL), code);
    // The running server seals with the version it knew; a message sealed
    // by it after the rotation opens too, and the next rotation re-seals
    // both.
    app.add_user("second@example.com", "User", 1);
    j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": "second@example.com"}),
        None,
    )
    .await;
    let second = app.code_sent_to("second@example.com");
    let out = app.admin(&["rotate-master-key"], &[]);
    assert!(out.contains("2 outbox messages re-sealed"), "{out}");
    assert_eq!(app.code_sent_to(ADMIN_EMAIL), code);
    assert_eq!(app.code_sent_to("second@example.com"), second);
    let (s, b) = j(
        &app,
        "POST",
        "/users/setpassword",
        json!({"code": code, "password": "a whole new passphrase"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// Runs one SQL statement on the app's database with its command-line
/// client (the server stopped).
fn sql(app: &TestApp, statement: &str) {
    let out = match app.database_url() {
        Some(url) => Command::new("psql")
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", statement])
            .output(),
        None => Command::new("sqlite3")
            .arg(app.data_dir().join("armor.db"))
            .arg(statement)
            .output(),
    }
    .expect("the database's command-line client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_message_written_in_clear_before_sealing_is_sealed_at_start_up() {
    let mut app = spawn_app().await;
    app.crash();
    // A pending row as the server wrote them before bodies were sealed.
    let code = format!("OLD{}", fresh_nonce()).to_ascii_uppercase();
    sql(
        &app,
        &format!(
            "INSERT INTO outbox (created_at, channel, recipient, subject, body)
             VALUES (1, 'email', '{ADMIN_EMAIL}', 'Your armor password reset',
                     'Your reset code is {code}; it works once.')"
        ),
    );
    app.start_again();
    assert_nowhere_in_the_database(&app, std::slice::from_ref(&code), "after start-up");
    assert_eq!(app.code_sent_to(ADMIN_EMAIL), code);
}

#[tokio::test]
async fn mark_sent_leaves_a_message_whose_body_does_not_open_pending() {
    let app = spawn_app().await;
    let (s, _) = j(
        &app,
        "POST",
        "/users/resetpassword",
        json!({"email": ADMIN_EMAIL}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let sql = |q: &str| super::login_limits::sql(&app, q);
    let version = sql("SELECT mk_version FROM outbox");
    // Sealed under a master-key version the server does not have.
    sql("UPDATE outbox SET mk_version = 999");
    let shown = app.admin(&["outbox", "--mark-sent"], &[]);
    assert!(shown.contains("\"body\":null"), "{shown}");
    // Still pending, body and all: once it opens again, it reads whole.
    sql(&format!("UPDATE outbox SET mk_version = {version}"));
    let msgs = app.outbox();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0]["body"].as_str().unwrap().contains("reset code is"));
}
