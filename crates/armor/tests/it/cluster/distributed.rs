//! Three `armor serve` nodes on the shared database and a distributed
//! Redis, each test with its own processes (procs.rs): a Redis Cluster of
//! 3 primaries and 3 replicas, or a Sentinel set-up. What they prove: a
//! request accepted by one node is refused by every other; the primary
//! holding a claim killed with `kill -9`: 503 `replay_store_unavailable`
//! meanwhile, service back on its own, the replay still refused; a
//! reshard under traffic; a primary that lost the last claims; one
//! second's claims overflowing a signature hash; refused
//! attempts counted across the nodes.

use std::time::{Duration, Instant};

use super::procs::{cli, RedisCluster, RedisSentinel};
use super::{
    fh, fresh_auth, shared_db, signed, until_status, InProcessNode, Redis, SharedDb, NEW_KEY_SEEN,
};
use crate::api::{fresh_nonce, now, sign, spawn_app_with, Key, TestApp};

/// Three nodes on one database and one Redis deployment.
pub struct Nodes {
    pub apps: Vec<TestApp>,
    _db: SharedDb,
    _keys: tempfile::TempDir,
}

pub async fn three_nodes(redis_args: &[&str], extra: &[&str]) -> Nodes {
    let db = shared_db().await;
    let keys = tempfile::tempdir().unwrap();
    let master = keys.path().join("master.key");
    let master = master.to_string_lossy().into_owned();
    let mut args = vec!["--database-url", &db.url, "--master-key-file", &master];
    args.extend_from_slice(redis_args);
    args.extend_from_slice(extra);
    let mut apps = Vec::new();
    // The first creates the master key file and the first account.
    for _ in 0..3 {
        apps.push(spawn_app_with(&args).await);
    }
    Nodes {
        apps,
        _db: db,
        _keys: keys,
    }
}

impl Nodes {
    /// A key created through the first node, once every node serves it.
    async fn key(&self, name: &str) -> Key {
        self.key_with(serde_json::json!({ "name": name })).await
    }

    /// A key created through the first node with the fields given, once
    /// every node serves it.
    async fn key_with(&self, fields: serde_json::Value) -> Key {
        let token = self.apps[0].login().await;
        let (s, v) = self.apps[0]
            .post_json("/users/1/keys", fields, Some(&fh(&token)))
            .await;
        assert_eq!(s, 200, "{v}");
        let key = Key {
            id: v["id"].as_str().unwrap().to_owned(),
            secret: v["apiKey"].as_str().unwrap().to_owned(),
        };
        self.apps[0].remember_secret(&key.secret);
        for app in &self.apps {
            until_status(app, &key, 200, NEW_KEY_SEEN).await;
        }
        key
    }
}

/// Sends `n` requests round the nodes (request `i` to node `i % 3`), each
/// signed by `auth(i)`; their answers in order. For limits counted across
/// the nodes (refused attempts here; any per-key limit the same way).
pub async fn round_the_nodes(
    nodes: &Nodes,
    n: usize,
    auth: impl Fn(usize) -> String,
) -> Vec<(u16, serde_json::Value)> {
    let mut answers = Vec::with_capacity(n);
    for i in 0..n {
        answers.push(signed(&nodes.apps[i % 3], &auth(i)).await);
    }
    answers
}

fn assert_refused(s: u16, v: &serde_json::Value, what: &str) {
    let code = v["error"].as_str().unwrap_or_default();
    assert!(
        (s == 401 && (code == "nonce_reused" || code == "timestamp_out_of_window"))
            || (s == 503 && code == "replay_store_unavailable"),
        "{what}: {s} {v}"
    );
}

/// What a failover cost, as seen by fresh requests sent round the nodes.
#[derive(Debug)]
struct Failover {
    /// From the kill to the moment every node served a fresh request.
    resumed_after: Duration,
    /// Fresh requests answered 503 `replay_store_unavailable`.
    unavailable: usize,
    /// Fresh requests refused as older than a moved epoch marker.
    before_epoch: usize,
    accepted: usize,
}

