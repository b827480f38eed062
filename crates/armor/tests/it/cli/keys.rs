//! `armor keys create|list|usage|delete` against a real server (signed
//! in with the profile's e-mail and ARMOR_PASSWORD, or ARMOR_TOKEN), and
//! what `create` and `roll` send for the key fields, against a recording
//! server.

use serde_json::json;

use super::*;
use crate::api::{spawn_app, Key, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};

/// A credentials profile with `app`'s endpoint and the owner's e-mail,
/// written by `armor configure`.
fn profile_for(app: &TestApp) -> (tempfile::TempDir, PathBuf) {
    let (dir, file) = scratch();
    let out = Armor::new(&file)
        .args(["configure", "--key-id", KEY_ID, "--endpoint", &app.url])
        .args(["--email", ADMIN_EMAIL])
        .stdin(format!("{SECRET}\n"))
        .run();
    assert_ok(&out);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("email = {ADMIN_EMAIL}")), "{text}");
    (dir, file)
}

fn keys_cmd(creds: &Path) -> Armor {
    let mut a = Armor::new(creds).env("ARMOR_PASSWORD", ADMIN_PASSWORD);
    a.secrets.push(ADMIN_PASSWORD.to_owned());
    a.args(["keys"])
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[tokio::test]
async fn keys_create_list_usage_delete_against_a_server() {
    let app = spawn_app().await;
    let (_dir, creds) = profile_for(&app);

    // --json: the server's answer, secret included (this once).
    let created = json_of(
        &keys_cmd(&creds)
            .args(["create", "--name", "cli key", "--json"])
            .run(),
    );
    let key = Key::from_answer(&created);
    app.remember_secret(&key.secret);
    assert_eq!(created["name"], "cli key");
    // Readable: one field a line, the secret last with a warning.
    let out = keys_cmd(&creds).args(["create", "--name", "second"]).run();
    assert_ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id "), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("name ") && l.ends_with("second")),
        "{text}"
    );
    let secret_line = lines.iter().find(|l| l.starts_with("secret ")).unwrap();
    app.remember_secret(secret_line.split_whitespace().nth(1).unwrap());
    assert!(text.contains("shown this once"), "{text}");

    // list: a table with a header, and the JSON array.
    let out = keys_cmd(&creds).args(["list"]).run();
    assert_ok(&out);
    let table = stdout(&out);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.lines().next().unwrap().contains("LAST USED"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with(&key.id)).unwrap();
    assert!(row.contains("cli key") && row.contains("Active"), "{row}");
    assert!(!table.contains(&key.secret));
    let list = json_of(&keys_cmd(&creds).args(["list", "--json"]).run());
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // usage: what was sent, as JSON and as a table.
    for _ in 0..2 {
        assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    }
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    assert_eq!(app.psk(&wrong, "GET", "/me", b"").await.0, 401);
    let usage = json_of(
        &keys_cmd(&creds)
            .args(["usage", &key.id, "--bucket", "day", "--json"])
            .run(),
    );
    assert_eq!(usage["bucket"], "day");
    let last = usage["buckets"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["accepted"], 2, "{usage}");
    assert_eq!(last["refused"], json!({"invalid_signature": 1}));
    let out = keys_cmd(&creds)
        .args(["usage", &key.id, "--bucket", "day"])
        .run();
    assert_ok(&out);
    let table = stdout(&out);
    assert!(table.starts_with("START"), "{table}");
    let last = table.lines().last().unwrap();
    let cells: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(&cells[1..], ["2", "1", "invalid_signature=1"], "{table}");

    // delete, then the key is gone from the list.
    let out = keys_cmd(&creds).args(["delete", &key.id]).run();
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), format!("deleted {}", key.id));
    let list = json_of(&keys_cmd(&creds).args(["list", "--json"]).run());
    assert!(!list.to_string().contains(&key.id), "{list}");
    // A refusal: exit 2, the status and code on stderr.
    let out = keys_cmd(&creds).args(["delete", &key.id]).run();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("404 not_found"), "{}", stderr(&out));

    // ARMOR_TOKEN instead of a password; --user names whose keys.
    let token = app.login().await;
    let mut a = Armor::new(&creds).env("ARMOR_TOKEN", &token);
    a.secrets.push(token.clone());
    let list = json_of(&a.args(["keys", "list", "--user", "1", "--json"]).run());
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn keys_without_a_sign_in_say_what_is_missing() {
    let app = spawn_app().await;
    let (_dir, creds) = profile_for(&app);
    let out = Armor::new(&creds).args(["keys", "list"]).run();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ARMOR_PASSWORD"), "{}", stderr(&out));
    let mut a = Armor::new(&creds).env("ARMOR_PASSWORD", "not the password");
    a.secrets.push("not the password".into());
    let out = a.args(["keys", "list"]).run();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sign-in refused: 401"),
        "{}",
        stderr(&out)
    );
    // Bad flags are refused before anything is sent.
    for bad in [
        &["create", "--name", "x", "--rate-limit", "5"][..],
        &[
            "create",
            "--name",
            "x",
            "--expires-in",
            "60",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ],
        &["usage", "k", "--bucket", "week"],
        &["delete", "../../auth/logout"],
    ] {
        let out = keys_cmd(&creds).args(bad).run();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
}

