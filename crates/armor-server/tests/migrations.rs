//! The SQLite and PostgreSQL migrations build the same schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use armor_server::store::{Backend, Store};
use sqlx::Connection as _;

fn migration_names(dialect: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn both_dialects_have_the_same_migrations() {
    let sqlite = migration_names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite,
        migration_names("postgres"),
        "every migration needs its twin in the other dialect"
    );
}

/// (table, column) of every table but sqlx's own.
type Columns = BTreeSet<(String, String)>;

async fn sqlite_columns(path: &Path) -> Columns {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'
           AND m.name NOT LIKE 'sqlite%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().collect()
}

async fn pg_columns(url: &str) -> Columns {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// A fresh database on the server of `ARMOR_TEST_PG_URL`.
async fn fresh_pg(base: &str) -> String {
    let name = format!(
        "armor_schema_{}",
        hex::encode(armor_server::crypto::random_16())
    );
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority = head.find("://").map(|i| i + 3).unwrap();
    let end = head[authority..]
        .find('/')
        .map(|j| authority + j)
        .unwrap_or(head.len());
    format!("{}/{name}{query}", &head[..end])
}

#[tokio::test]
async fn postgres_and_sqlite_schemas_have_the_same_columns() {
    let Some(base) = std::env::var("ARMOR_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("CI").is_err(),
            "ARMOR_TEST_PG_URL is not set: in CI the PostgreSQL schema is checked (scripts/test)"
        );
        eprintln!("ARMOR_TEST_PG_URL not set: PostgreSQL schema not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("armor.db");
    let lite = Store::open(file.to_str().unwrap()).await.unwrap();
    assert_eq!(lite.backend(), Backend::Sqlite);
    lite.close().await;
    let url = fresh_pg(&base).await;
    let pg = Store::open(&url).await.unwrap();
    assert_eq!(pg.backend(), Backend::Postgres);
    // Migrating again is a no-op.
    pg.close().await;
    Store::open(&url).await.unwrap().close().await;

    let (a, b) = (sqlite_columns(&file).await, pg_columns(&url).await);
    assert!(a.len() > 20, "{a:?}");
    assert_eq!(
        a.difference(&b).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only in SQLite"
    );
    assert_eq!(
        b.difference(&a).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only in PostgreSQL"
    );
}
