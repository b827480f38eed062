//! The interfaces through which the domain uses what several nodes may
//! share: the replay store (claims of ARMOR-PSK fingerprints), the
//! invalidation channel (every node told that a user's keys or state
//! changed) and counters (limits shared by every node).
//!
//! One node uses the memory implementations: any
//! [`armor_psk::ReplayGuard`] (the server's is
//! [`armor_psk::MemoryReplayGuard`]) is a [`ReplayStore`], and there is no
//! channel (what changed is dropped from this node's caches directly).
//! Several nodes use the Redis ones, [`crate::cluster::Cluster`]. The
//! implementations import nothing of the domain: the channel's subscriber
//! calls back through an [`InvalidationHandler`] that the domain provides.
//!
//! The hot path costs one virtual call ([`ReplayStore::claim`]); an answer
//! known at once (the memory store, or a refusal) is [`Claim::Done`],
//! without allocation, and only a store that answers later (Redis) hands a
//! [`ClaimWait`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use armor_psk::{Fingerprints, ReplayError, ReplayGuard};
use tokio::sync::oneshot;

use crate::error::Error;

/// A boxed future, for the calls off the hot path (invalidation).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// A fingerprint is held: `nonce_reused`.
    Reused,
    /// The timestamp is not after the shared store's epoch marker: the
    /// store lost its memory since; `timestamp_out_of_window`.
    BeforeEpoch,
    /// No clear answer: `replay_store_unavailable`.
    Unavailable,
}

/// The answer to a claim: now, or later.
#[derive(Debug)]
pub enum Claim {
    /// Known at once.
    Done(Result<(), ClaimError>),
    /// Sent to a shared store; [`ClaimWait::wait`] for it.
    Waiting(ClaimWait),
}

impl Claim {
    /// The answer, waiting for it if need be.
    pub async fn outcome(self) -> Result<(), ClaimError> {
        match self {
            Claim::Done(answer) => answer,
            Claim::Waiting(wait) => wait.wait().await,
        }
    }
}

/// A claim sent away, answered through a [`ClaimAnswer`] within a time
/// limit.
#[derive(Debug)]
pub struct ClaimWait {
    answer: oneshot::Receiver<Result<(), ClaimError>>,
    within: Duration,
}

/// The other end of a [`ClaimWait`]. Dropped unanswered, the claim is
/// [`ClaimError::Unavailable`].
#[derive(Debug)]
pub struct ClaimAnswer(oneshot::Sender<Result<(), ClaimError>>);

impl ClaimWait {
    /// A claim to be answered within `within`, else unavailable.
    pub fn channel(within: Duration) -> (ClaimAnswer, ClaimWait) {
        let (tx, rx) = oneshot::channel();
        (ClaimAnswer(tx), ClaimWait { answer: rx, within })
    }

    /// The answer; [`ClaimError::Unavailable`] if none comes in time.
    pub async fn wait(self) -> Result<(), ClaimError> {
        match tokio::time::timeout(self.within, self.answer).await {
            Ok(Ok(answer)) => answer,
            // Dropped unanswered (the store's side logged why).
            Ok(Err(_)) => Err(ClaimError::Unavailable),
            Err(_) => {
                tracing::warn!("replay claim timed out");
                Err(ClaimError::Unavailable)
            }
        }
    }
}

impl ClaimAnswer {
    pub fn send(self, answer: Result<(), ClaimError>) {
        let _ = self.0.send(answer);
    }
}

/// Where the fingerprints of accepted requests are claimed.
pub trait ReplayStore: Send + Sync {
    /// Claims both fingerprints of a verified request made with `key_id`
    /// whose timestamp is `timestamp`, until the Unix second `until`
    /// (inclusive); `now` is the caller's clock. A shared store may use
    /// the key id to keep both claims in one place.
    fn claim(&self, key_id: &str, fp: &Fingerprints, timestamp: u64, until: u64, now: u64)
        -> Claim;

    /// Starts loading what a claim of `fp` will read, before the signature
    /// is verified (see [`ReplayGuard::prefetch`]). A hint; a shared store
    /// has nothing to load.
    fn prefetch(&self, _fp: &Fingerprints) {}
}

