//! TLS to Redis (`rediss://`, `--redis-ca-file` or the system's
//! authorities) and to PostgreSQL (`sslmode` and `sslrootcert` in the
//! database URL), with the test authority of scripts/with-pg-redis
//! (`ARMOR_TEST_TLS_DIR`): a server whose certificate the node cannot
//! check is never used.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{free_port, node_args, tls_args, Clients, RedisCluster, RedisSentinel, Server};
use super::{fresh_auth, signed, until_status};
use crate::api::{spawn_app_with, Key, TestApp};

/// The directory of the test authority and certificates, or None outside
/// scripts/with-pg-redis (an error in CI, where it always runs).
fn tls_dir() -> Option<PathBuf> {
    let dir = std::env::var("ARMOR_TEST_TLS_DIR")
        .ok()
        .filter(|d| !d.is_empty());
    if dir.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "ARMOR_TEST_TLS_DIR is not set: in CI the cluster tests run under scripts/with-pg-redis"
        );
        eprintln!(
            "TLS tests: ARMOR_TEST_TLS_DIR not set (run under scripts/with-pg-redis): skipped"
        );
    }
    dir.map(PathBuf::from)
}

/// A `redis-server` that speaks TLS only, with the test certificate.
fn tls_redis(tls: &Path, dir: &Path, clients: Clients) -> Server {
    let port = free_port();
    Server::spawn(dir, port, &node_args(port, &tls_args(port, tls, clients)))
}

/// Signed requests to `app` are refused (503) and its last start's log
/// gives `reason` (the TLS error) for it.
async fn refused_for_the_certificate(app: &TestApp, key: &Key, trusting: &str, reason: &str) {
    let (s, v) = signed(app, &fresh_auth(key)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("replay_store_unavailable")),
        "trusting {trusting}: {v}"
    );
    until_logged(app, reason, &format!("trusting {trusting}")).await;
}

/// Until the log of `app`'s last start holds `text` (10 s at most).
async fn until_logged(app: &TestApp, text: &str, context: &str) {
    let start = Instant::now();
    while !app.last_logs_text().contains(text) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{context}: no {text:?} in the log:\n{}",
            app.last_logs_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the node logs when a server's certificate does not check out.
const UNTRUSTED: &str = "invalid peer certificate";

/// Signed requests to `app` are served, with claims made in Redis (the
/// replay store is Redis alone, so the replay's 401 comes from it), and
/// the invalidation channel, a connection of its own, is up.
async fn served_through_redis(app: &TestApp, key: &Key) {
    until_status(app, key, 200, Duration::from_secs(10)).await;
    let auth = fresh_auth(key);
    assert_eq!(signed(app, &auth).await.0, 200);
    let (s, v) = signed(app, &auth).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("nonce_reused")), "{v}");
    until_logged(app, "invalidation channel up", "served").await;
}

/// One node on `redis_args` (TLS-only servers whose certificate the test
/// authority signed), restarted with each way of trusting an authority:
/// refused until it trusts the right one, then served.
async fn served_only_once_the_authority_is_trusted(tls: &Path, redis_args: &[&str]) {
    let ca = tls.join("ca.pem").display().to_string();
    let other = tls.join("other-ca.pem").display().to_string();
    let mut app = spawn_app_with(redis_args).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "tls").await;
    // The system's authorities, which do not know the test one.
    refused_for_the_certificate(&app, &key, "the system's authorities", UNTRUSTED).await;
    // The system's store as `SSL_CERT_FILE` names it: another authority,
    // then the one that signed.
    app.restart_with_env("SSL_CERT_FILE", &other);
    refused_for_the_certificate(&app, &key, "SSL_CERT_FILE=other-ca.pem", UNTRUSTED).await;
    app.restart_with_env("SSL_CERT_FILE", &ca);
    served_through_redis(&app, &key).await;
    // A CA file replaces the system's store, even one that trusts the
    // server.
    app.restart_with_env("ARMOR_REDIS_CA_FILE", &other);
    refused_for_the_certificate(&app, &key, "--redis-ca-file other-ca.pem", UNTRUSTED).await;
    app.restart_with_env("ARMOR_REDIS_CA_FILE", &ca);
    served_through_redis(&app, &key).await;
}

/// One node on `redis_args` (TLS-only servers that ask clients for a
/// certificate the test authority signed), trusting that authority:
/// refused without a client certificate and with one of another
/// authority, served with one the test authority signed.
async fn served_only_with_a_client_certificate_it_trusts(tls: &Path, redis_args: &[&str]) {
    let file = |name: &str| tls.join(name).display().to_string();
    let ca = file("ca.pem");
    let args = [redis_args, &["--redis-ca-file", &ca]].concat();
    let mut app = spawn_app_with(&args).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "client certificate").await;
    // The server's TLS alert, as the TLS library names it.
    refused_for_the_certificate(&app, &key, "no client certificate", "CertificateRequired").await;
    let (cert, key_file) = (file("other-client.pem"), file("other-client.key"));
    app.restart_with_envs(&[
        ("ARMOR_REDIS_CLIENT_CERT", &cert),
        ("ARMOR_REDIS_CLIENT_KEY", &key_file),
    ]);
    refused_for_the_certificate(
        &app,
        &key,
        "another authority's client certificate",
        "UnknownCA",
    )
    .await;
    let (cert, key_file) = (file("client.pem"), file("client.key"));
    app.restart_with_envs(&[
        ("ARMOR_REDIS_CLIENT_CERT", &cert),
        ("ARMOR_REDIS_CLIENT_KEY", &key_file),
    ]);
    served_through_redis(&app, &key).await;
}

