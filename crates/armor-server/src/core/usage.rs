//! Usage counts per API key: requests accepted, and refused by error code,
//! per minute (stored also per hour; days are summed from hours).
//!
//! An accepted request (and a refusal of a verified key's restrictions) is
//! counted at once, without allocating or taking a shared lock: each
//! cached key ([`super::CachedKey`]) holds a [`KeyUsage`], two minute windows of
//! atomic counters (the current minute and the one before, by the
//! minute's parity). Counting adds to the current window; the first count
//! of a new minute moves what the window held (its minute two minutes
//! back) into the node's pending batch, under the key's own small lock.
//! [`Usage::flush`] (every few seconds) moves the windows of minutes that
//! have ended into the batch (at shutdown, every window) and adds the
//! batch to the store (one upsert per row that adds, so several nodes add
//! to the same bucket): a key in use costs a minute row and an hour row
//! per minute, however often the flush runs. A read
//! ([`Usage::read`]) sums the store, the batch and the windows, under the
//! flush's lock, so what this node counted shows at once, never twice.
//!
//! Any other refusal is decided before the key is known to be the caller's,
//! and counting it on the key at once would take longer for a cached id
//! than for an unknown one. It is queued instead ([`Usage::queue_refusal`],
//! the same for every id: its id's hash, code and time), and the queue is
//! counted where no request waits on it: by the server's periodic task
//! (woken early by a full batch), and, for one key, before that key's
//! usage is read. Only ids cached when refused, and still cached then,
//! count; refusals still queued when their key leaves the cache (deleted,
//! its user disabled) are dropped.
//!
//! A count lands in the minute read from the clock when it was made (a
//! queued refusal's, when it was queued); a thread stalled for more than a
//! minute between reading the window and adding to it, or a refusal counted
//! more than a minute after it was queued, would move the window's label
//! back, and counts made meanwhile for the later minute would land in the
//! earlier one (none is lost).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::keys::KeyAdmin;
use super::{KeyId, Principal};
use crate::error::Error;
use crate::store::{Store, UsageRow};

/// The error codes counted in a fixed slot each (the verifier's and the
/// per-key restrictions'); any other code is counted in a small list
/// beside them (taking the key's lock).
const CODES: [&str; 10] = [
    "invalid_signature",
    "nonce_reused",
    "timestamp_out_of_window",
    "query_not_signed",
    "replay_store_unavailable",
    "key_expired",
    "route_not_allowed",
    "ip_not_allowed",
    "rate_limited",
    "permission_denied",
];

/// Seconds in a minute bucket and an hour bucket.
pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;

/// Counts of one bucket: accepted, and refused by code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub refused: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.accepted += other.accepted;
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
    }
}

/// One minute's counters of one key: a view of one of [`KeyUsage`]'s two
/// windows.
struct Window<'a> {
    /// The minute counted (Unix seconds / 60); 0: never used.
    minute: &'a AtomicU64,
    accepted: &'a AtomicU64,
    refused: &'a [AtomicU64; CODES.len()],
    /// Codes outside [`CODES`] (under `KeyUsage::lock`).
    other: &'a Mutex<Vec<(&'static str, u64)>>,
}

impl Window<'_> {
    /// Takes the counts out (zeroing them), with their minute.
    fn take(&self) -> (u64, Counts) {
        let mut c = Counts {
            accepted: self.accepted.swap(0, Ordering::Relaxed),
            refused: BTreeMap::new(),
        };
        for (code, n) in CODES.iter().zip(self.refused) {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0 {
                c.refused.insert((*code).to_owned(), n);
            }
        }
        let other = std::mem::take(&mut *self.other.lock().unwrap_or_else(PoisonError::into_inner));
        for (code, n) in other {
            *c.refused.entry(code.to_owned()).or_default() += n;
        }
        (self.minute.load(Ordering::Relaxed), c)
    }

    /// The counts as they are (a read).
    fn peek(&self) -> (u64, Counts) {
        let mut c = Counts {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: BTreeMap::new(),
        };
        for (code, n) in CODES.iter().zip(self.refused) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                c.refused.insert((*code).to_owned(), n);
            }
        }
        for (code, n) in self
            .other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            *c.refused.entry((*code).to_owned()).or_default() += n;
        }
        (self.minute.load(Ordering::Relaxed), c)
    }
}

