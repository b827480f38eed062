//! Replay claims: batched, one script call per batch (see the module
//! documentation of [`crate::cluster`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use armor_psk::Fingerprints;

use super::{Cluster, ROUND_TRIP};
use crate::ports::{Claim, ClaimAnswer, ClaimError, ClaimWait, ReplayStore};

/// Claims a batch of one bucket: first the epoch marker (moved to now when
/// missing or when the primary's replication id is not the one recorded
/// with it), then for each claim in order both fingerprints if its
/// timestamp is after the marker and neither is held.
///
/// The pair is a key (`SET NX` with a relative expiry, undone if the
/// signature turns out held). The signature is a field (`HSETNX`) of a
/// small hash of its bucket and `until`, found by walking levels: level
/// `k` has `split × 2^k` hashes, and the signature's hash at each level is
/// chosen by its bits (`sub`). A signature is stored at the
/// first level whose hash on its path is not full ([`SIGNATURE_FIELDS`]),
/// and a hash once full stays full until it expires; a claim that must
/// extend the expiry of its hash extends those on its path below it too
/// (by a second more than needed, so that the next claims of the second
/// need not; a signature's timestamp is out of the window by then), so
/// those outlive it. A replay of a signature therefore walks the same path
/// of full hashes to the one that holds it. Few requests fill one hash
/// per bucket and second; many spread over more hashes, each kept under
/// the size Redis stores as one compact list.
/// Expiries are set on Redis's clock (`TIME`), from each claim's `until`
/// (its timestamp plus the window, which no clock changes): a node whose
/// clock runs behind cannot claim a request whose window has ended there,
/// and one whose clock runs ahead cannot make claims expire early. A
/// claim whose `until` has passed on Redis's clock is refused as before
/// the epoch, and a moved marker is at least Redis's now. An `INFO`
/// without `master_replid` is an error (the claim is unavailable), never
/// a check skipped.
/// KEYS: epoch, primary id, then pair key and signature key prefix
/// (`a{bb}s<until>:`) of each claim.
/// ARGV: now (s), hashes at level 0, fields per hash, the last level,
/// then timestamp (s), until (s), signature field and `sub` of each claim.
/// Returns the marker, 1 if this call moved it (else 0), and the claims'
/// codes as one string, a digit per claim: 0 claimed, 1 held (replay), 2
/// at or before the epoch (one bulk string for the batch, rather than an
/// integer per claim, for Redis to write and for armor to read).
pub(super) const CLAIM_SCRIPT: &str = r"
local rnow = tonumber(redis.call('TIME')[1])
local now = math.max(tonumber(ARGV[1]), rnow)
local split = tonumber(ARGV[2])
local full = tonumber(ARGV[3])
local levels = tonumber(ARGV[4])
local id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
if not id then
  return redis.error_reply('armor: INFO replication has no master_replid')
end
local e = tonumber(redis.call('GET', KEYS[1]))
local moved = 0
if not e or redis.call('GET', KEYS[2]) ~= id then
  if not e or e < now then e = now end
  redis.call('SET', KEYS[1], e)
  redis.call('SET', KEYS[2], id)
  moved = 1
