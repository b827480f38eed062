//! Restarts, crashes, master-key rotation, and secrets at rest and in logs.

use std::sync::Arc;

use super::*;

#[tokio::test]
async fn keys_and_logins_survive_a_restart() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "durable").await;
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    app.restart();
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (s, _, list) = app
        .send(
            "GET",
            "/users/1/keys",
            &[("Authorization", &format!("FH-AUTH {token}"))],
            vec![],
        )
        .await;
    assert_eq!(s, 200, "the token did not survive the restart");
    assert!(
        list[0]["lastUsed"].is_string(),
        "last-used time lost on shutdown: {list}"
    );
}

#[tokio::test]
async fn kill_9_during_key_creation_loses_no_acknowledged_key() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let url = app.url.clone();
    let http = app.http.clone();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..48 {
        let (url, http, token, acked) = (
            url.clone(),
            http.clone(),
            token.clone(),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(i * 4)).await;
            let resp = http
                .post(format!("{url}/users/1/keys"))
                .header("Authorization", format!("FH-AUTH {token}"))
                .json(&serde_json::json!({"name": format!("k{i}")}))
                .send()
                .await;
            if let Ok(r) = resp {
                if r.status() == 200 {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        acked.lock().unwrap().push(Key::from_answer(&v));
                    }
                }
            }
        }));
    }
    // Kill once a few creations were acknowledged and others are in flight
    // (bounded: at most 30 s of waiting).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.crash_and_restart();
    for t in tasks {
        let _ = t.await;
    }
    let keys = acknowledged.lock().unwrap().clone();
    assert!(!keys.is_empty(), "no creation finished before the kill");
    for k in &keys {
        let (s, b) = app.psk(k, "GET", "/me", b"").await;
        assert_eq!(s, 200, "acknowledged key {} lost: {b}", k.id);
    }
}

#[tokio::test]
async fn rotating_the_master_key_keeps_every_key() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let keys: Vec<Key> = futures_join(&app, &token, 5).await;
    let out = app.admin(&["rotate-master-key"], &[]);
    assert!(
        out.contains("version 2 added; 5 API-key secrets re-sealed"),
        "{out}"
    );
    let text = std::fs::read_to_string(app.data_dir().join("master.key")).unwrap();
    assert!(text.lines().any(|l| l.starts_with("2:")), "{text}");
    // A key made by the running server after the rotation.
    let late = app.create_key(&token, 1, "late").await;
    app.restart();
    for k in keys.iter().chain([&late]) {
        assert_eq!(app.psk(k, "GET", "/me", b"").await.0, 200, "{}", k.id);
    }
    let out = app.admin(&["rotate-master-key"], &[]);
    assert!(
        out.contains("version 3 added; 6 API-key secrets re-sealed"),
        "{out}"
    );
}

async fn futures_join(app: &TestApp, token: &str, n: usize) -> Vec<Key> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(app.create_key(token, 1, &format!("r{i}")).await);
    }
    out
}

#[tokio::test]
async fn the_server_refuses_a_readable_master_key_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mk = dir.path().join("master.key");
    std::fs::write(&mk, "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(armor_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[tokio::test]
async fn no_secret_in_the_data_dir_or_the_debug_logs() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let mut secrets = vec![token.clone(), ADMIN_PASSWORD.to_owned()];
    for i in 0..3 {
        let k = app.create_key(&token, 1, &format!("s{i}")).await;
        assert_eq!(app.psk(&k, "GET", "/me", b"").await.0, 200);
        // A refused signature too: the server's log must not echo secrets.
        let wrong = Key {
            id: k.id.clone(),
            secret: "apsk_not_it".into(),
        };
        assert_eq!(app.psk(&wrong, "GET", "/me", b"").await.0, 401);
        secrets.push(k.secret.clone());
    }
    let (s, code) = app
        .post_json(
            "/auth/authorize",
            serde_json::json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            None,
        )
        .await;
    assert_eq!(s, 200);
    secrets.push(code["code"].as_str().unwrap().to_owned());
    app.restart();
    let mut files = 0;
    for entry in std::fs::read_dir(app.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for s in &secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{} holds a secret",
                path.display()
            );
        }
        assert!(
            !contains(&bytes, b"apsk_"),
            "{} holds a secret prefix",
            path.display()
        );
    }
    // The SQLite file and the master key file; on PostgreSQL, the latter.
    assert!(files >= if super::pg::on_pg_redis() { 1 } else { 2 });
    let logs = app.logs_text();
    assert!(
        logs.contains("DEBUG") || logs.contains("serving"),
        "no logs captured"
    );
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "the log holds a secret");
    }
    assert!(!logs.contains("apsk_"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