#[tokio::test]
async fn one_redis_over_tls_is_used_only_once_its_certificate_checks_out() {
    let Some(tls) = tls_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let redis = tls_redis(&tls, dir.path(), Clients::Anonymous);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    served_only_once_the_authority_is_trusted(&tls, &["--redis-url", &url]).await;
}

#[tokio::test]
async fn one_redis_that_asks_for_a_client_certificate_is_used_only_with_one_it_trusts() {
    let Some(tls) = tls_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let redis = tls_redis(&tls, dir.path(), Clients::Certified);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    served_only_with_a_client_certificate_it_trusts(&tls, &["--redis-url", &url]).await;
}

#[tokio::test]
async fn a_sentinel_set_up_over_tls_is_used_only_once_its_certificate_checks_out() {
    let Some(tls) = tls_dir() else { return };
    let redis = RedisSentinel::start_tls(&tls, Clients::Anonymous);
    let args = redis.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    served_only_once_the_authority_is_trusted(&tls, &args).await;
}

#[tokio::test]
async fn a_sentinel_set_up_that_asks_for_client_certificates_is_used_only_with_one_it_trusts() {
    let Some(tls) = tls_dir() else { return };
    let redis = RedisSentinel::start_tls(&tls, Clients::Certified);
    let args = redis.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    served_only_with_a_client_certificate_it_trusts(&tls, &args).await;
}

#[tokio::test]
async fn a_redis_cluster_over_tls_is_used_only_once_its_certificate_checks_out() {
    let Some(tls) = tls_dir() else { return };
    let redis = RedisCluster::start_tls(&tls, Clients::Anonymous);
    let url = redis.url();
    served_only_once_the_authority_is_trusted(
        &tls,
        &["--redis-mode", "cluster", "--redis-url", &url],
    )
    .await;
}

#[tokio::test]
async fn a_redis_cluster_that_asks_for_client_certificates_is_used_only_with_one_it_trusts() {
    let Some(tls) = tls_dir() else { return };
    let redis = RedisCluster::start_tls(&tls, Clients::Certified);
    let url = redis.url();
    served_only_with_a_client_certificate_it_trusts(
        &tls,
        &["--redis-mode", "cluster", "--redis-url", &url],
    )
    .await;
}

#[tokio::test]
async fn postgresql_over_tls_is_checked_against_the_authority_in_the_url() {
    let Some(tls) = tls_dir() else { return };
    let db = crate::api::pg::fresh_database()
        .await
        .expect("ARMOR_TEST_TLS_DIR comes with ARMOR_TEST_PG_URL");
    let name = db.rsplit('/').next().unwrap().to_owned();
    let with_ca = |db: &str, ca: &str| {
        format!(
            "{db}?sslmode=verify-full&sslrootcert={}",
            tls.join(ca).display()
        )
    };
    // With a password in the URL (the test server trusts loopback and
    // ignores it): the error must not show it.
    const PASSWORD: &str = "pg-tls-test-password-61";
    let (scheme, rest) = db.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let with_password = format!("{scheme}://{user}:{PASSWORD}@{host}");

    // An authority that did not sign the server's certificate: the node
    // does not start, and says why.
    let err = refuses_to_start(&["--database-url", &with_ca(&with_password, "other-ca.pem")]);
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "the password is shown: {err}");

    // The one that did: served, and every connection of the node to its
    // database is encrypted.
    let app = spawn_app_with(&["--database-url", &with_ca(&db, "ca.pem")]).await;
    app.login().await;
    let base = crate::api::pg::server_url().unwrap();
    let out = Command::new("psql")
        .arg(&base)
        .args(["-Atc"])
        .arg(format!(
            "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{name}' GROUP BY s.ssl"
        ))
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rows.starts_with("t|") && !rows.contains("f|"),
        "connections by TLS use: {rows:?}"
    );
}