/// A key's counters, kept in its cache entry: two minute windows (by the
/// minute's parity), as parallel arrays so that what an accepted request
/// touches (both windows' minutes and accepted counts, 32 bytes) shares a
/// cache line with the entry's other per-request fields (see
/// `super::CachedKey`), and the refusal counters stay out of it.
#[derive(Default)]
#[repr(C)]
pub struct KeyUsage {
    minute: [AtomicU64; 2],
    accepted: [AtomicU64; 2],
    refused: [[AtomicU64; CODES.len()]; 2],
    other: [Mutex<Vec<(&'static str, u64)>>; 2],
    /// Taken to move a window's counts out (a new minute, a flush).
    lock: Mutex<()>,
}

impl KeyUsage {
    fn window(&self, i: usize) -> Window<'_> {
        Window {
            minute: &self.minute[i],
            accepted: &self.accepted[i],
            refused: &self.refused[i],
            other: &self.other[i],
        }
    }

    fn windows(&self) -> [Window<'_>; 2] {
        [self.window(0), self.window(1)]
    }

    /// The bytes at its start that an accepted request uses.
    pub(super) const HOT: usize = 4 * std::mem::size_of::<AtomicU64>();
}

/// What is counted: an accepted request or a refusal's code.
#[derive(Clone, Copy)]
enum Outcome {
    Accepted,
    Refused(&'static str),
}

/// A refusal waiting to be counted on its key: the hash of its key id
/// (`keycache::Found::hash`), whether that id was cached, its code and
/// time.
pub struct Queued {
    pub hash: u128,
    /// Whether the id was a cached key when refused (`Found::is_own`): only
    /// those count.
    pub own: bool,
    pub code: &'static str,
    pub at: u64,
}

/// Queued refusals that wake the server's periodic task to count them
/// (see [`Usage::queue_refusal`]).
const REFUSALS_BATCH: usize = 1024;
/// Queued refusals at most; past it (a flood outrunning the task that
/// counts them) a refusal is not counted, whatever its id.
const REFUSALS_MAX: usize = 64 * 1024;

/// The node's usage counting: pending counts not yet in the store.
#[derive(Default)]
pub struct Usage {
    /// (key id, minute) → counts moved out of the windows, not yet stored.
    pending: Mutex<HashMap<(String, u64), Counts>>,
    /// Refusals of requests not verified, not yet counted on their keys.
    /// Counting one at once would fetch a cached key's counters and an
    /// unknown id's nothing: a timing difference telling which ids exist.
    /// So each is queued alike, and the queue is counted where no request
    /// waits on it: by the server's periodic task (woken early by a full
    /// batch), and for one key before its usage is read.
    refusals: Mutex<Vec<Queued>>,
    /// Wakes the periodic task when a batch is queued.
    batch_queued: tokio::sync::Notify,
    /// Held by a flush from taking the batch until it is stored, and by a
    /// read: a read sees each count once.
    flush: tokio::sync::Mutex<()>,
}

impl Usage {
    /// Queues a refusal, the same way for every key id; wakes
    /// [`Usage::batch_queued`]'s waiter once a batch is queued.
    pub fn queue_refusal(&self, q: Queued) {
        let mut queued = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if queued.len() < REFUSALS_MAX {
            queued.push(q);
        }
        if queued.len() == REFUSALS_BATCH {
            self.batch_queued.notify_one();
        }
    }

    /// Completes once [`REFUSALS_BATCH`] refusals are queued (or were,
    /// since the last wait).
    pub async fn batch_queued(&self) {
        self.batch_queued.notified().await;
    }