/// The memory implementation: a replay guard of this process.
impl<G: ReplayGuard> ReplayStore for G {
    #[inline]
    fn claim(
        &self,
        _key_id: &str,
        fp: &Fingerprints,
        _timestamp: u64,
        until: u64,
        now: u64,
    ) -> Claim {
        Claim::Done(
            ReplayGuard::claim(self, fp, until, now).map_err(|e| match e {
                ReplayError::Reused => ClaimError::Reused,
                ReplayError::Unavailable => ClaimError::Unavailable,
            }),
        )
    }

    fn prefetch(&self, fp: &Fingerprints) {
        ReplayGuard::prefetch(self, fp);
    }
}

/// The invalidation channel, as the domain sends on it.
pub trait Invalidation: Send + Sync {
    /// Tells every node, this one included, to re-read a user's keys and
    /// drop what it cached about them. Call it after the change is written.
    /// Retried in the background for a while if the channel does not take
    /// it at once.
    fn user_changed(self: Arc<Self>, user_id: i64) -> BoxFuture<'static, ()>;
}

/// One counted hit of a [`Counters`] limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The count, this hit included, is at most the limit.
    pub allowed: bool,
    /// Hits left in the window.
    pub remaining: u64,
    /// The Unix second the window ends.
    pub reset: u64,
}

/// The shared counter could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterUnavailable;

/// Fixed-window counters: the memory implementation counts on this node
/// ([`crate::limit::MemoryCounters`]), the Redis one on every node at
/// once ([`crate::cluster::Cluster`]). Limits built on it (refused
/// attempts, per-key rate limits) need only this method.
pub trait Counters: Send + Sync {
    /// Counts one hit of `key` in the window of `window` seconds that
    /// holds `now` (windows start at multiples of `window`); allowed while
    /// the count is at most `limit`.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        window: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<Hit, CounterUnavailable>>;
}

/// The hit of a fixed window given the count in it.
pub fn window_hit(count: u64, limit: u64, window: u64, now: u64) -> Hit {
    let window = window.max(1);
    Hit {
        allowed: count <= limit,
        remaining: limit.saturating_sub(count),
        reset: (now / window + 1) * window,
    }
}

/// What the invalidation channel's subscriber calls on this node.
pub trait InvalidationHandler: Send + Sync {
    /// Re-reads one user's active keys (`None`: every key) from the shared
    /// database, dropping what was cached about them; the number of keys
    /// read.
    fn reload_keys(&self, user_id: Option<i64>) -> BoxFuture<'_, Result<usize, Error>>;
}

/// Where a key's requests are counted against its `rateLimit`: fixed
/// windows of `window` seconds (aligned on multiples of it), one counter
/// per key and window.
///
/// The memory implementation ([`crate::limit::KeyWindows`]) counts on this
/// node only; a shared one (Redis) makes the limit hold across nodes.
pub trait KeyRateLimit: Send + Sync {
    /// Counts one request of `key_id` at `now`, if the window has room;
    /// says how the window stands either way. An error is a store that
    /// cannot answer (refused as `replay_store_unavailable`).
    fn hit(
        &self,
        key_id: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> BoxFuture<'static, Result<RateWindow, ClaimError>>;
}

/// A rate window after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Whether the request was counted (it fits the limit).
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in the window after this one.
    pub remaining: u32,
    /// Seconds until the window ends (at least 1).
    pub reset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_memory_guard_answers_at_once_and_a_dropped_answer_is_unavailable() {
        let guard = armor_psk::MemoryReplayGuard::new(16);
        let store: &dyn ReplayStore = &guard;
        let fp = Fingerprints {
            pair: 1,
            signature: 2,
        };
        assert!(matches!(
            store.claim("k", &fp, 10, 20, 10),
            Claim::Done(Ok(()))
        ));
        assert_eq!(
            store.claim("k", &fp, 10, 20, 10).outcome().await,
            Err(ClaimError::Reused)
        );
        let (answer, wait) = ClaimWait::channel(Duration::from_secs(5));
        drop(answer);
        assert_eq!(wait.wait().await, Err(ClaimError::Unavailable));
        let (answer, wait) = ClaimWait::channel(Duration::from_secs(5));
        answer.send(Err(ClaimError::BeforeEpoch));
        assert_eq!(
            Claim::Waiting(wait).outcome().await,
            Err(ClaimError::BeforeEpoch)
        );
    }
}