end
local out = {}
for i = 1, (#KEYS - 2) / 2 do
  local p, prefix = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local ts, f, sub = ARGV[4 * i + 1], ARGV[4 * i + 3], tonumber(ARGV[4 * i + 4])
  -- Kept through the last second of the window, on Redis's clock.
  local ttl = (tonumber(ARGV[4 * i + 2]) - rnow + 1) * 1000
  if tonumber(ts) <= e or ttl <= 0 then
    out[i] = 2
  else
    -- The signature's path: the full hashes it passes (held in one of
    -- them: a replay), then the first one not full (the last level takes
    -- it whatever its size).
    local path, held, n, base = {}, false, split, 0
    for level = 0, levels do
      local h = prefix .. (base + sub % n)
      path[#path + 1] = h
      if level == levels or redis.call('HLEN', h) < full then
        break
      end
      if redis.call('HEXISTS', h, f) == 1 then
        held = true
        break
      end
      base = base + n
      n = n * 2
    end
    if held or not redis.call('SET', p, '1', 'NX', 'PX', ttl) then
      out[i] = 1
    elseif redis.call('HSETNX', path[#path], f, '1') == 0 then
      -- The pair was free and is claimed again by nobody: undo it.
      redis.call('DEL', p)
      out[i] = 1
    else
      -- Hashes below on the path live at least as long as this one: when
      -- it must last longer, all of them are extended, a second more than
      -- needed so the next claims of this second need not.
      if redis.call('PTTL', path[#path]) < ttl then
        for _, h in ipairs(path) do
          if redis.call('PTTL', h) < ttl + 1000 then
            redis.call('PEXPIRE', h, ttl + 1000)
          end
        end
      end
      out[i] = 0
    end
  end
end
return {e, moved, table.concat(out)}
";

/// Signature hashes at level 0, per bucket and second, and the last
/// level. On one server (one bucket) 64 hashes and no further level: each
/// hash holds few fields at low rates, and past 8,192 requests a second
/// they become real hash tables (about 40 B more per request) rather than
/// making each claim look through full hashes (which doubles the script's
/// time at 50,000 a second). On a cluster one hash, then levels: each of
/// its 64 buckets sees a fraction of the rate.
const SIGNATURE_SPLIT_SINGLE: u32 = 64;
const SIGNATURE_LEVELS_SINGLE: u32 = 0;
const SIGNATURE_SPLIT_CLUSTER: u32 = 1;
const SIGNATURE_LEVELS_CLUSTER: u32 = 12;

/// Fields a signature hash takes before the next level is used: Redis
/// keeps a hash of up to 128 fields (`hash-max-listpack-entries`) as one
/// compact list.
const SIGNATURE_FIELDS: u32 = 128;

/// Bytes of the pair fingerprint in its key (its last ones): `a{bb}` and
/// 9 bytes is 14, the longest key Redis stores in a 16-byte allocation.
/// A new pair matches one of N live pairs of its bucket with a chance of
/// N / 2^72 (10^6 live: one in 4 × 10^15), which refuses it (never the
/// other way round).
const PAIR_BYTES: usize = 9;

/// A bucket's hash tag.
fn tag(bucket: u16) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [
        b'{',
        HEX[usize::from(bucket >> 4) & 15],
        HEX[usize::from(bucket) & 15],
        b'}',
    ]
}

/// A bucket's key with `suffix`: `a{bb}<suffix>`.
pub(super) fn bucket_key(bucket: u16, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + suffix.len());
    key_prefix(&mut k, bucket).extend_from_slice(suffix);
    k
}

/// Clears `key` and starts it as a key of `bucket` (`a{bb}`), for the
/// suffix to follow.
fn key_prefix(key: &mut Vec<u8>, bucket: u16) -> &mut Vec<u8> {
    key.clear();
    key.push(b'a');
    key.extend_from_slice(&tag(bucket));
    key
}

/// The bucket of a key id: FNV-1a, so every node agrees.
pub(super) fn bucket_of(key_id: &str, buckets: u16) -> u16 {
    if buckets <= 1 {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in key_id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h % u32::from(buckets)) as u16
}

/// Most claims sent in one script call.
pub const BATCH_MAX: usize = 256;

/// Tasks sending batches: while one waits for Redis, the next gathers.
pub(super) const CLAIM_WORKERS: usize = 2;

/// Claims waiting for a worker; past it, claims are refused (503).
pub(super) const CLAIM_QUEUE: usize = 65_536;

/// A claim waiting for its batch.
pub(super) struct Pending {
    bucket: u16,
    fp: Fingerprints,
    timestamp: u64,
    until: u64,
    now: u64,
    answer: ClaimAnswer,
}

pub(super) type ClaimQueue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Pending>>>;

impl Cluster {
    /// Claims both fingerprints of a verified request whose timestamp is
    /// `timestamp`, until the Unix second `until` (inclusive).
    pub async fn claim(
        &self,
        key_id: &str,
        fp: &Fingerprints,
        timestamp: u64,
        until: u64,
        now: u64,
    ) -> Result<(), ClaimError> {
        self.send_claim(key_id, fp, timestamp, until, now)
            .outcome()
            .await
    }

    /// Queues a claim for the next batch.
    fn send_claim(
        &self,
        key_id: &str,
        fp: &Fingerprints,
        timestamp: u64,
        until: u64,
        now: u64,
    ) -> Claim {
        if !self.in_sync.load(Ordering::Acquire) || self.evicting() {
            return Claim::Done(Err(ClaimError::Unavailable));
        }
        let (answer, wait) = ClaimWait::channel(ROUND_TRIP);
        let pending = Pending {
            bucket: bucket_of(key_id, self.buckets),
            fp: *fp,
            timestamp,
            until,
            now,
            answer,
        };
        if self.claims.try_send(pending).is_err() {
            tracing::warn!("replay claims queue full");
            return Claim::Done(Err(ClaimError::Unavailable));
        }
        Claim::Waiting(wait)
    }

    /// Sends one batch of claims: one script call per bucket, all at once.
    /// One answer code per claim, `None` where Redis gave no clear answer
    /// in time.
    async fn claim_batch(&self, batch: &[Pending]) -> Vec<Option<u8>> {
        let mut answers = vec![None; batch.len()];
        let now = batch.iter().map(|p| p.now).max().unwrap_or(0);
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| batch[i].bucket);
        let groups: Vec<&[usize]> = order
            .chunk_by(|&x, &y| batch[x].bucket == batch[y].bucket)
            .collect();
        let calls = groups.iter().map(|g| {
            let claims: Vec<&Pending> = g.iter().map(|&i| &batch[i]).collect();
            async move { self.run_claims(claims[0].bucket, &claims, now).await }
        });
        let results = futures_util::future::join_all(calls).await;
        for (g, r) in groups.iter().zip(results) {
            if let Some((_, _, codes)) = r {
                for (&i, code) in g.iter().zip(codes) {
                    answers[i] = Some(code);
                }
            }
        }
        answers
    }

    /// One script call for one bucket: the epoch marker, whether the call
    /// moved it, and one code per claim; `None` without a clear answer.
    /// The `EVALSHA` is written straight into one command buffer (no
    /// allocation per key or argument), and the script is loaded only when
    /// Redis does not know it (`NOSCRIPT`: a new or restarted server).
    pub(super) async fn run_claims(
        &self,
        bucket: u16,
        claims: &[&Pending],
        now: u64,
    ) -> Option<(u64, bool, Vec<u8>)> {
        let (slot, mut conn) = self.conn()?;
        let (split, levels) = if self.buckets > 1 {
            (SIGNATURE_SPLIT_CLUSTER, SIGNATURE_LEVELS_CLUSTER)
        } else {
            (SIGNATURE_SPLIT_SINGLE, SIGNATURE_LEVELS_SINGLE)
        };
        let n = claims.len();
        let mut cmd = redis::Cmd::with_capacity(9 + 6 * n, 160 + 96 * n);
        cmd.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(2 + 2 * n);
        let mut key = Vec::with_capacity(32);
        key_prefix(&mut key, bucket).push(b'm');
        cmd.arg(&key[..]);
        key_prefix(&mut key, bucket).push(b'r');
        cmd.arg(&key[..]);
        for p in claims {
            key_prefix(&mut key, bucket)
                .extend_from_slice(&p.fp.pair.to_be_bytes()[16 - PAIR_BYTES..]);
            cmd.arg(&key[..]);
            let k = key_prefix(&mut key, bucket);
            k.push(b's');
            crate::decimal::push_decimal(k, p.until);
            k.push(b':');
            cmd.arg(&key[..]);
        }
        cmd.arg(now).arg(split).arg(SIGNATURE_FIELDS).arg(levels);
        for p in claims {
            cmd.arg(p.timestamp)
                .arg(p.until)
                .arg(&p.fp.signature.to_be_bytes()[..])
                .arg((p.fp.signature >> 96) as u32);
        }
        let call = async {
            match cmd.query_async::<(u64, i64, Vec<u8>)>(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    self.script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                answer => answer,
            }
        };
        match tokio::time::timeout(ROUND_TRIP, call).await {
            Ok(Ok((epoch, moved, codes))) if codes.len() == n => {
                let moved = moved == 1;
                if moved {
                    tracing::warn!(
                        bucket,
                        epoch,
                        "epoch marker moved: the shard is new, lost its memory or its primary changed"
                    );
                    self.recheck_eviction.store(true, Ordering::Release);
                }
                Some((epoch, moved, codes))
            }
            Ok(Ok((_, _, codes))) => {
                tracing::error!(
                    answers = codes.len(),
                    claims = n,
                    "the claim script answered a different number of claims"
                );
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replay claims failed");
                self.failed(slot);
                None
            }
            Err(_) => {
                tracing::warn!("replay claims timed out");
                self.failed(slot);
                None
            }
        }
    }
}

/// A claim script's answer code.
fn outcome(code: Option<u8>) -> Result<(), ClaimError> {
    match code {
        Some(b'0') => Ok(()),
        Some(b'1') => Err(ClaimError::Reused),
        Some(b'2') => Err(ClaimError::BeforeEpoch),
        Some(other) => {
            tracing::error!(answer = %char::from(other).escape_default(), "unexpected answer from the claim script");
            Err(ClaimError::Unavailable)
        }
        // The batch failed (logged by the worker).
        None => Err(ClaimError::Unavailable),
    }
}

impl ReplayStore for Cluster {
    fn claim(
        &self,
        key_id: &str,
        fp: &Fingerprints,
        timestamp: u64,
        until: u64,
        now: u64,
    ) -> Claim {
        self.send_claim(key_id, fp, timestamp, until, now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_key_starts_with_its_hash_tag() {
        assert_eq!(bucket_key(0x2f, b"m"), b"a{2f}m");
        let mut key = b"left over".to_vec();
        key_prefix(&mut key, 3).push(b'r');
        assert_eq!(key, b"a{03}r");
    }
}