#[test]
fn keys_create_sends_every_key_field_and_roll_sends_the_grace() {
    let (_dir, creds) = scratch();
    let (base, server) = serve_once(
        "200 OK",
        r#"{"id":"k2","apiKey":"apsk_new","name":"ci","userId":7,"createdDate":"2026-01-01T00:00:00Z","expiresAt":"2026-01-02T00:00:00Z","rateLimit":{"limit":100,"windowSeconds":60}}"#,
    );
    let out = Armor::new(&creds)
        .env("ARMOR_TOKEN", "tok-123")
        .args([
            "keys",
            "--endpoint",
            &base,
            "--user",
            "7",
            "create",
            "--name",
            "ci",
        ])
        .args([
            "--expires-in",
            "86400",
            "--permission",
            "API Keys Self Manage",
        ])
        .args(["--permission", "Users Read", "--allow-route", "GET /me"])
        .args(["--allow-route", "GET /vms/*", "--allow-ip", "10.0.0.0/8"])
        .args(["--allow-ip", "2001:db8::/32", "--rate-limit", "100/60"])
        .run();
    assert_ok(&out);
    let seen = server.join().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/users/7/keys")
    );
    assert_eq!(seen.header("authorization"), Some("FH-AUTH tok-123"));
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({
            "name": "ci",
            "expiresIn": 86400,
            "permissions": ["API Keys Self Manage", "Users Read"],
            "allowedRoutes": ["GET /me", "GET /vms/*"],
            "allowedIps": ["10.0.0.0/8", "2001:db8::/32"],
            "rateLimit": {"limit": 100, "windowSeconds": 60},
        })
    );
    let text = stdout(&out);
    assert!(text.contains("expires      2026-01-02T00:00:00Z"), "{text}");
    assert!(text.contains("rate limit   100/60s"), "{text}");

    let (base, server) = serve_once(
        "200 OK",
        r#"{"id":"k3","apiKey":"apsk_newer","name":"ci","userId":7,"createdDate":"2026-01-01T00:00:00Z","rolledFrom":"k2"}"#,
    );
    let out = Armor::new(&creds)
        .env("ARMOR_TOKEN", "tok-123")
        .args([
            "keys",
            "--endpoint",
            &base,
            "--user",
            "7",
            "roll",
            "k2",
            "--grace",
            "3600",
            "--json",
        ])
        .run();
    let v = json_of(&out);
    assert_eq!(v["rolledFrom"], "k2");
    let seen = server.join().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/users/7/keys/k2/roll")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.body).unwrap(),
        json!({"graceSeconds": 3600})
    );
}

#[tokio::test]
async fn keys_create_with_restrictions_and_roll_against_a_server() {
    let app = spawn_app().await;
    let (_dir, creds) = profile_for(&app);
    let created = json_of(
        &keys_cmd(&creds)
            .args([
                "create",
                "--name",
                "narrow",
                "--json",
                "--expires-in",
                "3600",
            ])
            .args(["--permission", "Users Read", "--allow-route", "GET /me"])
            .args(["--allow-ip", "127.0.0.0/8", "--allow-ip", "::1/128"])
            .args(["--rate-limit", "100/60"])
            .run(),
    );
    let key = Key::from_answer(&created);
    app.remember_secret(&key.secret);
    assert_eq!(created["permissions"], json!(["Users Read"]), "{created}");
    assert_eq!(created["allowedRoutes"], json!(["GET /me"]));
    assert_eq!(created["allowedIps"], json!(["127.0.0.0/8", "::1/128"]));
    assert_eq!(
        created["rateLimit"],
        json!({"limit": 100, "windowSeconds": 60})
    );
    assert!(created["expiresAt"].is_string(), "{created}");
    // The server applies what the flags asked for.
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (s, v) = app.psk(&key, "GET", "/users", b"").await;
    assert_eq!((s, v["error"].as_str()), (403, Some("route_not_allowed")));
    // The table shows the expiry.
    let out = keys_cmd(&creds).args(["list"]).run();
    assert_ok(&out);
    let table = stdout(&out);
    let row = table.lines().find(|l| l.starts_with(&key.id)).unwrap();
    let expires = created["expiresAt"].as_str().unwrap();
    assert!(row.contains(expires), "no expiry shown: {row}");

    // roll --grace 0: the successor works at once with the same rules,
    // the old key is refused from now on.
    let rolled = json_of(
        &keys_cmd(&creds)
            .args(["roll", &key.id, "--grace", "0", "--json"])
            .run(),
    );
    let new = Key::from_answer(&rolled);
    app.remember_secret(&new.secret);
    assert_eq!(rolled["rolledFrom"], key.id.as_str(), "{rolled}");
    assert_eq!(rolled["allowedRoutes"], json!(["GET /me"]));
    assert_eq!(app.psk(&new, "GET", "/me", b"").await.0, 200);
    let (s, v) = app.psk(&key, "GET", "/me", b"").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("key_expired")), "{v}");
    let list = json_of(&keys_cmd(&creds).args(["list", "--json"]).run());
    let old = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key.id.as_str())
        .unwrap();
    assert_eq!(old["keyStatus"], "Rolled", "{list}");
}