    /// The queued refusals of the key with this id hash (the others stay),
    /// or every one when `hash` is `None`.
    pub fn take_refusals(&self, hash: Option<u128>) -> Vec<Queued> {
        let mut queued = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        match hash {
            None => std::mem::take(&mut *queued),
            Some(h) => queued.extract_if(.., |q| q.hash == h).collect(),
        }
    }

    /// Refusals queued and not yet counted.
    pub fn queued_refusals(&self) -> usize {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Counts an accepted request of `key_id` at `now` (Unix seconds).
    pub fn accepted(&self, key_id: &KeyId, usage: &KeyUsage, now: u64) {
        self.count(key_id, usage, now, Outcome::Accepted);
    }

    /// Counts a refused request of `key_id` at `now`, by its error code.
    pub fn refused(&self, key_id: &KeyId, usage: &KeyUsage, now: u64, code: &'static str) {
        self.count(key_id, usage, now, Outcome::Refused(code));
    }

    fn count(&self, key_id: &KeyId, usage: &KeyUsage, now: u64, what: Outcome) {
        let minute = now / MINUTE;
        let w = usage.window((minute & 1) as usize);
        if w.minute.load(Ordering::Relaxed) != minute {
            let _g = usage.lock.lock().unwrap_or_else(PoisonError::into_inner);
            if w.minute.load(Ordering::Relaxed) != minute {
                self.move_out(key_id, &w);
                w.minute.store(minute, Ordering::Relaxed);
            }
        }
        match what {
            Outcome::Accepted => {
                w.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused(code) => match CODES.iter().position(|c| *c == code) {
                Some(i) => {
                    w.refused[i].fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    let _g = usage.lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let mut other = w.other.lock().unwrap_or_else(PoisonError::into_inner);
                    match other.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, n)) => *n += 1,
                        None => other.push((code, 1)),
                    }
                }
            },
        }
    }

    /// Moves a window's counts into the pending batch (the caller holds
    /// the key's lock). The batch's lock is taken before the counts are
    /// taken out, so a read never misses them in between.
    fn move_out(&self, key_id: &str, w: &Window) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (minute, c) = w.take();
        if minute != 0 && (c.accepted > 0 || !c.refused.is_empty()) {
            pending
                .entry((key_id.to_owned(), minute))
                .or_default()
                .add(&c);
        }
    }

    /// Moves both windows of a key into the pending batch (shutdown, or a
    /// key leaving the cache).
    pub fn drain(&self, key_id: &str, usage: &KeyUsage) {
        let _g = usage.lock.lock().unwrap_or_else(PoisonError::into_inner);
        for w in &usage.windows() {
            self.move_out(key_id, w);
        }
    }

    /// Moves a key's windows of minutes before `minute` (Unix seconds / 60)
    /// into the pending batch: the periodic flush. The current minute
    /// stays in its window until it has ended, so an active key costs one
    /// row per minute and grain rather than one per flush; reads on this
    /// node see it at once (they sum the windows), other nodes once it has
    /// ended and been written.
    pub fn drain_ended(&self, key_id: &str, usage: &KeyUsage, minute: u64) {
        let ended = |w: &Window| {
            let m = w.minute.load(Ordering::Relaxed);
            m != 0 && m < minute
        };
        let windows = usage.windows();
        if !windows.iter().any(ended) {
            return;
        }
        let _g = usage.lock.lock().unwrap_or_else(PoisonError::into_inner);
        for w in windows.iter().filter(|w| ended(w)) {
            self.move_out(key_id, w);
        }
    }

