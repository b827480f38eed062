//! Several stateless `armor serve` nodes: the replay store and the key
//! cache invalidation go through Redis (`--redis-url`).
//!
//! # Replay store
//! Each accepted ARMOR-PSK request claims both its fingerprints
//! (`armor:r:<hex>`, `SET` with a relative expiry until the timestamp leaves
//! the window) only if neither is held, atomically, within [`ROUND_TRIP`].
//! Claims made at the same moment are batched: a few worker tasks each take
//! whatever claims are waiting (up to [`BATCH_MAX`]) and send them in one
//! script call, which Redis runs atomically, claim after claim in order (so
//! two claims of one fingerprint in a batch: the second is a replay). Under
//! load this is one round trip for many requests instead of one each.
//! Connections come from a small pool of multiplexed connections. Anything
//! but a clear answer (unreachable, timeout, out of memory) is
//! [`ClaimError::Unavailable`]: the request is refused with 503, never
//! accepted unchecked. Reconnection happens on its own.
//!
//! # Epoch marker
//! `armor:epoch` holds the Unix second at which some node found the store
//! empty (no marker: a fresh, restarted or flushed Redis). The claim script
//! creates it when missing, and refuses every timestamp at or before it: a
//! request accepted before Redis lost its memory cannot be replayed after.
//! The refusal lasts only until the window has passed, since older
//! timestamps are out of the window anyway. Not covered: a request signed
//! with a clock running ahead of the server (timestamp later than the
//! epoch) and accepted before the loss; run Redis with persistence
//! (`appendonly yes`) if that matters.
//!
//! # Invalidation
//! Nodes cache keys (the HMAC state). A change that affects a user's keys
//! (key created or deleted, user disabled, enabled or deleted) is published
//! on `armor:invalidate` as `user:<id>`; every node, the sender included,
//! re-reads that user's active keys from the shared database and drops the
//! user's cached status, permissions and profile (the domain sends the
//! same message for role and name changes; cached answers expire after a
//! second in any case). While the subscription is down (and until the cache has
//! been re-read after it comes back) claims are refused, so a node that may
//! have missed a message accepts nothing.
//!
//! # Interfaces
//! [`Cluster`] is the Redis implementation of
//! [`ReplayStore`](crate::ports::ReplayStore) and
//! [`Invalidation`](crate::ports::Invalidation); what a message means on
//! this node is up to the [`InvalidationHandler`] given to
//! [`Cluster::spawn`]. Nothing here knows the domain.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::clock::Clock;
use crate::error::Error;
pub use crate::ports::ClaimError;
use crate::ports::InvalidationHandler;

mod channel;
mod claims;

pub use channel::{user_message, CHANNEL};
pub use claims::BATCH_MAX;
use claims::{claim_worker, ClaimQueue, Pending, CLAIM_QUEUE, CLAIM_SCRIPT, CLAIM_WORKERS};

/// The longest one claim (or publish) may take before the request is
/// refused with 503.
pub const ROUND_TRIP: Duration = Duration::from_millis(250);

/// The epoch marker's key.
pub const EPOCH_KEY: &str = "armor:epoch";

/// The Redis side of a node: replay claims, the epoch marker, and the
/// invalidation channel.
pub struct Cluster {
    client: redis::Client,
    pool: Box<[Mutex<Option<ConnectionManager>>]>,
    next: AtomicUsize,
    /// The subscription is live and the key cache was re-read since it
    /// (re)started.
    in_sync: AtomicBool,
    script: redis::Script,
    claims: tokio::sync::mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("connections", &self.pool.len())
            .field("in_sync", &self.in_sync.load(Ordering::Relaxed))
            .finish()
    }
}

impl Cluster {
    /// Prepares the client for `url` with `connections` pooled connections
    /// and tries to connect them once; what fails is retried in the
    /// background by [`Cluster::spawn`]. Only a malformed URL is an error:
    /// an unreachable Redis at start-up means 503s until it is reachable.
    pub async fn new(url: &str, connections: usize) -> Result<Arc<Self>, Error> {
        let client =
            redis::Client::open(url).map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
        let (claims, queue) = tokio::sync::mpsc::channel(CLAIM_QUEUE);
        let cluster = Arc::new(Cluster {
            client,
            pool: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            in_sync: AtomicBool::new(false),
            script: redis::Script::new(CLAIM_SCRIPT),
            claims,
        });
        let queue: ClaimQueue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..CLAIM_WORKERS {
            tokio::spawn(claim_worker(Arc::downgrade(&cluster), queue.clone()));
        }
        cluster.fill_pool().await;
        Ok(cluster)
    }

    fn config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(ROUND_TRIP)
            .set_response_timeout(ROUND_TRIP)
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(500)
    }

    /// Connects the empty pool slots; returns whether all are connected.
    async fn fill_pool(&self) -> bool {
        let mut all = true;
        for slot in self.pool.iter() {
            if lock(slot).is_some() {
                continue;
            }
            let made = tokio::time::timeout(
                ROUND_TRIP * 4,
                ConnectionManager::new_with_config(self.client.clone(), Self::config()),
            )
            .await;
            match made {
                Ok(Ok(conn)) => *lock(slot) = Some(conn),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot connect to Redis");
                    all = false;
                    break;
                }
                Err(_) => {
                    tracing::warn!("cannot connect to Redis: timed out");
                    all = false;
                    break;
                }
            }
        }
        all
    }

    fn conn(&self) -> Option<ConnectionManager> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| lock(&self.pool[(start + i) % n]).clone())
    }

    /// Whether claims can be answered now (connected, subscribed, cache
    /// re-read).
    pub fn ready(&self) -> bool {
        self.in_sync.load(Ordering::Acquire) && self.conn().is_some()
    }

    /// Sets the epoch marker if the store is empty of it. Returns the
    /// marker, and whether this call created it.
    pub async fn ensure_epoch(&self, now: u64) -> Result<(u64, bool), Error> {
        let mut conn = self.conn().ok_or(Error::StoreUnavailable)?;
        let fut = async {
            let created: bool = redis::cmd("SET")
                .arg(EPOCH_KEY)
                .arg(now)
                .arg("NX")
                .query_async::<Option<String>>(&mut conn)
                .await?
                .is_some();
            let epoch: u64 = redis::cmd("GET")
                .arg(EPOCH_KEY)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((epoch, created))
        };
        match tokio::time::timeout(ROUND_TRIP * 4, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Internal(format!("Redis: {e}"))),
            Err(_) => Err(Error::StoreUnavailable),
        }
    }

    /// At start-up: sets the epoch marker if Redis is empty of it (and then
    /// waits for the next second, so no request signed from now on is
    /// refused by it), and waits a little for the pool and subscription.
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
            Ok((epoch, false)) => tracing::debug!(epoch, "epoch marker found"),
            Err(e) => {
                tracing::warn!(error = %e, "Redis not reachable at start-up: ARMOR-PSK requests get 503 until it is")
            }
        }
        for _ in 0..60 {
            if self.ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the background work: keeping the pool connected, and the
    /// subscription that hands invalidations to `handler` (both end with
    /// it).
    pub fn spawn<H: InvalidationHandler + 'static>(
        self: &Arc<Self>,
        handler: Weak<H>,
        clock: Arc<dyn Clock>,
    ) {
        let handler: Weak<dyn InvalidationHandler> = handler;
        let me = self.clone();
        let watched = handler.clone();
        tokio::spawn(async move {
            loop {
                if me.fill_pool().await {
                    if let Err(e) = me.ensure_epoch(clock.now()).await {
                        tracing::debug!(error = %e, "epoch marker not checked");
                    }
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
