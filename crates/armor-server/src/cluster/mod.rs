//! Several stateless `armor serve` nodes: the replay store and the key
//! cache invalidation go through Redis (`--redis-url`), which is one
//! server, a Redis Cluster or a primary watched by Sentinel
//! (`--redis-mode`, [`RedisMode`]).
//!
//! # Replay store
//! Each accepted ARMOR-PSK request claims both its fingerprints only if
//! neither is held, atomically, within [`ROUND_TRIP`]. Both live in one
//! hash-tag bucket chosen by the key id (one bucket on a single server,
//! [`CLUSTER_BUCKETS`] on a cluster), so one script call in one slot
//! claims both: the pair as a key `a{bb}<9 bytes>` with a relative
//! expiry until the timestamp leaves the window, the signature as a field
//! of a small hash `a{bb}s<until>:<n>` (every request whose signature is
//! the same has the same timestamp, so the same `until`; more hashes per
//! second only as the first fill up, see `CLAIM_SCRIPT`) that expires with
//! its last claim. Claims made at the same moment are batched: a few
//! worker tasks each take whatever claims are waiting (up to
//! [`BATCH_MAX`]) and send one script call per bucket, all at once; Redis
//! runs each atomically, claim after claim in order (so two claims of one
//! fingerprint in a batch: the second is a replay). Anything but a clear
//! answer (unreachable, timeout, out of memory, a failover under way) is
//! [`ClaimError::Unavailable`]: the request is refused with 503, never
//! accepted unchecked. Reconnection, MOVED and ASK redirections and
//! topology changes are handled by the client.
//!
//! # Epoch markers
//! Each bucket has an epoch marker `a{bb}m` (a Unix second) and the
//! replication id of the primary that set it, `a{bb}r`. The claim script
//! compares that id with its primary's (`INFO replication`) before any
//! claim: if the marker is missing (a fresh, restarted or flushed shard)
//! or the id differs (a replica was promoted: replication is
//! asynchronous, so it may lack the last claims), the marker moves to
//! now and the id is recorded, in the same script call. Every timestamp at
//! or before the marker is refused, so a request accepted before the loss
//! cannot be replayed after it; the refusal lasts only until the window
//! has passed. Not covered: a request signed with a clock running ahead of
//! the server (timestamp later than the new marker) and accepted before
//! the loss.
//!
//! # Eviction
//! A claim Redis evicts is a replay reopened, so a server with a memory
//! limit and an evicting policy is refused: claims are unavailable while
//! any bucket's server reports one, or until every one has been read
//! (`eviction.rs`).
//!
//! # Invalidation
//! Nodes cache keys (the HMAC state). A change that affects a user's keys
//! (key created or deleted, user disabled, enabled or deleted) is published
//! on `armor:invalidate` as `user:<id>`; every node, the sender included,
//! re-reads that user's active keys from the shared database and drops the
//! user's cached status, permissions and profile (the domain sends the
//! same message for role and name changes; cached answers expire after a
//! second in any case). On a cluster every node hears every message, so a
//! node subscribes on any one. While the subscription is down (and until
//! the cache has been re-read after it comes back) claims are refused, so
//! a node that may have missed a message accepts nothing.
//!
//! # Interfaces
//! [`Cluster`] is the Redis implementation of
//! [`ReplayStore`](crate::ports::ReplayStore),
//! [`Invalidation`](crate::ports::Invalidation) and
//! [`Counters`](crate::ports::Counters); what a message means on this node
//! is up to the [`InvalidationHandler`] given to [`Cluster::spawn`].
//! Nothing here knows the domain.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::Error;
pub use crate::ports::ClaimError;
use crate::ports::InvalidationHandler;

mod backend;
mod channel;
mod claims;
mod counters;
mod eviction;

use backend::{Backend, Conn};
pub use backend::{MasterAuth, RedisClientCert, RedisMode, RedisTls, CLUSTER_BUCKETS};
pub use channel::{user_message, CHANNEL};
pub use claims::BATCH_MAX;
use claims::{claim_worker, ClaimQueue, Pending, CLAIM_QUEUE, CLAIM_SCRIPT, CLAIM_WORKERS};