    /// Writes the pending counts (after `drain_all` moved the keys'
    /// windows in): minute and hour rows, added to what the store holds.
    /// On failure the counts stay pending.
    pub async fn flush(&self, store: &Store, drain_all: impl FnOnce(&Usage)) -> Result<(), Error> {
        let _f = self.flush.lock().await;
        drain_all(self);
        let batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return Ok(());
        }
        let rows = rows_of(&batch);
        if let Err(e) = store.add_usage(&rows).await {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (k, c) in batch {
                pending.entry(k).or_default().add(&c);
            }
            return Err(e);
        }
        Ok(())
    }

    /// The counts of `key_id` in buckets of `grain` seconds (a minute, an
    /// hour or a day) starting in `[from, to)` (both multiples of the
    /// grain): the store's, plus this node's pending and current ones.
    /// `live` calls its argument once, with the key's counters if it is
    /// cached (holding the key cache's lock, which is taken before the
    /// batch's, as when a request counts).
    pub async fn read(
        &self,
        store: &Store,
        key_id: &str,
        live: impl FnOnce(&mut dyn FnMut(Option<&KeyUsage>)),
        grain: u64,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, Counts>, Error> {
        let _f = self.flush.lock().await;
        let stored_grain = if grain == MINUTE { MINUTE } else { HOUR };
        let stored = store.usage_of_key(key_id, stored_grain, from, to).await?;
        let mut out: BTreeMap<u64, Counts> = BTreeMap::new();
        for (start, codes) in stored {
            let c = out.entry(start / grain * grain).or_default();
            for (code, n) in codes {
                if code.is_empty() {
                    c.accepted += n;
                } else {
                    *c.refused.entry(code).or_default() += n;
                }
            }
        }
        let mut add = |minute: u64, c: &Counts| {
            let start = minute * MINUTE / grain * grain;
            if minute != 0 && (from..to).contains(&start) {
                out.entry(start).or_default().add(c);
            }
        };
        live(&mut |u| {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for ((k, minute), c) in pending.iter() {
                if k == key_id {
                    add(*minute, c);
                }
            }
            for w in u.iter().flat_map(|u| u.windows()) {
                let (minute, c) = w.peek();
                add(minute, &c);
            }
        });
        Ok(out)
    }
}

/// The rows of a batch: each minute, and each hour summed from its
/// minutes; every (key, grain, start, code) once.
fn rows_of(batch: &HashMap<(String, u64), Counts>) -> Vec<UsageRow> {
    let mut sums: BTreeMap<(&str, u64, u64, &str), u64> = BTreeMap::new();
    for ((key, minute), c) in batch {
        let start = minute * MINUTE;
        for grain in [MINUTE, HOUR] {
            let b = start / grain * grain;
            if c.accepted > 0 {
                *sums.entry((key, grain, b, "")).or_default() += c.accepted;
            }
            for (code, n) in &c.refused {
                *sums.entry((key, grain, b, code)).or_default() += n;
            }
        }
    }
    sums.into_iter()
        .map(|((k, g, s, code), n)| (k.to_owned(), g, s, code.to_owned(), n))
        .collect()
}

/// How long buckets are kept (seconds), and the clean-up of older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub minutes: u64,
    pub hours: u64,
}

impl Default for Retention {
    /// 48 hours of minute buckets, 90 days of hour buckets.
    fn default() -> Self {
        Retention {
            minutes: 48 * HOUR,
            hours: 90 * DAY,
        }
    }
}

/// Rows deleted per statement by the clean-up.
const PURGE_BATCH: i64 = 5000;

impl Retention {
    /// Rows the clean-up at `now` would delete.
    pub async fn due(&self, store: &Store, now: u64) -> Result<u64, Error> {
        Ok(store
            .count_usage_before(MINUTE, now.saturating_sub(self.minutes))
            .await?
            + store
                .count_usage_before(HOUR, now.saturating_sub(self.hours))
                .await?)
    }

