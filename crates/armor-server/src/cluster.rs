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
//! [`Cluster`] is the Redis implementation of [`ReplayStore`] and
//! [`Invalidation`] (see [`crate::ports`]); what a message means on this
//! node is up to the [`InvalidationHandler`] given to [`Cluster::spawn`].
//! Nothing here knows the domain.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use armor_psk::Fingerprints;
use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::clock::Clock;
use crate::error::Error;
pub use crate::ports::ClaimError;
use crate::ports::{
    BoxFuture, Claim, ClaimAnswer, ClaimWait, Invalidation, InvalidationHandler, ReplayStore,
};

/// The longest one claim (or publish) may take before the request is
/// refused with 503.
pub const ROUND_TRIP: Duration = Duration::from_millis(250);

/// The channel carrying invalidation messages.
pub const CHANNEL: &str = "armor:invalidate";

/// The epoch marker's key.
pub const EPOCH_KEY: &str = "armor:epoch";

/// Claims a batch: for each claim in order, both fingerprints if its
/// timestamp is after the epoch marker (created when missing) and neither
/// is held (`SET NX` of each, the first undone if the second is held: two
/// commands per fresh claim).
/// KEYS: epoch, then pair and signature of each claim. ARGV: now (s), then
/// timestamp (s) and expiry (ms) of each claim.
/// Returns one code per claim: 0 claimed, 1 held (replay), 2 at or before
/// the epoch.
const CLAIM_SCRIPT: &str = r"
local e = redis.call('GET', KEYS[1])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[1], e)
end
e = tonumber(e)
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local p, s, ttl = KEYS[2 * i], KEYS[2 * i + 1], ARGV[2 * i + 1]
  if tonumber(ARGV[2 * i]) <= e then
    out[i] = 2
  elseif not redis.call('SET', p, '1', 'NX', 'PX', ttl) then
    out[i] = 1
  elseif not redis.call('SET', s, '1', 'NX', 'PX', ttl) then
    -- The pair was free and is claimed again by nobody: undo it.
    redis.call('DEL', p)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// Most claims sent in one script call.
pub const BATCH_MAX: usize = 256;

/// Tasks sending batches: while one waits for Redis, the next gathers.
const CLAIM_WORKERS: usize = 2;

/// Claims waiting for a worker; past it, claims are refused (503).
const CLAIM_QUEUE: usize = 65_536;

/// A claim waiting for its batch.
struct Pending {
    fp: Fingerprints,
    timestamp: u64,
    ttl_ms: u64,
    now: u64,
    answer: ClaimAnswer,
}

