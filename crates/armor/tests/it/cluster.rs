//! Two `armor serve` nodes sharing one database, one master key file and
//! one Redis: what one node accepts or changes, the other sees.
//!
//! The database is PostgreSQL when `ARMOR_TEST_PG_URL` is set (scripts/test
//! starts a private one and sets it; in CI it must be set), else one SQLite
//! file shared by both processes. Each test starts its own `redis-server`
//! on a free loopback port, without persistence, so it can stop and
//! restart it. `faults`: Redis paused, PostgreSQL stopped and restarted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::{fresh_nonce, now, sign, spawn_app_with, Key, TestApp};

mod distributed;
mod faults;
mod procs;
mod tls;
mod tokens;
mod usage;

/// A private `redis-server` without persistence.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(Vec::new())
    }

    /// With `DEBUG` allowed from loopback (Redis 7 refuses it by default;
    /// older servers allow it and do not know the setting).
    pub fn start_debuggable() -> Redis {
        let bin =
            std::env::var("ARMOR_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let major: u32 = version
            .split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or(7);
        let extra = if major >= 7 {
            vec!["--enable-debug-command".into(), "local".into()]
        } else {
            Vec::new()
        };
        Redis::start_with(extra)
    }

    /// With a memory limit and a policy that evicts any key under it.
    pub fn start_evicting() -> Redis {
        Redis::start_with(
            ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn start_with(extra: Vec<String>) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (empty: nothing is saved) and waits for it.
    pub fn up(&mut self) {
        let bin =
            std::env::var("ARMOR_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} (scripts/test installs redis-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server: everything it held is gone.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}

/// The database both nodes use.
pub struct SharedDb {
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn shared_db() -> SharedDb {
    let dir = tempfile::tempdir().unwrap();
    if let Some(url) = crate::api::pg::fresh_database().await {
        return SharedDb { url, _dir: dir };
    }
    assert!(
        std::env::var("CI").is_err(),
        "ARMOR_TEST_PG_URL is not set: in CI the cluster tests run on PostgreSQL (scripts/test starts it)"
    );
    eprintln!("cluster tests: ARMOR_TEST_PG_URL not set, sharing one SQLite file instead");
    let url = dir.path().join("armor.db").to_string_lossy().into_owned();
    SharedDb { url, _dir: dir }
}

pub struct Cluster {
    pub a: TestApp,
    pub b: TestApp,
    pub redis: Redis,
    db: SharedDb,
    master: PathBuf,
    _keys: tempfile::TempDir,
}

impl Cluster {
    /// `armor admin` on the shared database and master key file.
    pub fn admin(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(crate::api::armor_bin())
            .arg("admin")
            .arg("--data-dir")
            .arg(self.a.data_dir())
            .args(["--database-url", &self.db.url])
            .arg("--master-key-file")
            .arg(&self.master)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "armor admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

pub async fn cluster() -> Cluster {
    cluster_on(Redis::start()).await
}

/// Two nodes on `redis`.
pub async fn cluster_on(redis: Redis) -> Cluster {
    let db = shared_db().await;
    let keys = tempfile::tempdir().unwrap();
    let master: PathBuf = keys.path().join("master.key");
    let args = node_args(&db.url, &master, &redis.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A first: it creates the master key file and the first account.
    let a = spawn_app_with(&args).await;
    let b = spawn_app_with(&args).await;
    Cluster {
        a,
        b,
        redis,
        db,
        master,
        _keys: keys,
    }
}

fn node_args(db: &str, master: &Path, redis: &str) -> Vec<String> {
    vec![
        "--database-url".into(),
        db.into(),
        "--master-key-file".into(),
        master.to_string_lossy().into_owned(),
        "--redis-url".into(),
        redis.into(),
    ]
}

fn fh(token: &str) -> String {
    format!("FH-AUTH {token}")
}

async fn signed(app: &TestApp, auth: &str) -> (u16, serde_json::Value) {
    let (s, _, v) = app
        .send("GET", "/me", &[("Authorization", auth)], vec![])
        .await;
    (s, v)
}

fn fresh_auth(key: &Key) -> String {
    sign(key, "GET", "/me", b"", &fresh_nonce(), now())
}

/// How long a node may take to serve a key created through the other (a
/// pub/sub message and one query: milliseconds, but CI machines are busy).
/// Deletion is held to the one second.
const NEW_KEY_SEEN: Duration = Duration::from_secs(5);

/// Polls fresh signed requests to `app` until one gets `want`; returns how
/// long it took.
async fn until_status(app: &TestApp, key: &Key, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (s, v) = signed(app, &fresh_auth(key)).await;
        if s == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no {want} within {limit:?}; last answer {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_accepted_by_one_node_is_refused_by_the_other() {
    let c = cluster().await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "cluster").await;
    // B learns of the key through the invalidation channel.
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;

    let auth = fresh_auth(&key);
    assert_eq!(signed(&c.a, &auth).await.0, 200);
    let (s, v) = signed(&c.b, &auth).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("nonce_reused")), "{v}");
    let (s, v) = signed(&c.a, &auth).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("nonce_reused")), "{v}");
}

/// Claims sent at the same moment share script calls: 100 requests, each
/// sent twice at once and half of the copies to the other node: exactly one
/// of each pair accepted, the other refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_of_a_request_are_accepted_once() {
    let c = cluster().await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "batched").await;
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;
    let auths: Vec<String> = (0..100).map(|_| fresh_auth(&key)).collect();
    let mut calls = Vec::new();
    let first = &c.a;
    for (i, auth) in auths.iter().enumerate() {
        let other = if i % 2 == 0 { &c.a } else { &c.b };
        calls.push(async move {
            let (x, y) = tokio::join!(signed(first, auth), signed(other, auth));
            (x, y)
        });
    }
    let answers = futures_util::future::join_all(calls).await;
    for ((s1, v1), (s2, v2)) in answers {
        let mut statuses = [s1, s2];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "{v1} {v2}");
        let refused = if s1 == 401 { &v1 } else { &v2 };
        assert_eq!(refused["error"], "nonce_reused", "{refused}");
    }
}

/// The claim script directly, through a node's `Cluster` (in process):
/// a fingerprint pair held or a signature held is a replay, and a refused
/// claim leaves nothing behind (the pair it set first is undone).
#[tokio::test]
async fn a_refused_claim_leaves_its_other_fingerprint_free() {
    use armor_server::cluster::{ClaimError, RedisMode};

    let redis = Redis::start();
    let node = InProcessNode::start(&redis.url(), &RedisMode::Single, now()).await;
    // One second after the epoch marker the start-up set.
    let ts = node.epoch + 1;
    let claim = |pair: u128, signature: u128| node.claim(pair, signature, ts);
    assert_eq!(claim(1, 2).await, Ok(()));
    assert_eq!(claim(1, 3).await, Err(ClaimError::Reused), "pair held");
    assert_eq!(claim(4, 2).await, Err(ClaimError::Reused), "signature held");
    // Both refusals left their other fingerprint free.
    assert_eq!(claim(4, 3).await, Ok(()));
    assert_eq!(claim(4, 5).await, Err(ClaimError::Reused));
}

#[tokio::test]
async fn a_token_from_one_node_works_on_the_other() {
    let c = cluster().await;
    let token = c.a.login().await;
    let (s, _, me) =
        c.b.send("GET", "/me", &[("Authorization", &fh(&token))], vec![])
            .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["authentication"], "FH-AUTH");
}

#[tokio::test]
async fn a_key_deleted_through_one_node_is_refused_by_the_other_within_a_second() {
    let c = cluster().await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "doomed").await;
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;

    let (s, _, b) =
        c.a.send(
            "DELETE",
            &format!("/users/1/keys/{}", key.id),
            &[("Authorization", &fh(&token))],
            vec![],
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    let took = until_status(&c.b, &key, 401, Duration::from_secs(1)).await;
    eprintln!("key deletion seen by node B after {took:?}");
    let (s, v) = signed(&c.b, &fresh_auth(&key)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_signature")));
}

/// A roll through one node shortens the old key's life on the other: the
/// restrictions cached there are read again.
#[tokio::test]
async fn a_key_rolled_through_one_node_expires_on_the_other() {
    let c = cluster().await;
    let token = c.a.login().await;
    let old = c.a.create_key(&token, 1, "rolled").await;
    until_status(&c.b, &old, 200, NEW_KEY_SEEN).await;
    let (s, v) =
        c.a.post_json(
            &format!("/users/1/keys/{}/roll", old.id),
            serde_json::json!({"graceSeconds": 0}),
            Some(&fh(&token)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new = Key::from_answer(&v);
    c.a.remember_secret(&new.secret);
    until_status(&c.b, &old, 401, NEW_KEY_SEEN).await;
    let (s, v) = signed(&c.b, &fresh_auth(&old)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("key_expired")));
    until_status(&c.b, &new, 200, NEW_KEY_SEEN).await;
}

#[tokio::test]
async fn redis_down_fails_closed_on_both_nodes_and_service_resumes() {
    let mut c = cluster().await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "outage").await;
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;

    c.redis.down();
    for node in [&c.a, &c.b] {
        let (s, v) = signed(node, &fresh_auth(&key)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (503, Some("replay_store_unavailable")),
            "{v}"
        );
    }
    // Password logins do not need Redis.
    let token_b = c.b.login().await;
    let (s, _, _) =
        c.a.send("GET", "/me", &[("Authorization", &fh(&token_b))], vec![])
            .await;
    assert_eq!(s, 200);

    c.redis.up();
    for node in [&c.a, &c.b] {
        until_status(node, &key, 200, Duration::from_secs(15)).await;
    }
}

/// A Redis that may evict (a memory limit and `allkeys-lru`) could drop a
/// claim and so let its request be replayed: every node refuses signed
/// requests with 503 until its policy is `noeviction`, then serves them,
/// and refuses them again once the policy is changed back while it runs.
#[tokio::test]
async fn a_redis_that_may_evict_claims_is_refused_until_it_is_noeviction() {
    let c = cluster_on(Redis::start_evicting()).await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "evicting").await;
    let (s, v) = signed(&c.a, &fresh_auth(&key)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("replay_store_unavailable")),
        "{v}"
    );
    // The other node refuses it the same way once it serves the key.
    until_status(&c.b, &key, 503, NEW_KEY_SEEN).await;
    let policy = |p: &str| procs::cli(c.redis.port, &["CONFIG", "SET", "maxmemory-policy", p]);
    assert_eq!(policy("noeviction"), "OK");
    for node in [&c.a, &c.b] {
        until_status(node, &key, 200, Duration::from_secs(10)).await;
    }
    // Checked again every 10 s while serving.
    assert_eq!(policy("volatile-lru"), "OK");
    until_status(&c.a, &key, 503, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn redis_restarted_empty_still_refuses_a_replay() {
    let mut c = cluster().await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "amnesia").await;
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;

    let auth = fresh_auth(&key);
    assert_eq!(signed(&c.a, &auth).await.0, 200);

    // Redis loses everything it held.
    c.redis.down();
    c.redis.up();
    // Fresh requests are served again (those signed in the very second the
    // loss was noticed may be refused as too old).
    for node in [&c.a, &c.b] {
        until_status(node, &key, 200, Duration::from_secs(15)).await;
    }
    for node in [&c.a, &c.b] {
        let (s, v) = signed(node, &auth).await;
        assert_eq!(s, 401, "a replay after the Redis restart was accepted: {v}");
    }
}

#[tokio::test]
async fn failed_logins_on_both_nodes_count_towards_one_lockout() {
    use crate::api::{ADMIN_EMAIL, ADMIN_PASSWORD};
    use serde_json::json;
    let c = cluster().await;
    // The default policy locks after 5 failures: 3 through A, 2 through B.
    for node in [&c.a, &c.a, &c.a, &c.b, &c.b] {
        let (s, _) = node
            .post_json(
                "/auth/authorize",
                json!({"username": ADMIN_EMAIL, "password": "wrong"}),
                None,
            )
            .await;
        assert_eq!(s, 401);
    }
    for node in [&c.a, &c.b] {
        let (s, b) = node
            .post_json(
                "/auth/authorize",
                json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
                None,
            )
            .await;
        assert_eq!(s, 401, "the lock is not shared: {b}");
    }
}

#[tokio::test]
async fn a_user_disabled_through_one_node_is_refused_by_the_other_within_a_second() {
    use crate::api::ADMIN_PASSWORD;
    use serde_json::json;
    let c = cluster().await;
    let owner = c.a.login().await;
    let uid: i64 = c
        .admin(
            &[
                "add-user",
                "--email",
                "dee@example.com",
                "--role",
                "User",
                "--account",
                "1",
            ],
            &[("ARMOR_NEW_USER_PASSWORD", ADMIN_PASSWORD)],
        )
        .parse()
        .unwrap();
    let token = c.b.login_as("dee@example.com", ADMIN_PASSWORD).await;
    let key = c.b.create_key(&token, uid, "dee").await;
    until_status(&c.a, &key, 200, NEW_KEY_SEEN).await;

    let status = |enabled: bool| json!({"userId": uid, "status": if enabled { "active" } else { "disabled" }});
    let (s, b) =
        c.a.post_json("/users/status", status(false), Some(&fh(&owner)))
            .await;
    assert_eq!(s, 200, "{b}");
    // Node B drops the user's keys and cached status when the change
    // reaches it through Redis: within the second revocation is held to.
    let started = Instant::now();
    until_status(&c.b, &key, 401, Duration::from_secs(1)).await;
    loop {
        let (s, _, _) =
            c.b.send("GET", "/me", &[("Authorization", &fh(&token))], vec![])
                .await;
        if s == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "token still {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (s, b) =
        c.a.post_json("/users/status", status(true), Some(&fh(&owner)))
            .await;
    assert_eq!(s, 200, "{b}");
    // Node B re-reads the user's keys when told.
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;
}

#[tokio::test]
async fn reset_mails_asked_through_both_nodes_count_towards_one_limit() {
    use crate::api::ADMIN_EMAIL;
    use serde_json::json;
    let c = cluster().await;
    // Eight at once, half through each node: the limit (3 an hour per
    // address) holds, counted once in the shared database.
    let asks = (0..8).map(|i| {
        let node = if i % 2 == 0 { &c.a } else { &c.b };
        node.post_json("/users/resetpassword", json!({"email": ADMIN_EMAIL}), None)
    });
    for (s, _) in futures_util::future::join_all(asks).await {
        assert_eq!(s, 200);
    }
    let pending = c.admin(&["outbox"], &[]);
    assert_eq!(pending.lines().count(), 3, "{pending}");
}

/// A core in this process with its clock at `now`, on the Redis at `url`,
/// once its cluster client is ready: claims made through `cluster` are
/// this node's.
pub struct InProcessNode {
    pub cluster: std::sync::Arc<armor_server::cluster::Cluster>,
    /// The latest epoch marker once started: Redis's second when the
    /// start-up set it, which may be past the `now` the node was given.
    pub epoch: u64,
    _core: std::sync::Arc<armor_server::core::Core>,
    _dir: tempfile::TempDir,
}

impl InProcessNode {
    pub async fn start(url: &str, mode: &armor_server::cluster::RedisMode, now: u64) -> Self {
        use armor_server::cluster::Cluster;
        use armor_server::core::Core;
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let (core, _) = Core::scratch(dir.path(), now, 1024).await.unwrap();
        let cluster = Cluster::with_mode(url, mode, 1).await.unwrap();
        let core = Arc::new(core.with_cluster(cluster.clone()));
        cluster.spawn(Arc::downgrade(&core), core.clock.clone());
        cluster.start_up(core.clock.as_ref()).await;
        let started = Instant::now();
        while !cluster.ready() {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (epoch, _) = cluster.ensure_epoch(now).await.unwrap();
        InProcessNode {
            cluster,
            epoch,
            _core: core,
            _dir: dir,
        }
    }

    /// Claims `(pair, signature)` of key `key` signed at `ts`, with the
    /// window's 300 s, at `ts` on this node's clock.
    pub async fn claim(
        &self,
        pair: u128,
        signature: u128,
        ts: u64,
    ) -> Result<(), armor_server::cluster::ClaimError> {
        let fp = armor_psk::Fingerprints { pair, signature };
        self.cluster.claim("key", &fp, ts, ts + 300, ts).await
    }
}
