//! Key expiry, rolling and per-key rate windows on an injected clock: the
//! real front layer and core in process, on a `ManualClock`, so that a key's
//! life can run out between two requests to the second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use armor_psk::{SecretKey, SignableRequest, SigningKey};
use armor_server::clock::ManualClock;
use armor_server::core::keyspec::{KeySpec, RateLimitSpec};
use armor_server::core::{Core, NewKey, Principal};
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

const T0: u64 = 1_700_000_000;

struct Env {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    core: Arc<Core>,
    owner: Principal,
    nonce: std::sync::atomic::AtomicU64,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (core, owner) = Core::scratch_on(dir.path(), clock.clone(), 1024)
        .await
        .unwrap();
    Env {
        _dir: dir,
        clock,
        core: Arc::new(core),
        owner,
        nonce: Default::default(),
    }
}

impl Env {
    async fn key(&self, spec: KeySpec) -> NewKey {
        self.core
            .keys
            .create_key(&self.owner, 1, "clocked", &spec, None)
            .await
            .unwrap()
    }

    /// `GET /me` signed with `key` at the clock's time, from `peer`:
    /// the status, the `error` code and the headers.
    async fn call(&self, key: &NewKey, peer: &str) -> (u16, String, axum::http::HeaderMap) {
        let n = self
            .nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let signing = SigningKey::new(&SecretKey::new(key.secret.to_string()));
        let auth = SignableRequest {
            key_id: &key.row.id,
            method: "GET",
            request_path: "/me",
            nonce: &format!("nonce-{n}"),
            timestamp: self.clock.now_secs(),
            body: b"",
        }
        .authorization(&signing);
        let mut req = Request::get("/me")
            .header("authorization", auth)
            .body(Body::empty())
            .unwrap();
        let peer = peer.parse::<std::net::SocketAddr>().unwrap().ip();
        req.extensions_mut()
            .insert(armor_server::conn::client::Client {
                peer,
                peer_trusted: false,
                ip: peer,
            });
        let resp = armor_server::web::app(self.core.clone(), false, None, None)
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = v["error"].as_str().unwrap_or_default().to_owned();
        (status, code, headers)
    }
}

trait Now {
    fn now_secs(&self) -> u64;
}

impl Now for ManualClock {
    fn now_secs(&self) -> u64 {
        armor_server::clock::Clock::now(self)
    }
}

const HERE: &str = "127.0.0.1:40000";

#[tokio::test]
async fn a_key_expires_at_its_second_mid_run() {
    let e = env().await;
    let key = e
        .key(KeySpec {
            expires_in: Some(3600),
            ..Default::default()
        })
        .await;
    assert_eq!(e.call(&key, HERE).await.0, 200);
    e.clock.advance(3599);
    assert_eq!(e.call(&key, HERE).await.0, 200);
    e.clock.advance(1);
    let (s, code, h) = e.call(&key, HERE).await;
    assert_eq!((s, code.as_str()), (401, "key_expired"));
    assert_eq!(h["www-authenticate"], "ARMOR-PSK");
    let listed = e.core.keys.list_keys(&e.owner, 1).await.unwrap();
    assert_eq!(
        armor_server::core::restrictions::status(&listed[0].rules, e.clock.now_secs()),
        "Expired"
    );
}

#[tokio::test]
async fn a_rolled_key_and_its_successor_both_work_until_the_grace_period_ends() {
    let e = env().await;
    let old = e.key(KeySpec::default()).await;
    let (new, from) = e
        .core
        .keys
        .roll_key(&e.owner, 1, &old.row.id, Some(60), None)
        .await
        .unwrap();
    assert_eq!(from, old.row.id);
    e.clock.advance(30);
    assert_eq!(e.call(&old, HERE).await.0, 200);
    assert_eq!(e.call(&new, HERE).await.0, 200);
    e.clock.advance(29);
    assert_eq!(e.call(&old, HERE).await.0, 200);
    e.clock.advance(1);
    assert_eq!(e.call(&old, HERE).await.1, "key_expired");
    assert_eq!(e.call(&new, HERE).await.0, 200);
    // Days later the successor still works: it had no expiry.
    e.clock.advance(30 * 86_400);
    assert_eq!(e.call(&new, HERE).await.0, 200);
}

#[tokio::test]
async fn ipv6_ranges_include_and_exclude_the_peer() {
    let e = env().await;
    let key = e
        .key(KeySpec {
            allowed_ips: Some(vec!["::1/128".into(), "2001:db8:1::/48".into()]),
            ..Default::default()
        })
        .await;
    for peer in ["[::1]:40000", "[2001:db8:1:ffff::9]:40000"] {
        assert_eq!(e.call(&key, peer).await.0, 200, "{peer}");
    }
    for peer in [HERE, "[2001:db8:2::1]:40000", "[::2]:40000"] {
        let (s, code, _) = e.call(&key, peer).await;
        assert_eq!((s, code.as_str()), (403, "ip_not_allowed"), "{peer}");
    }
}

#[tokio::test]
async fn a_rate_window_refuses_past_its_limit_and_opens_again_when_it_ends() {
    let e = env().await;
    let key = e
        .key(KeySpec {
            rate_limit: Some(RateLimitSpec {
                limit: 2,
                window_seconds: 60,
            }),
            ..Default::default()
        })
        .await;
    // T0 is 20 s into its minute.
    assert_eq!(T0 % 60, 20);
    assert_eq!(e.call(&key, HERE).await.0, 200);
    assert_eq!(e.call(&key, HERE).await.0, 200);
    e.clock.advance(10);
    let (s, code, h) = e.call(&key, HERE).await;
    assert_eq!((s, code.as_str()), (429, "rate_limited"));
    assert_eq!(h["retry-after"], "30");
    assert_eq!(h["ratelimit-reset"], "30");
    assert_eq!(h["ratelimit-limit"], "2");
    assert_eq!(h["ratelimit-remaining"], "0");
    e.clock.advance(30);
    assert_eq!(e.call(&key, HERE).await.0, 200);
}