/// The epoch marker of a key id's bucket on a Redis Cluster: the key
/// whose slot holds every claim made with that key id.
pub fn epoch_key_of(key_id: &str) -> String {
    let bucket = claims::bucket_of(key_id, CLUSTER_BUCKETS);
    String::from_utf8_lossy(&claims::bucket_key(bucket, b"m")).into_owned()
}

/// The longest one claim (or publish) may take before the request is
/// refused with 503.
pub const ROUND_TRIP: Duration = Duration::from_millis(250);

/// The Redis side of a node: replay claims, the epoch markers, shared
/// counters and the invalidation channel.
pub struct Cluster {
    backend: Backend,
    buckets: u16,
    pool: Box<[Mutex<Option<Conn>>]>,
    next: AtomicUsize,
    /// The subscription is live and the key cache was re-read since it
    /// (re)started.
    in_sync: AtomicBool,
    /// A server may evict claims, or that is not known yet (see
    /// `eviction.rs`): claims are refused.
    evicting: AtomicBool,
    /// The refusal for eviction was logged.
    eviction_logged: AtomicBool,
    /// An epoch marker moved (a new server): check eviction again.
    recheck_eviction: AtomicBool,
    script: redis::Script,
    counter_script: redis::Script,
    memory_script: redis::Script,
    claims: tokio::sync::mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("connections", &self.pool.len())
            .field("buckets", &self.buckets)
            .field("in_sync", &self.in_sync.load(Ordering::Relaxed))
            .finish()
    }
}

impl Cluster {
    /// Prepares the client for `url` (comma-separated nodes or sentinels
    /// for a cluster or Sentinel) with `connections` pooled connections
    /// and tries to connect them once; what fails is retried in the
    /// background by [`Cluster::spawn`]. Only a malformed URL is an error:
    /// an unreachable Redis at start-up means 503s until it is reachable.
    pub async fn new(url: &str, connections: usize) -> Result<Arc<Self>, Error> {
        Self::with_mode(url, &RedisMode::Single, connections).await
    }

    /// [`Cluster::new`] for any [`RedisMode`].
    pub async fn with_mode(
        url: &str,
        mode: &RedisMode,
        connections: usize,
    ) -> Result<Arc<Self>, Error> {
        Self::with_tls(url, mode, None, connections).await
    }

    /// [`Cluster::with_mode`] with `certs` for `rediss://` servers: the
    /// authorities their certificates are checked against rather than the
    /// system's, a client certificate for servers that ask for one.
    pub async fn with_tls(
        url: &str,
        mode: &RedisMode,
        certs: Option<&RedisTls>,
        connections: usize,
    ) -> Result<Arc<Self>, Error> {
        let backend = Backend::new(url, mode, certs)?;
        let (claims, queue) = tokio::sync::mpsc::channel(CLAIM_QUEUE);
        let cluster = Arc::new(Cluster {
            backend,
            buckets: mode.buckets(),
            pool: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            in_sync: AtomicBool::new(false),
            evicting: AtomicBool::new(true),
            eviction_logged: AtomicBool::new(false),
            recheck_eviction: AtomicBool::new(false),
            script: redis::Script::new(CLAIM_SCRIPT),
            counter_script: redis::Script::new(counters::COUNTER_SCRIPT),
            memory_script: redis::Script::new(eviction::MEMORY_SCRIPT),
            claims,
        });
        let queue: ClaimQueue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..CLAIM_WORKERS {
            tokio::spawn(claim_worker(Arc::downgrade(&cluster), queue.clone()));
        }
        let _ = cluster.fill_pool().await;
        Ok(cluster)
    }