/// Sends fresh requests round the nodes, and `replay` every third time,
/// from `killed` until every node has served one after a refusal; no
/// other answer than 200, 503 `replay_store_unavailable` or 401
/// `timestamp_out_of_window` (requests signed before the epoch marker
/// moved) for fresh ones, and never 200 for the replay.
async fn through_failover(nodes: &Nodes, key: &Key, replay: &str, killed: Instant) -> Failover {
    let mut f = Failover {
        resumed_after: Duration::ZERO,
        unavailable: 0,
        before_epoch: 0,
        accepted: 0,
    };
    let mut served_since_refusal = [false; 3];
    let mut n = 0usize;
    loop {
        n += 1;
        let i = n % 3;
        let app = &nodes.apps[i];
        let (s, v) = signed(app, &fresh_auth(key)).await;
        match (s, v["error"].as_str()) {
            (200, _) => {
                f.accepted += 1;
                served_since_refusal[i] = true;
            }
            (503, Some("replay_store_unavailable")) => {
                f.unavailable += 1;
                served_since_refusal = [false; 3];
            }
            (401, Some("timestamp_out_of_window")) => {
                f.before_epoch += 1;
                served_since_refusal = [false; 3];
            }
            _ => panic!("fresh request {n} during the failover: {s} {v}"),
        }
        if n.is_multiple_of(3) {
            let (s, v) = signed(app, replay).await;
            assert_refused(s, &v, "the replay during the failover");
        }
        if f.unavailable + f.before_epoch > 0 && served_since_refusal.iter().all(|x| *x) {
            f.resumed_after = killed.elapsed();
            return f;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "service did not resume: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_nodes_on_a_redis_cluster_refuse_a_replay_everywhere_and_a_deleted_key_within_a_second(
) {
    let redis = RedisCluster::start();
    let url = redis.url();
    let nodes = three_nodes(&["--redis-mode", "cluster", "--redis-url", &url], &[]).await;
    let key = nodes.key("cluster").await;
    for first in 0..3 {
        let auth = fresh_auth(&key);
        assert_eq!(signed(&nodes.apps[first], &auth).await.0, 200);
        for app in &nodes.apps {
            let (s, v) = signed(app, &auth).await;
            assert_eq!((s, v["error"].as_str()), (401, Some("nonce_reused")), "{v}");
        }
    }
    let token = nodes.apps[1].login().await;
    let (s, _, b) = nodes.apps[1]
        .send(
            "DELETE",
            &format!("/users/1/keys/{}", key.id),
            &[("Authorization", &fh(&token))],
            vec![],
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    for app in &nodes.apps {
        until_status(app, &key, 401, Duration::from_secs(1)).await;
    }
}

/// More claims of one key with one timestamp than one signature hash
/// takes (128), through a node's `Cluster` (in process) on a Redis
/// Cluster: their signatures spread over further hashes, and each one
/// claimed again with a new pair (a re-split request) is still refused,
/// as is each pair with a new signature; a claim with both new is taken.
#[tokio::test]
async fn a_signature_is_refused_when_one_seconds_claims_overflow_its_hash() {
    use armor_server::cluster::{ClaimError, RedisMode};

    let redis = RedisCluster::start();
    let node = InProcessNode::start(&redis.url(), &RedisMode::Cluster, now()).await;
    // One second after the epoch marker the start-up set.
    let ts = node.epoch + 1;
    let claim = |pair: u128, signature: u128| node.claim(pair, signature, ts);
    // Spread fingerprints, as keyed hashes are.
    let fp = |i: u128, salt: u128| {
        (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ salt
    };
    let n = 600;
    for i in 0..n {
        assert_eq!(claim(fp(i, 1), fp(i, 2)).await, Ok(()), "claim {i}");
    }
    for i in 0..n {
        let again = claim(fp(i + n, 1), fp(i, 2)).await;
        assert_eq!(again, Err(ClaimError::Reused), "signature {i}");
        let again = claim(fp(i, 1), fp(i + n, 2)).await;
        assert_eq!(again, Err(ClaimError::Reused), "pair {i}");
    }
    assert_eq!(claim(fp(3 * n, 1), fp(3 * n, 2)).await, Ok(()));
}

/// On a Redis Cluster every shard's settings are read: one primary that
/// may evict, not the one holding the key's claims, refuses every signed
/// request until it is back to `noeviction`.
#[tokio::test]
async fn one_cluster_primary_that_may_evict_refuses_claims_until_it_is_noeviction() {
    let redis = RedisCluster::start();
    let url = redis.url();
    let app = spawn_app_with(&["--redis-mode", "cluster", "--redis-url", &url]).await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "evicting-shard").await;
    assert_eq!(signed(&app, &fresh_auth(&key)).await.0, 200);

    let holder = redis.primary_of(&armor_server::cluster::epoch_key_of(&key.id));
    let other = (0..redis.nodes.len())
        .find(|&i| i != holder && !redis.ranges_of(i).is_empty())
        .expect("another primary");
    let port = redis.nodes[other].port;
    let set = |k: &str, v: &str| cli(port, &["CONFIG", "SET", k, v]);
    assert_eq!(set("maxmemory", "64mb"), "OK");
    assert_eq!(set("maxmemory-policy", "allkeys-lru"), "OK");
    // Read within the 10 s period of the check.
    until_status(&app, &key, 503, Duration::from_secs(15)).await;
    assert_eq!(set("maxmemory-policy", "noeviction"), "OK");
    until_status(&app, &key, 200, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cluster_primary_killed_after_a_claim_fails_closed_then_resumes_and_refuses_the_replay() {
    let mut redis = RedisCluster::start();
    let url = redis.url();
    let nodes = three_nodes(&["--redis-mode", "cluster", "--redis-url", &url], &[]).await;
    let key = nodes.key("failover").await;
    let auth = fresh_auth(&key);
    assert_eq!(signed(&nodes.apps[0], &auth).await.0, 200);

    let holder = redis.primary_of(&armor_server::cluster::epoch_key_of(&key.id));
    let killed = Instant::now();
    redis.nodes[holder].kill9();
    let f = through_failover(&nodes, &key, &auth, killed).await;
    for app in &nodes.apps {
        let (s, v) = signed(app, &auth).await;
        assert_eq!(s, 401, "the replay after the failover: {v}");
    }
    eprintln!("Redis Cluster primary killed: {f:?}");
    assert!(f.unavailable > 0, "no request met the failover: {f:?}");
}

/// A primary behind Sentinel that needs a password: without
/// `ARMOR_REDIS_SENTINEL_MASTER_PASSWORD` signed requests get 503 (nothing
/// is accepted unchecked); with it they are served. The password is never
/// logged (the scan on drop).
#[tokio::test]
async fn a_sentinel_primary_with_a_password_is_reached_with_the_masters_password() {
    const PASSWORD: &str = "sentinel-primary-password-7f3a";
    let redis = RedisSentinel::start_with_password(Some(PASSWORD));
    let args = redis.serve_args();
    let mut app = spawn_app_with(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    app.remember_secret(PASSWORD);
    let token = app.login().await;
    let key = app.create_key(&token, 1, "sentinel-auth").await;
    let (s, v) = signed(&app, &fresh_auth(&key)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("replay_store_unavailable")),
        "{v}"
    );
    app.restart_with_env("ARMOR_REDIS_SENTINEL_MASTER_PASSWORD", PASSWORD);
    until_status(&app, &key, 200, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_sentinel_failover_fails_closed_then_resumes_and_refuses_the_replay() {
    let mut redis = RedisSentinel::start();
    let args = redis.serve_args();
    let nodes = three_nodes(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let key = nodes.key("sentinel").await;
    let auth = fresh_auth(&key);
    assert_eq!(signed(&nodes.apps[0], &auth).await.0, 200);

    let killed = Instant::now();
    redis.primary.kill9();
    let f = through_failover(&nodes, &key, &auth, killed).await;
    for app in &nodes.apps {
        let (s, v) = signed(app, &auth).await;
        assert_eq!(s, 401, "the replay after the failover: {v}");
    }
    let role = cli(redis.replica.port, &["ROLE"]);
    assert!(
        role.starts_with("master"),
        "the replica was not promoted: {role}"
    );
    eprintln!("Sentinel primary killed: {f:?}");
    assert!(f.unavailable > 0, "no request met the failover: {f:?}");
}

/// A promoted replica can lack the last claims (replication is
/// asynchronous). Simulated on one server: its replication id changes
/// (`DEBUG CHANGE-REPL-ID`, what a promotion does) and the claims vanish,
/// the epoch markers staying. The replay is refused, as older than the
/// marker the claim script moves when it sees the new id.
#[tokio::test]
async fn a_promoted_replica_missing_the_last_claims_still_refuses_their_replay() {
    let redis = Redis::start_debuggable();
    let url = redis.url();
    let nodes = three_nodes(&["--redis-url", &url], &[]).await;
    let key = nodes.key("promoted").await;
    let auth = fresh_auth(&key);
    assert_eq!(signed(&nodes.apps[0], &auth).await.0, 200);

    assert_eq!(cli(redis.port, &["DEBUG", "CHANGE-REPL-ID"]), "OK");
    // Every claim gone, the markers (`a{..}m`, `a{..}r`) kept.
    let lost: usize = cli(
        redis.port,
        &[
            "EVAL",
            "local n = 0 for _, k in ipairs(redis.call('KEYS', 'a{*')) do \
             if #k ~= 6 then redis.call('DEL', k) n = n + 1 end end return n",
            "0",
        ],
    )
    .parse()
    .unwrap();
    assert!(lost >= 2, "the claim's keys were not found");
    for app in &nodes.apps {
        let (s, v) = signed(app, &auth).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("timestamp_out_of_window")),
            "a replay after the primary changed: {v}"
        );
    }
    for app in &nodes.apps {
        until_status(app, &key, 200, Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_under_traffic_accepts_no_replay() {
    let redis = RedisCluster::start();
    let url = redis.url();
    let nodes = three_nodes(&["--redis-mode", "cluster", "--redis-url", &url], &[]).await;
    let keys = [nodes.key("r1").await, nodes.key("r2").await];
    // Move the slots of the first key's bucket, and those before it,
    // from its primary to another (`reshard` takes the lowest first).
    let tag_key = armor_server::cluster::epoch_key_of(&keys[0].id);
    let from = redis.primary_of(&tag_key);
    let slot = redis.slot_of(&tag_key);
    let count: u32 = redis
        .ranges_of(from)
        .iter()
        .filter(|(a, _)| *a <= slot)
        .map(|&(a, b)| u32::from(b.min(slot) - a) + 1)
        .sum();
    let to = [0, 8191, 16383]
        .map(|slot| redis.primary_of_slot(slot))
        .into_iter()
        .find(|&i| i != from)
        .unwrap();
    let id = |i: usize| cli(redis.nodes[i].port, &["CLUSTER", "MYID"]);
    let (from_id, to_id) = (id(from), id(to));
    let seed = format!("127.0.0.1:{}", redis.nodes[0].port);
    let reshard = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &seed])
        .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
        .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
        .args(["--cluster-pipeline", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reshard = std::sync::Arc::new(std::sync::Mutex::new(reshard));

    let mut accepted: Vec<String> = Vec::new();
    let mut unavailable = 0;
    let mut before_epoch = 0;
    let mut n = 0usize;
    let started = Instant::now();
    loop {
        let done = reshard.lock().unwrap().try_wait().unwrap();
        n += 1;
        let app = &nodes.apps[n % 3];
        let key = &keys[n % 2];
        let auth = fresh_auth(key);
        let (s, v) = signed(app, &auth).await;
        match (s, v["error"].as_str()) {
            (200, _) => accepted.push(auth),
            (503, Some("replay_store_unavailable")) => unavailable += 1,
            // A moved bucket lands on a primary with another replication
            // id: its epoch marker moves once (docs/deployment.md).
            (401, Some("timestamp_out_of_window")) => before_epoch += 1,
            _ => panic!("request {n} during the reshard: {s} {v}"),
        }
        // Replays of requests accepted earlier, on another node.
        if let Some(old) = accepted.get(n / 2) {
            let (s, v) = signed(&nodes.apps[(n + 1) % 3], old).await;
            assert_refused(s, &v, "a replay during the reshard");
        }
        if let Some(status) = done {
            assert!(status.success(), "redis-cli --cluster reshard failed");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "reshard too long"
        );
    }
    assert_ne!(
        redis.primary_of(&tag_key),
        from,
        "the bucket's slot did not move"
    );
    for (i, old) in accepted.iter().enumerate() {
        // Refused, once the client has caught up with the new slot map.
        let app = &nodes.apps[i % 3];
        let asked = Instant::now();
        loop {
            let (s, v) = signed(app, old).await;
            assert_refused(s, &v, "a replay after the reshard");
            if s == 401 {
                break;
            }
            assert!(asked.elapsed() < Duration::from_secs(10), "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "reshard of {count} slots: {} accepted, {unavailable} answered 503, \
         {before_epoch} refused as before a moved epoch marker, all replays refused",
        accepted.len()
    );
    // 503s are bounded tightly. The 401s are requests signed in the second
    // a moved bucket's marker was set (by design, docs/deployment.md): how
    // many depends on how long the reshard takes on a loaded machine.
    assert!(
        unavailable * 10 <= n,
        "{unavailable} of {n} requests answered 503"
    );
    assert!(
        (unavailable + before_epoch) * 3 <= n,
        "{unavailable} + {before_epoch} of {n} requests refused"
    );
}

/// Wrong signatures for one key from one address, spread over three nodes
/// on a Redis Cluster: the refused-attempt limit (burst 5 here, a window
/// far longer than the test) holds for all of them together, not five per
/// node. 12 attempts: at most 5 + 3 refused with 401 (each node lets one
/// through after the limit, the one that tells it), and every node answers
/// 429 now.
#[tokio::test]
async fn refused_attempts_are_limited_across_three_nodes() {
    let redis = RedisCluster::start();
    let url = redis.url();
    let nodes = three_nodes(
        &["--redis-mode", "cluster", "--redis-url", &url],
        &["--auth-failure-limit", "0.0001:5"],
    )
    .await;
    let key = nodes.key("guessed").await;
    let wrong = Key {
        id: key.id.clone(),
        secret: "apsk_wrong".into(),
    };
    let bad = || sign(&wrong, "GET", "/me", b"", &fresh_nonce(), now());
    let mut refused = 0;
    for (s, v) in round_the_nodes(&nodes, 12, |_| bad()).await {
        match s {
            401 => refused += 1,
            429 => {}
            _ => panic!("{s} {v}"),
        }
    }
    // At most the limit plus one per node.
    assert!(refused <= 5 + 3, "{refused} refusals went through");
    for app in &nodes.apps {
        let (s, v) = signed(app, &bad()).await;
        assert_eq!((s, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    }
}

/// The gateway's rate limit of a key (burst 4, a window far longer than
/// the test) with requests spread over three nodes on a Redis Cluster:
/// 4 forwarded in all, not 4 per node.
#[tokio::test]
async fn a_gateway_rate_limit_holds_across_three_nodes() {
    let redis = RedisCluster::start();
    let url = redis.url();
    let up = crate::gateway::spawn_upstream().await;
    let nodes = three_nodes(
        &["--redis-mode", "cluster", "--redis-url", &url],
        &["--upstream", &up.url, "--rate-limit", "0.0001:4"],
    )
    .await;
    let key = nodes.key("metered").await;
    let mut accepted = 0;
    for i in 0..9 {
        let auth = sign(&key, "GET", "/orders", b"", &fresh_nonce(), now());
        let (s, _, v) = nodes.apps[i % 3]
            .send("GET", "/orders", &[("Authorization", &auth)], vec![])
            .await;
        match (s, v["error"].as_str()) {
            (200, _) => accepted += 1,
            (429, Some("rate_limited")) => {}
            _ => panic!("{s} {v}"),
        }
    }
    assert_eq!(accepted, 4, "the limit is not shared");
    assert_eq!(up.seen().len(), 4);
}

#[tokio::test]
async fn a_keys_rate_limit_holds_across_three_nodes() {
    let redis = RedisCluster::start();
    let url = redis.url();
    let nodes = three_nodes(&["--redis-mode", "cluster", "--redis-url", &url], &[]).await;
    // A day's window: the test crosses its end only if run at midnight UTC.
    let key = nodes
        .key_with(serde_json::json!({
            "name": "metered",
            "rateLimit": {"limit": 8, "windowSeconds": 86_400},
        }))
        .await;
    let answers = round_the_nodes(&nodes, 12, |_| fresh_auth(&key)).await;
    let mut accepted = 0;
    for (s, v) in &answers {
        match (*s, v["error"].as_str()) {
            (200, _) => accepted += 1,
            (429, Some("rate_limited")) => {}
            _ => panic!("{s} {v}"),
        }
    }
    // Counted in Redis: each node's first accepted request (when it was
    // seen to serve the key) used one of the eight, and no node may add
    // eight of its own.
    assert_eq!(accepted, 5, "the key's limit is not shared: {answers:?}");
}

/// A node whose clock runs 400 s behind accepts, by its own clock, a
/// timestamp whose window has already ended: Redis's clock decides, so
/// the claim is refused (and no claim can expire before its window ends
/// on Redis's clock, whatever the claiming node's clock says).
#[tokio::test]
async fn a_node_whose_clock_runs_behind_cannot_claim_a_request_whose_window_has_ended() {
    use armor_psk::Fingerprints;
    use armor_server::cluster::{ClaimError, RedisMode};

    let redis = Redis::start();
    let behind = now() - 400;
    let node = InProcessNode::start(&redis.url(), &RedisMode::Single, behind).await;
    let cluster = &node.cluster;
    // The marker the start-up set is Redis's now, which alone would refuse
    // any timestamp of the slow node's: moved back to the slow node's now,
    // so that only the window's end on Redis's clock can refuse the claim.
    let marker = "a{00}m";
    assert_eq!(cli(redis.port, &["SET", marker, &behind.to_string()]), "OK");
    // The marker moved: a claim at the second the start-up had set, inside
    // its window on every clock, is now taken.
    let control = Fingerprints {
        pair: 0x0bad_cafe_0bad_cafe_0bad_cafe_0bad_cafe,
        signature: 0x0dec_afba_d0de_cafb_ad0d_ecaf_bad0_deca,
    };
    let at = node.epoch;
    assert_eq!(
        cluster.claim("key", &control, at, at + 300, at).await,
        Ok(())
    );
    // 50 s inside the slow node's window, 50 s past its end in truth.
    let ts = behind + 50;
    let fp = Fingerprints {
        pair: 0x1234_5678_9abc_def0_1234_5678_9abc_def0,
        signature: 0x0fed_cba9_8765_4321_0fed_cba9_8765_4321,
    };
    let answer = cluster.claim("key", &fp, ts, ts + 300, behind + 1).await;
    assert_eq!(answer, Err(ClaimError::BeforeEpoch));
}