    /// Deletes the buckets older than kept at `now`, in batches;
    /// `progress` is told the rows deleted so far after each. Returns the
    /// rows deleted.
    pub async fn clean_up(
        &self,
        store: &Store,
        now: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        let mut total = 0;
        for (grain, keep) in [(MINUTE, self.minutes), (HOUR, self.hours)] {
            let before = now.saturating_sub(keep);
            loop {
                let n = store.purge_usage(grain, before, PURGE_BATCH).await?;
                total += n;
                progress(total);
                if n < PURGE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }
}

impl KeyAdmin {
    /// The usage of the key `key_id` of `user_id`, under the rule for
    /// listing that user's keys (their own with Self Manage, anyone's in
    /// the account with Keys All Read): buckets of `grain` seconds starting
    /// in `[from, to)`. A key that is not that user's (or deleted) is not
    /// found.
    pub async fn key_usage(
        &self,
        p: &Principal,
        user_id: i64,
        key_id: &str,
        grain: u64,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, Counts>, Error> {
        let key_id = key_id.to_ascii_lowercase();
        let key = self
            .list_keys(p, user_id)
            .await?
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or(Error::NotFound("key"))?;
        self.verifier.usage_of(&key.id, grain, from, to).await
    }

    /// Deletes the usage buckets older than `retention` keeps; `progress`
    /// is told the rows deleted so far.
    pub async fn clean_up_usage(
        &self,
        retention: &Retention,
        progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        retention
            .clean_up(&self.store, self.clock.now(), progress)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_minutes_into_hours() {
        let mut batch = HashMap::new();
        let c = |a, r: &[(&str, u64)]| Counts {
            accepted: a,
            refused: r.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        batch.insert(("k".to_owned(), 60), c(2, &[("nonce_reused", 1)]));
        batch.insert(("k".to_owned(), 61), c(3, &[]));
        let rows = rows_of(&batch);
        assert!(rows.contains(&("k".into(), HOUR, 3600, String::new(), 5)));
        assert!(rows.contains(&("k".into(), MINUTE, 3600, String::new(), 2)));
        assert!(rows.contains(&("k".into(), MINUTE, 3660, String::new(), 3)));
        assert!(rows.contains(&("k".into(), HOUR, 3600, "nonce_reused".into(), 1)));
        assert_eq!(rows.len(), 5);
    }

    fn pending(u: &Usage) -> Vec<(u64, u64, BTreeMap<String, u64>)> {
        let mut v: Vec<_> = u
            .pending
            .lock()
            .unwrap()
            .iter()
            .map(|((_, m), c)| (*m, c.accepted, c.refused.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn counts_fall_in_the_minute_they_were_made() {
        let u = Usage::default();
        let k = KeyUsage::default();
        let id = KeyId::from("k");
        // 119 is the last second of minute 1, 120 the first of minute 2.
        u.accepted(&id, &k, 119);
        u.refused(&id, &k, 119, "nonce_reused");
        u.accepted(&id, &k, 120);
        u.refused(&id, &k, 120, "some_new_code");
        assert!(pending(&u).is_empty(), "nothing moved out yet");
        // Minute 3 reuses minute 1's window: minute 1 moves to the batch.
        u.accepted(&id, &k, 180);
        assert_eq!(
            pending(&u),
            vec![(1, 1, [("nonce_reused".to_owned(), 1)].into())]
        );
        u.drain("k", &k);
        assert_eq!(
            pending(&u),
            vec![
                (1, 1, [("nonce_reused".to_owned(), 1)].into()),
                (2, 1, [("some_new_code".to_owned(), 1)].into()),
                (3, 1, BTreeMap::new()),
            ]
        );
        // Drained windows are empty: draining again adds nothing.
        u.drain("k", &k);
        assert_eq!(pending(&u).len(), 3);
        let rows = rows_of(&u.pending.lock().unwrap());
        // Minutes 1 and 2 are in hour 0; 3 too (minute 60 would not be).
        assert!(rows.contains(&("k".into(), HOUR, 0, String::new(), 3)));
    }

    #[test]
    fn a_periodic_flush_leaves_the_current_minute_in_its_window() {
        let u = Usage::default();
        let k = KeyUsage::default();
        let id = KeyId::from("k");
        u.accepted(&id, &k, 60);
        u.accepted(&id, &k, 125);
        // During minute 2: only minute 1 has ended.
        u.drain_ended("k", &k, 2);
        assert_eq!(pending(&u), vec![(1, 1, BTreeMap::new())]);
        // Once minute 2 has ended, it goes too; a further flush adds nothing.
        u.drain_ended("k", &k, 3);
        u.drain_ended("k", &k, 3);
        assert_eq!(
            pending(&u),
            vec![(1, 1, BTreeMap::new()), (2, 1, BTreeMap::new())]
        );
    }
}
