//! Replay claims: batched, one script call per batch (see the module
//! documentation of [`crate::cluster`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use armor_psk::Fingerprints;

use super::{Cluster, EPOCH_KEY, ROUND_TRIP};
use crate::ports::{Claim, ClaimAnswer, ClaimError, ClaimWait, ReplayStore};

/// Claims a batch: for each claim in order, both fingerprints if its
/// timestamp is after the epoch marker (created when missing) and neither
/// is held (`SET NX` of each, the first undone if the second is held: two
/// commands per fresh claim).
/// KEYS: epoch, then pair and signature of each claim. ARGV: now (s), then
/// timestamp (s) and expiry (ms) of each claim.
/// Returns one code per claim: 0 claimed, 1 held (replay), 2 at or before
/// the epoch.
pub(super) const CLAIM_SCRIPT: &str = r"
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
pub(super) const CLAIM_WORKERS: usize = 2;

/// Claims waiting for a worker; past it, claims are refused (503).
pub(super) const CLAIM_QUEUE: usize = 65_536;

/// A claim waiting for its batch.
pub(super) struct Pending {
    fp: Fingerprints,
    timestamp: u64,
    ttl_ms: u64,
    now: u64,
    answer: ClaimAnswer,
}

pub(super) type ClaimQueue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Pending>>>;

impl Cluster {
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

/// Takes the waiting claims (at least one, at most [`BATCH_MAX`]) and sends
/// them in one call; ends with the cluster.
pub(super) async fn claim_worker(cluster: Weak<Cluster>, queue: ClaimQueue) {
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
