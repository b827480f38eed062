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
