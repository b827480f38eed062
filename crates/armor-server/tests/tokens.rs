//! FH-AUTH tokens checked from memory, with a `ManualClock`: idle and
//! absolute expiry hold exactly as when every request read the store, and
//! the last use written behind reaches the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use armor_server::clock::ManualClock;
use armor_server::core::{Core, CoreConfig, TOKEN_IDLE_TTL, TOKEN_MAX_TTL};
use armor_server::crypto;
use armor_server::store::Store;
use armor_server::Error;

const T0: u64 = 1_700_000_000;
const ADMIN: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Env {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    core: Arc<Core>,
    store: Store,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("armor.db").to_str().unwrap())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    store
        .bootstrap(ADMIN, &crypto::hash_password(PASSWORD).unwrap(), T0)
        .await
        .unwrap();
    let core = Core::new(
        store.clone(),
        &dir.path().join("master.key"),
        clock.clone(),
        Arc::new(armor_psk::MemoryReplayGuard::new(1024)),
        CoreConfig {
            max_body: 1 << 20,
            require_signed_query: false,
        },
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        clock,
        core: Arc::new(core),
        store,
    }
}

impl Env {
    async fn token(&self) -> String {
        let code = self
            .core
            .sessions
            .authorize(ADMIN, PASSWORD, None, None)
            .await
            .unwrap();
        self.core
            .sessions
            .exchange_code(&code, None)
            .await
            .unwrap()
            .to_string()
    }

    async fn accepted(&self, token: &str) -> bool {
        match self.core.sessions.authenticate_token(token).await {
            Ok(t) => {
                assert_eq!(t.user_id, 1);
                true
            }
            Err(Error::InvalidToken) => false,
            Err(e) => panic!("{e}"),
        }
    }

    async fn stored_last_seen(&self, token: &str) -> i64 {
        self.store
            .token(&crypto::token_hash(token))
            .await
            .unwrap()
            .unwrap()
            .last_seen
    }
}

#[tokio::test]
async fn a_token_idle_for_longer_than_the_idle_limit_is_refused_even_when_cached() {
    let e = env().await;
    let token = e.token().await;
    assert!(e.accepted(&token).await);
    e.clock.advance(TOKEN_IDLE_TTL);
    assert!(e.accepted(&token).await, "at the limit");
    // Used at the limit: slid.
    e.clock.advance(TOKEN_IDLE_TTL);
    assert!(e.accepted(&token).await, "slid by the previous use");
    e.clock.advance(TOKEN_IDLE_TTL + 1);
    assert!(!e.accepted(&token).await, "idle past the limit");
}

#[tokio::test]
async fn uses_slide_the_idle_expiry_through_the_store_written_behind() {
    let e = env().await;
    let token = e.token().await;
    assert!(e.accepted(&token).await);
    let t0 = e.stored_last_seen(&token).await;
    // Far from idle expiry: queued, not written per request.
    e.clock.advance(100);
    assert!(e.accepted(&token).await);
    assert_eq!(e.stored_last_seen(&token).await, t0);
    e.core.sessions.flush_token_touches().await.unwrap();
    assert_eq!(e.stored_last_seen(&token).await, t0 + 100);
    // Queued uses count before they are written: 100 + 850 s later the
    // first use alone would have expired the token.
    e.clock.advance(500);
    assert!(e.accepted(&token).await);
    e.clock.advance(850);
    assert!(e.accepted(&token).await);
    e.core.sessions.flush_token_touches().await.unwrap();
    assert_eq!(e.stored_last_seen(&token).await, t0 + 1450);
    // Close to idle expiry: written at once, for the other nodes.
    e.clock.advance(TOKEN_IDLE_TTL - 10);
    assert!(e.accepted(&token).await);
    assert_eq!(
        e.stored_last_seen(&token).await,
        t0 + 1450 + TOKEN_IDLE_TTL as i64 - 10
    );
}

#[tokio::test]
async fn a_token_past_its_absolute_expiry_is_refused_even_when_cached() {
    let e = env().await;
    let token = e.token().await;
    let mut elapsed = 0;
    while elapsed + 600 <= TOKEN_MAX_TTL {
        e.clock.advance(600);
        elapsed += 600;
        assert!(e.accepted(&token).await, "at {elapsed} s");
    }
    e.clock.advance(TOKEN_MAX_TTL - elapsed + 1);
    assert!(!e.accepted(&token).await, "past the absolute expiry");
}