    /// Connects the empty pool slots; returns whether all are connected
    /// now, and whether any connection was made.
    async fn fill_pool(&self) -> (bool, bool) {
        let mut made = false;
        for slot in self.pool.iter() {
            if lock(slot).is_some() {
                continue;
            }
            match tokio::time::timeout(ROUND_TRIP * 4, self.backend.connect()).await {
                Ok(Ok(conn)) => {
                    *lock(slot) = Some(conn);
                    made = true;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot connect to Redis");
                    return (false, made);
                }
                Err(_) => {
                    tracing::warn!("cannot connect to Redis: timed out");
                    return (false, made);
                }
            }
        }
        (true, made)
    }

    /// A pooled connection and its slot.
    fn conn(&self) -> Option<(usize, Conn)> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let at = (start + i) % n;
            lock(&self.pool[at]).clone().map(|c| (at, c))
        })
    }

    /// A connection that failed: dropped, for the pool to make again,
    /// when it does not reconnect on its own (Sentinel: the primary may
    /// have changed).
    fn failed(&self, slot: usize) {
        if !self.backend.reconnects_itself() {
            *lock(&self.pool[slot]) = None;
        }
    }

    /// Whether claims can be answered now (connected, subscribed, cache
    /// re-read, and no server may evict them).
    pub fn ready(&self) -> bool {
        self.in_sync.load(Ordering::Acquire) && !self.evicting() && self.conn().is_some()
    }

    /// Checks every bucket's epoch marker (setting it where missing or
    /// where the primary changed). Returns the latest marker, and whether
    /// this call moved any.
    pub async fn ensure_epoch(&self, now: u64) -> Result<(u64, bool), Error> {
        let checks = (0..self.buckets).map(|b| self.run_claims(b, &[], now));
        let answers = futures_util::future::join_all(checks).await;
        let mut latest = 0;
        let mut moved = false;
        for a in answers {
            let (epoch, m, _) = a.ok_or(Error::StoreUnavailable)?;
            latest = latest.max(epoch);
            moved |= m;
        }
        Ok((latest, moved))
    }

    /// At start-up: sets the epoch markers if Redis is empty of them (and
    /// then waits for the next second, so no request signed from now on is
    /// refused by them), and waits a little for the pool and subscription.
    /// Never fails: an unreachable Redis gives 503s until it is back.
    pub async fn start_up(&self, clock: &dyn Clock) {
        match self.ensure_epoch(clock.now()).await {
            Ok((epoch, true)) => {
                tracing::info!(epoch, "replay store was empty: epoch marker set");
                for _ in 0..40 {
                    if clock.now() > epoch {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok((epoch, false)) => tracing::debug!(epoch, "epoch markers found"),
            Err(e) => {
                tracing::warn!(error = %e, "Redis not reachable at start-up: ARMOR-PSK requests get 503 until it is")
            }
        }
        self.check_eviction().await;
        for _ in 0..60 {
            if self.ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the background work: keeping the pool connected (and the
    /// epoch markers checked after a connection was made, and once a
    /// minute: every claim checks its own bucket's marker in any case),
    /// and the subscription that hands invalidations to `handler` (both
    /// end with it).
    pub fn spawn<H: InvalidationHandler + 'static>(
        self: &Arc<Self>,
        handler: Weak<H>,
        clock: Arc<dyn Clock>,
    ) {
        let handler: Weak<dyn InvalidationHandler> = handler;
        let me = self.clone();
        let watched = handler.clone();
        tokio::spawn(async move {
            let mut rounds = 0u32;
            loop {
                rounds = rounds.wrapping_add(1);
                let (all, made) = me.fill_pool().await;
                if all && (made || rounds.is_multiple_of(120)) {
                    if let Err(e) = me.ensure_epoch(clock.now()).await {
                        tracing::debug!(error = %e, "epoch markers not checked");
                    }
                }
                let recheck = me.recheck_eviction.swap(false, Ordering::AcqRel);
                if all && (made || recheck || rounds.is_multiple_of(20) || me.evicting()) {
                    me.check_eviction().await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if watched.strong_count() == 0 {
                    return;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.subscribe_loop(handler).await });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