type ClaimQueue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Pending>>>;

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

    /// Claims both fingerprints of a verified request whose timestamp is
    /// `timestamp`, until the Unix second `until` (inclusive).
    pub async fn claim(
        &self,
        fp: &Fingerprints,
        timestamp: u64,
        until: u64,
        now: u64,
    ) -> Result<(), ClaimError> {
        self.send_claim(fp, timestamp, until, now).outcome().await
    }

    /// Queues a claim for the next batch.
    fn send_claim(&self, fp: &Fingerprints, timestamp: u64, until: u64, now: u64) -> Claim {
        if !self.in_sync.load(Ordering::Acquire) {
            return Claim::Done(Err(ClaimError::Unavailable));
        }
        // Kept through the last second of the window, whatever the clocks.
        let ttl_ms = until.saturating_sub(now).saturating_add(1).max(1) * 1000;
        let (answer, wait) = ClaimWait::channel(ROUND_TRIP);
        let pending = Pending {
            fp: *fp,
            timestamp,
            ttl_ms,
            now,
            answer,
        };
        if self.claims.try_send(pending).is_err() {
            tracing::warn!("replay claims queue full");
            return Claim::Done(Err(ClaimError::Unavailable));
        }
        Claim::Waiting(wait)
    }

    /// Sends one batch of claims; one answer per claim, `None` for all when
    /// Redis gave no clear answer in time.
    async fn claim_batch(&self, batch: &[Pending]) -> Vec<Option<i64>> {
        let failed = || vec![None; batch.len()];
        let Some(mut conn) = self.conn() else {
            return failed();
        };
        let mut call = self.script.prepare_invoke();
        call.key(EPOCH_KEY);
        for p in batch {
            call.key(format!("armor:r:{:032x}", p.fp.pair))
                .key(format!("armor:r:{:032x}", p.fp.signature));
        }
        // A missing marker is set to the latest clock of the batch.
        call.arg(batch.iter().map(|p| p.now).max().unwrap_or(0));
        for p in batch {
            call.arg(p.timestamp).arg(p.ttl_ms);
        }
        match tokio::time::timeout(ROUND_TRIP, call.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(codes)) if codes.len() == batch.len() => codes.into_iter().map(Some).collect(),
            Ok(Ok(codes)) => {
                tracing::error!(
                    answers = codes.len(),
                    claims = batch.len(),
                    "the claim script answered a different number of claims"
                );
                failed()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replay claims failed");
                failed()
            }
            Err(_) => {
                tracing::warn!("replay claims timed out");
                failed()
            }
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

    /// Publishes an invalidation message; returns whether Redis took it.
    pub async fn publish(&self, message: &str) -> bool {
        let Some(mut conn) = self.conn() else {
            return false;
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CHANNEL).arg(message);
        let fut = cmd.query_async::<i64>(&mut conn);
        matches!(tokio::time::timeout(ROUND_TRIP * 4, fut).await, Ok(Ok(_)))
    }

    /// Publishes `message`, retrying in the background for a while if
    /// Redis does not take it at once (other nodes refuse claims while they
    /// cannot hear it, and re-read everything when they can again).
    pub async fn publish_reliably(self: &Arc<Self>, message: String) {
        if self.publish(&message).await {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if me.publish(&message).await {
                    return;
                }
            }
            tracing::error!(%message, "could not publish an invalidation message");
        });
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

    async fn subscribe_loop(self: Arc<Self>, handler: Weak<dyn InvalidationHandler>) {
        loop {
            if let Err(e) = self.subscribe_once(&handler).await {
                tracing::warn!(error = %e, "invalidation channel down");
            }
            self.in_sync.store(false, Ordering::Release);
            if handler.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One subscription, until it breaks. Claims are allowed only after
    /// the subscription is live and the whole key cache was re-read.
    async fn subscribe_once(&self, handler: &Weak<dyn InvalidationHandler>) -> Result<(), Error> {
        let redis_err = |e: redis::RedisError| Error::Internal(format!("Redis: {e}"));
        let pubsub = tokio::time::timeout(ROUND_TRIP * 4, self.client.get_async_pubsub())
            .await
            .map_err(|_| Error::Internal("Redis: connect timed out".into()))?
            .map_err(redis_err)?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(ROUND_TRIP * 4, sink.subscribe(CHANNEL))
            .await
            .map_err(|_| Error::Internal("Redis: subscribe timed out".into()))?
            .map_err(redis_err)?;
        {
            let Some(handler) = handler.upgrade() else {
                return Ok(());
            };
            let n = handler.reload_keys(None).await?;
            tracing::info!(keys = n, "invalidation channel up; key cache re-read");
        }
        self.in_sync.store(true, Ordering::Release);
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(Error::Internal("Redis: subscription closed".into()));
                    };
                    // A burst (many keys created at once) re-reads each user
                    // once: take every message already there, keep distinct.
                    let mut batch = std::collections::BTreeSet::new();
                    batch.insert(msg.get_payload::<String>().unwrap_or_default());
                    while batch.len() < 1024 {
                        match stream.next().now_or_never() {
                            Some(Some(m)) => {
                                batch.insert(m.get_payload::<String>().unwrap_or_default());
                            }
                            Some(None) => {
                                return Err(Error::Internal("Redis: subscription closed".into()))
                            }
                            None => break,
                        }
                    }
                    let Some(handler) = handler.upgrade() else {
                        return Ok(());
                    };
                    for text in &batch {
                        if let Err(e) = apply(handler.as_ref(), text).await {
                            // Could not re-read: accept nothing until a full
                            // re-read succeeds.
                            tracing::error!(error = %e, message = %text, "invalidation failed");
                            return Err(e);
                        }
                    }
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(ROUND_TRIP * 4, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return Err(Error::Internal("Redis: subscription ping failed".into()));
                    }
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The message that makes every node re-read one user's keys.
pub fn user_message(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// Applies a message of the invalidation channel: `user:<id>` re-reads
/// that user's keys, anything else every key.
async fn apply(handler: &dyn InvalidationHandler, message: &str) -> Result<(), Error> {
    match message.strip_prefix("user:").map(str::parse::<i64>) {
        Some(Ok(uid)) => handler.reload_keys(Some(uid)).await.map(|_| ()),
        _ => {
            tracing::warn!(%message, "unknown invalidation message; re-reading every key");
            handler.reload_keys(None).await.map(|_| ())
        }
    }
}

/// A claim script's answer code.
fn outcome(code: Option<i64>) -> Result<(), ClaimError> {
    match code {
        Some(0) => Ok(()),
        Some(1) => Err(ClaimError::Reused),
        Some(2) => Err(ClaimError::BeforeEpoch),
        Some(other) => {
            tracing::error!(answer = other, "unexpected answer from the claim script");
            Err(ClaimError::Unavailable)
        }
        // The batch failed (logged by the worker).
        None => Err(ClaimError::Unavailable),
    }
}

impl ReplayStore for Cluster {
    fn claim(&self, fp: &Fingerprints, timestamp: u64, until: u64, now: u64) -> Claim {
        self.send_claim(fp, timestamp, until, now)
    }
}

impl Invalidation for Cluster {
    fn user_changed(self: Arc<Self>, user_id: i64) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.publish_reliably(user_message(user_id)).await })
    }
}

/// Takes the waiting claims (at least one, at most [`BATCH_MAX`]) and sends
/// them in one call; ends with the cluster.
async fn claim_worker(cluster: Weak<Cluster>, queue: ClaimQueue) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < BATCH_MAX {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let answers = cluster.claim_batch(&batch).await;
        drop(cluster);
        for (p, a) in batch.drain(..).zip(answers) {
            p.answer.send(outcome(a));
        }
    }
}