/// A PostgreSQL role that signs in with a client certificate only
/// (`armor_client`, `cert` in the test server's pg_hba.conf): a node
/// starts with the certificate and key its URL names (`sslcert`,
/// `sslkey`), and not without them or with another authority's.
#[tokio::test]
async fn postgresql_that_asks_for_a_client_certificate_takes_the_one_in_the_url() {
    let Some(tls) = tls_dir() else { return };
    let db = crate::api::pg::fresh_database()
        .await
        .expect("ARMOR_TEST_TLS_DIR comes with ARMOR_TEST_PG_URL");
    let (scheme, rest) = db.split_once("://").unwrap();
    let host = rest.split_once('@').unwrap().1;
    let file = |name: &str| tls.join(name).display().to_string();
    let url = format!(
        "{scheme}://armor_client@{host}?sslmode=verify-full&sslrootcert={}",
        file("ca.pem")
    );
    let with_cert = |name: &str| {
        format!(
            "{url}&sslcert={}&sslkey={}",
            file(&format!("{name}.pem")),
            file(&format!("{name}.key"))
        )
    };
    let err = refuses_to_start(&["--database-url", &url]);
    assert!(
        err.contains("requires a valid client certificate"),
        "without one: {err}"
    );
    let err = refuses_to_start(&["--database-url", &with_cert("other-client")]);
    assert!(err.contains("UnknownCA"), "another authority's: {err}");
    let app = spawn_app_with(&["--database-url", &with_cert("client")]).await;
    app.login().await;
}

/// A client key's passphrase in the database URL (libpq's `sslpassword`)
/// is refused at start-up, and shown nowhere: the PostgreSQL client would
/// log it as an unknown parameter.
#[test]
fn a_database_url_with_an_ssl_password_is_refused_without_showing_it() {
    const PASSPHRASE: &str = "key-passphrase-83";
    let url =
        format!("postgres://armor@127.0.0.1:1/armor?sslmode=verify-full&sslpassword={PASSPHRASE}");
    let err = refuses_to_start(&["--database-url", &url]);
    assert!(err.contains("sslpassword is not supported"), "{err}");
    assert!(!err.contains(PASSPHRASE), "the passphrase is shown: {err}");
}

/// `armor serve` with `args` (and none of the store settings of the
/// environment) exits with an error: its standard error.
fn refuses_to_start(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::api::armor_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .env("ARMOR_ADMIN_EMAIL", crate::api::ADMIN_EMAIL)
        .env("ARMOR_ADMIN_PASSWORD", crate::api::ADMIN_PASSWORD)
        .env_remove("ARMOR_DATABASE_URL")
        .env_remove("ARMOR_REDIS_URL")
        .env_remove("ARMOR_REDIS_CA_FILE")
        .env_remove("ARMOR_REDIS_CLIENT_CERT")
        .env_remove("ARMOR_REDIS_CLIENT_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("armor serve kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{args:?}: {err}");
    err
}

#[test]
fn serve_refuses_a_redis_authority_client_certificate_or_scheme_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let (pem, text, missing) = (
        pem.to_string_lossy(),
        text.to_string_lossy(),
        missing.to_string_lossy(),
    );
    let cases: [(&[&str], &str); 14] = [
        (
            &["--redis-ca-file", &pem],
            "--redis-ca-file needs --redis-url",
        ),
        (
            &[
                "--redis-url",
                "redis://127.0.0.1:1",
                "--redis-ca-file",
                &pem,
            ],
            "applies to rediss:// URLs",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-ca-file",
                &text,
            ],
            "holds no PEM certificate",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-ca-file",
                &missing,
            ],
            "cannot read --redis-ca-file",
        ),
        (
            &[
                "--redis-mode",
                "cluster",
                "--redis-url",
                "rediss://127.0.0.1:1,redis://127.0.0.1:2",
            ],
            "mix plain and TLS (rediss://) ones",
        ),
        (
            &[
                "--redis-mode",
                "cluster",
                "--redis-url",
                "valkeys://127.0.0.1:1,redis://127.0.0.1:2",
            ],
            "mix plain and TLS (rediss://) ones",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-ca-file",
                &pem,
            ],
            "the Redis CA file holds a bad certificate",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-client-cert",
                &pem,
            ],
            "--redis-client-cert needs --redis-client-key",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-client-key",
                &text,
            ],
            "--redis-client-key needs --redis-client-cert",
        ),
        (
            &["--redis-client-cert", &pem, "--redis-client-key", &text],
            "--redis-client-cert needs --redis-url",
        ),
        (
            &[
                "--redis-url",
                "redis://127.0.0.1:1",
                "--redis-client-cert",
                &pem,
                "--redis-client-key",
                &text,
            ],
            "applies to rediss:// URLs",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-client-cert",
                &text,
                "--redis-client-key",
                &text,
            ],
            "the Redis client certificate file holds no PEM certificate",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-client-cert",
                &missing,
                "--redis-client-key",
                &text,
            ],
            "cannot read --redis-client-cert",
        ),
        (
            &[
                "--redis-url",
                "rediss://127.0.0.1:1",
                "--redis-client-cert",
                &text,
                "--redis-client-key",
                &missing,
            ],
            "cannot read --redis-client-key",
        ),
    ];
    for (args, says) in cases {
        let err = refuses_to_start(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
