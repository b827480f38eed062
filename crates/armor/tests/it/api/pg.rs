//! PostgreSQL for the tests: `ARMOR_TEST_PG_URL` names a server (scripts/test
//! starts a private one); each caller gets a database of its own.

use std::process::Command;

/// The server's URL, if the tests were given one.
pub fn server_url() -> Option<String> {
    std::env::var("ARMOR_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Creates an empty database on the test server; returns its URL, or None
/// when no server was given.
pub async fn fresh_database() -> Option<String> {
    let base = server_url()?;
    let name = format!("armor_test_{}", super::fresh_nonce());
    let out = tokio::task::spawn_blocking({
        let base = base.clone();
        let name = name.clone();
        move || {
            Command::new("psql")
                .arg(&base)
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
                .arg(format!("CREATE DATABASE {name}"))
                .output()
        }
    })
    .await
    .unwrap()
    .expect("psql (scripts/test installs postgresql)");
    assert!(
        out.status.success(),
        "CREATE DATABASE on {base}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(with_database(&base, &name))
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    // postgres://user@host:port/db: the path after the authority.
    let authority_end = head
        .find("://")
        .map(|i| i + 3)
        .and_then(|s| head[s..].find('/').map(|j| s + j))
        .unwrap_or(head.len());
    let mut url = format!("{}/{name}", &head[..authority_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

#[test]
fn database_name_replaced() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:5/postgres?host=/tmp", "x"),
        "postgres://u@127.0.0.1:5/x?host=/tmp"
    );
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
}

/// Whether the black-box suite runs on PostgreSQL and Redis:
/// `ARMOR_TEST_BACKEND=pg` (scripts/test's second run), which needs
/// `ARMOR_TEST_PG_URL` and `ARMOR_TEST_REDIS_URL`.
pub fn on_pg_redis() -> bool {
    match std::env::var("ARMOR_TEST_BACKEND").as_deref() {
        Ok("pg") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("ARMOR_TEST_BACKEND={other}: use sqlite or pg"),
    }
}

/// The `armor serve` arguments of the chosen backend: none for SQLite in
/// the data directory; a fresh PostgreSQL database and the test Redis.
pub async fn backend_args() -> Vec<String> {
    if !on_pg_redis() {
        return Vec::new();
    }
    let db = fresh_database()
        .await
        .expect("ARMOR_TEST_BACKEND=pg needs ARMOR_TEST_PG_URL (scripts/with-pg-redis)");
    let redis = std::env::var("ARMOR_TEST_REDIS_URL")
        .expect("ARMOR_TEST_BACKEND=pg needs ARMOR_TEST_REDIS_URL (scripts/with-pg-redis)");
    vec!["--database-url".into(), db, "--redis-url".into(), redis]
}

/// The `--database-url` pair of [`backend_args`], for `armor admin`.
pub fn database_args(backend: &[String]) -> Vec<String> {
    backend
        .chunks(2)
        .filter(|pair| pair[0] == "--database-url")
        .flatten()
        .cloned()
        .collect()
}
