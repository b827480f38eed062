//! Replay protection: fixed-size fingerprints and an in-memory guard.
//!
//! After a signature verifies, the verifier claims two fingerprints until
//! the timestamp leaves the window: one of (key id, nonce) and one of the
//! signature itself (SPEC.md, "Freshness and replay"). Either already held
//! means a replay.

use std::hash::Hasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::parse::Credentials;

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// One of the fingerprints is held: `nonce_reused`.
    Reused,
    /// The guard cannot answer (unreachable, or full): fail closed.
    Unavailable,
}

/// Two keyed 128-bit fingerprints of one verified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprints {
    /// Of the pair (key id, nonce).
    pub pair: u128,
    /// Of the signature bytes.
    pub signature: u128,
}

/// The key of the fingerprint hash. Nodes sharing a replay store must share
/// it; a single process can draw it at random.
#[derive(Clone)]
pub struct FingerprintKey {
    k0: u64,
    k1: u64,
}

impl FingerprintKey {
    /// A fingerprint key from 16 bytes.
    pub fn new(key: [u8; 16]) -> Self {
        let (a, b) = key.split_at(8);
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(a);
        k1.copy_from_slice(b);
        FingerprintKey {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }

    /// The fingerprints of verified credentials.
    pub fn fingerprints(&self, creds: &Credentials<'_>) -> Fingerprints {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(b"pair");
        h.write(&(creds.key_id().len() as u64).to_le_bytes());
        h.write(creds.key_id().as_bytes());
        h.write(creds.nonce().as_bytes());
        let pair = h.finish128().as_u128();
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(b"sig");
        h.write(creds.signature().as_bytes());
        let signature = h.finish128().as_u128();
        Fingerprints { pair, signature }
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// Atomically claims both fingerprints of a verified request until the Unix
/// second `until` (inclusive), or refuses if either is held.
pub trait ReplayGuard: Send + Sync {
    /// `now` is the caller's clock; entries with `until < now` are free.
    fn claim(&self, fp: &Fingerprints, until: u64, now: u64) -> Result<(), ReplayError>;

    /// Starts loading what a claim of `fp` will read, so that the memory
    /// arrives while the caller verifies the signature. A hint with no
    /// effect on any claim; the default does nothing.
    fn prefetch(&self, _fp: &Fingerprints) {}
}

/// Unix seconds in 32 bits. They fit until 2106; later ones saturate, which
/// only keeps an entry longer. `now` saturates the same way, so past 2106
/// an entry is kept (and a full guard fails closed) rather than taken as
/// already expired.
fn secs(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// The 64 bits of a fingerprint a table stores: its top half. The shard is
/// chosen by bits 40..46 (see `MemoryReplayGuard::shard_of`), so 70 bits
/// tell two fingerprints apart. 0 marks an empty slot: a top half of 0 is
/// stored as 1.
fn slot_key(fp: u128) -> u64 {
    ((fp >> 64) as u64).max(1)
}

/// The first slot probed for `key`: the key scaled to `0..cap`
/// ("fastrange"), so a capacity need not be a power of two. The key is
/// already a keyed hash, so its top bits are uniform.
fn home(key: u64, cap: usize) -> usize {
    ((u128::from(key) * cap as u128) >> 64) as usize
}

/// Heap bytes per slot: a fingerprint and an expiry, in two parallel arrays
/// (an array of `(u64, u32)` would pad each slot to 16).
const SLOT_BYTES: usize = std::mem::size_of::<u64>() + std::mem::size_of::<u32>();

/// The smallest table allocated.
const MIN_CAP: usize = 8;

/// The most slots a table may fill: 7/8 of them, so every probe ends on an
/// empty slot, and a look-up of an absent key reads ~33 slots on average at
/// worst (linear probing: (1 + 1/(1 - load)²) / 2).
fn max_load(cap: usize) -> usize {
    cap * 7 / 8
}

/// The smallest capacity whose max load holds `n` entries.
fn cap_for(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8).div_ceil(7).max(MIN_CAP)
    }
}

/// The capacity a table of `cap` slots should have for `live` entries and
/// `n` more, decided after a sweep: 1.5 times larger when they would fill
/// more than 13/16 of it (the load is then 0.54–0.58), shrunk to a 0.7 load
/// when they would fill less than half (0 when nothing is left), otherwise
/// unchanged. Never more than a `budget` of entries needs, never too small
/// for `live`. So after every sweep the load is at least 1/2: at most
/// 24 bytes per fingerprint.
fn target_cap(cap: usize, live: usize, n: usize, budget: usize) -> usize {
    let need = live + n;
    let target = if need * 16 > cap * 13 {
        (cap + cap / 2).max(cap_for(need))
    } else if need * 2 < cap {
        (need * 10 / 7).max(cap_for(need))
    } else {
        cap
    };
    target.min(cap_for(budget)).max(cap_for(live))
}

/// Open addressing with linear probing. A key is found between its home
/// slot and the next empty slot, wrapping around the end. An expired entry
/// keeps its slot, so chains stay whole, until a rehash drops it or an
/// insert takes the slot over.
#[derive(Default)]
struct Table {
    /// Stored fingerprints ([`slot_key`]); 0 is an empty slot.
    keys: Box<[u64]>,
    /// The last second each entry is held ([`secs`]).
    until: Box<[u32]>,
    /// Occupied slots, live or expired.
    len: usize,
}

impl Table {
    fn with_capacity(cap: usize) -> Self {
        Table {
            keys: vec![0; cap].into_boxed_slice(),
            until: vec![0; cap].into_boxed_slice(),
            len: 0,
        }
    }

    fn cap(&self) -> usize {
        self.keys.len()
    }

    /// The slots `key` may occupy, in probe order: its home slot to the end
    /// of the array, then from the start, each once.
    fn probe(&self, key: u64) -> Probe {
        let cap = self.cap();
        Probe {
            next: if cap == 0 { 0 } else { home(key, cap) },
            left: cap,
            cap,
        }
    }

    /// One walk along `key`'s chain, to its end (the first empty slot):
    /// whether `key` is held at the second `now`, and where to store it.
    /// Each step reads the key and the expiry of a slot, two loads the CPU
    /// issues together.
    fn lookup(&self, key: u64, now: u32) -> Lookup {
        let mut expired = None;
        for i in self.probe(key) {
            let (k, until) = (self.keys[i], self.until[i]);
            if k == key {
                return Lookup {
                    slot: Some(i),
                    empty: false,
                    live: until >= now,
                };
            }
            if k == 0 {
                return Lookup {
                    slot: expired.or(Some(i)),
                    empty: expired.is_none(),
                    live: false,
                };
            }
            if expired.is_none() && until < now {
                expired = Some(i);
            }
        }
        Lookup {
            slot: expired,
            empty: false,
            live: false,
        }
    }

    /// Stores `key` where `at`, its look-up in this unchanged table, says.
    /// False only when there is no room: callers reserve first.
    fn put(&mut self, at: Lookup, key: u64, until: u32) -> bool {
        let Some(i) = at.slot else {
            return false;
        };
        self.keys[i] = key;
        self.until[i] = until;
        self.len += usize::from(at.empty);
        true
    }

    /// Holds `key` until `until`: in its own slot if it is there (then not
    /// live, or the caller refused the claim), else in the first expired
    /// slot of its chain, else in the empty slot that ends the chain. An
    /// expired slot is taken only once the whole chain is known not to hold
    /// `key`, so a key is never stored twice.
    fn insert(&mut self, key: u64, until: u32, now: u32) -> bool {
        let at = self.lookup(key, now);
        self.put(at, key, until)
    }

    /// Whether `n` more entries fit under the max load and the `budget`.
    fn fits(&self, n: usize, budget: usize) -> bool {
        self.len + n <= max_load(self.cap()) && self.len + n <= budget
    }

    fn count_live(&self, now: u32) -> usize {
        self.keys
            .iter()
            .zip(self.until.iter())
            .filter(|&(&k, &u)| k != 0 && u >= now)
            .count()
    }

    /// The live entries in a new table of `cap` slots; `None` if they do not
    /// fit (never, as callers size it, but no entry is ever dropped).
    fn rehashed(&self, cap: usize, now: u32) -> Option<Table> {
        let mut t = Table::with_capacity(cap);
        for (&k, &u) in self.keys.iter().zip(self.until.iter()) {
            if k != 0 && u >= now && !t.insert(k, u, now) {
                return None;
            }
        }
        Some(t)
    }
}

/// See [`Table::probe`].
struct Probe {
    next: usize,
    left: usize,
    cap: usize,
}

impl Iterator for Probe {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let i = self.next;
        self.next = if i + 1 == self.cap { 0 } else { i + 1 };
        Some(i)
    }
}

/// Where a look-up ended: see [`Table::lookup`].
#[derive(Clone, Copy)]
struct Lookup {
    /// Where the key goes: its own slot, else the first expired slot of its
    /// chain, else the empty slot that ends the chain (`None`: no room).
    slot: Option<usize>,
    /// Whether `slot` is empty, so storing there adds an entry.
    empty: bool,
    /// Whether the key is held.
    live: bool,
}

struct Shard {
    table: Table,
    /// The second of the last sweep, to sweep at most once a second.
    last_sweep: u64,
}

impl Shard {
    /// Makes room for `n` new entries within `budget`. When the table is at
    /// its max load (or the budget is spent), the expired entries are
    /// dropped first, at most once a second, and the table resized to what
    /// is left ([`target_cap`]); swept already this second, it only grows.
    fn reserve(&mut self, n: usize, now: u64, budget: usize) -> bool {
        if self.table.fits(n, budget) {
            return true;
        }
        let cap = self.table.cap();
        if self.last_sweep != now {
            self.last_sweep = now;
            let live = self.table.count_live(secs(now));
            self.resize(target_cap(cap, live, n, budget), live, now);
        } else if self.table.len + n > max_load(cap) {
            // Nothing has expired since the sweep, short of claims stored
            // already expired or clocks that disagree: grow for them all.
            let len = self.table.len;
            self.resize(target_cap(cap, len, n, budget).max(cap), len, now);
        }
        self.table.fits(n, budget)
    }

    /// Drops every expired entry now, and shrinks a mostly empty table.
    fn sweep(&mut self, now: u64, budget: usize) {
        self.last_sweep = now;
        let cap = self.table.cap();
        let live = self.table.count_live(secs(now));
        self.resize(target_cap(cap, live, 0, budget).min(cap), live, now);
    }

    /// Rehashes the `live` entries into `cap` slots, unless that changes
    /// nothing.
    fn resize(&mut self, cap: usize, live: usize, now: u64) {
        if cap == self.table.cap() && live == self.table.len {
            return;
        }
        if let Some(t) = self.table.rehashed(cap, secs(now)) {
            self.table = t;
        }
    }
}

const SHARDS: usize = 64;

/// A shard's table addresses and capacity, as last published.
#[derive(Default)]
struct Hint {
    keys: AtomicUsize,
    until: AtomicUsize,
    cap: AtomicUsize,
}

impl Hint {
    fn publish(&self, t: &Table) {
        self.keys.store(t.keys.as_ptr() as usize, Ordering::Relaxed);
        self.until
            .store(t.until.as_ptr() as usize, Ordering::Relaxed);
        self.cap.store(t.cap(), Ordering::Relaxed);
    }
}

/// Starts loading the cache line at `addr` (a hint: it may be a replaced
/// table's, as [`Hint`]s are read without the lock; the server's key cache
/// uses it too). The address becomes a pointer by wrapping arithmetic from
/// a static and is never read: a prefetch does not fault.
pub fn prefetch_addr(addr: usize) {
    static ORIGIN: u8 = 0;
    let origin = std::ptr::addr_of!(ORIGIN) as usize;
    prefetch_index::prefetch_index(std::slice::from_ref(&ORIGIN), addr.wrapping_sub(origin));
}

/// In-memory [`ReplayGuard`] for one process.
///
/// 64 shards, each an open-addressing table (linear probing) of 12-byte
/// slots: the top 64 bits of a fingerprint and its 32-bit expiry, in two
/// parallel arrays. Expired entries are swept before a table grows (at most
/// once a second per shard), and a table grows by 1.5× or shrinks so that
/// after a sweep it is between 1/2 and 13/16 full; it is never fuller than
/// 7/8. Between sweeps it only fills, so a table past its first 8 slots is
/// always at least half full: 14–24 bytes per stored fingerprint, at most
/// 48 bytes per request (two fingerprints), plus 5 KiB for the shards and
/// their hints. So memory follows the traffic in the window.
///
/// A large table is out of cache (and out of the TLB's reach), so a
/// claim's two look-ups wait for memory. [`ReplayGuard::prefetch`] starts
/// those loads from each shard's last published table address, without
/// its lock (a locked instruction would wait for them), so that they
/// overlap the HMAC.
///
/// A live entry is never dropped: past `max_entries`, claims are refused
/// with [`ReplayError::Unavailable`] instead.
///
/// False replays: a fingerprint is compared only with those of its shard
/// (6 bits of it) on the 64 stored bits, so a fresh request's fingerprint
/// matches a stored one with probability ≈ live / 2^70 (≤ live / 2^64):
/// with 10 M live fingerprints, 8.5·10⁻¹⁵ per fingerprint, one fresh
/// request in ~6·10¹³ refused as a replay.
pub struct MemoryReplayGuard {
    shards: Box<[Mutex<Shard>]>,
    /// Where each shard's table is, for [`ReplayGuard::prefetch`] to read
    /// without the shard's lock; set under it whenever a table is replaced.
    hints: Box<[Hint]>,
    /// Entries per shard: at least one request's two.
    budget: usize,
}

impl MemoryReplayGuard {
    /// A guard holding at most `max_entries` fingerprints (two per request),
    /// spread over 64 shards of `max_entries / 64` (rounded up, at least 2).
    pub fn new(max_entries: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    table: Table::default(),
                    last_sweep: 0,
                })
            })
            .collect();
        MemoryReplayGuard {
            shards,
            hints: (0..SHARDS).map(|_| Hint::default()).collect(),
            budget: max_entries.div_ceil(SHARDS).max(2),
        }
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Fingerprints currently stored (live or not yet swept).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).table.len).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held: 12 per table slot, and the shards and their hints.
    pub fn memory_bytes(&self) -> usize {
        let tables: usize = (0..SHARDS).map(|i| self.lock(i).table.cap()).sum();
        tables * SLOT_BYTES
            + std::mem::size_of_val(&*self.shards)
            + std::mem::size_of_val(&*self.hints)
    }

    /// Drops every expired entry now, shrinking mostly empty tables.
    pub fn sweep(&self, now: u64) {
        for i in 0..SHARDS {
            self.publishing(i, &mut self.lock(i), |s| s.sweep(now, self.budget));
        }
    }

    /// Where `fp`'s home slot is in its shard's table, by the shard's
    /// [`Hint`]: the address of its key and of its expiry (`None` before
    /// the shard has a table).
    fn home_lines(&self, fp: u128) -> Option<[usize; 2]> {
        let h = &self.hints[Self::shard_of(fp)];
        let cap = h.cap.load(Ordering::Relaxed);
        (cap > 0).then(|| {
            let i = home(slot_key(fp), cap);
            [
                (h.keys.load(Ordering::Relaxed)).wrapping_add(i * std::mem::size_of::<u64>()),
                (h.until.load(Ordering::Relaxed)).wrapping_add(i * std::mem::size_of::<u32>()),
            ]
        })
    }

    /// `Shard::reserve` on shard `i`, publishing its table if that replaced it.
    fn reserve(&self, i: usize, shard: &mut Shard, n: usize, now: u64) -> bool {
        self.publishing(i, shard, |s| s.reserve(n, now, self.budget))
    }

    /// Runs `change` on shard `i` (locked by the caller) and publishes the
    /// shard's table in its [`Hint`] if `change` replaced it.
    fn publishing<T>(
        &self,
        i: usize,
        shard: &mut Shard,
        change: impl FnOnce(&mut Shard) -> T,
    ) -> T {
        let before = (shard.table.keys.as_ptr(), shard.table.cap());
        let out = change(shard);
        if (shard.table.keys.as_ptr(), shard.table.cap()) != before {
            self.hints[i].publish(&shard.table);
        }
        out
    }

    fn shard_of(fp: u128) -> usize {
        // Bits the tables do not store (they keep the top 64).
        ((fp >> 40) as usize) % SHARDS
    }
}

impl ReplayGuard for MemoryReplayGuard {
    /// Reads each shard's [`Hint`], not its lock: the prefetch never waits,
    /// and its loads are not waited for by a locked instruction.
    fn prefetch(&self, fp: &Fingerprints) {
        for f in [fp.pair, fp.signature] {
            if let Some(lines) = self.home_lines(f) {
                lines.into_iter().for_each(prefetch_addr);
            }
        }
    }

    fn claim(&self, fp: &Fingerprints, until: u64, now: u64) -> Result<(), ReplayError> {
        let (a, b) = (Self::shard_of(fp.pair), Self::shard_of(fp.signature));
        // Lock in index order; one lock when both land in the same shard.
        let (mut first, mut second) = match a.cmp(&b) {
            std::cmp::Ordering::Equal => (self.lock(a), None),
            std::cmp::Ordering::Less => {
                let x = self.lock(a);
                (x, Some(self.lock(b)))
            }
            std::cmp::Ordering::Greater => {
                let y = self.lock(b);
                (self.lock(a), Some(y))
            }
        };
        let keys = [slot_key(fp.pair), slot_key(fp.signature)];
        let (until_s, now_s) = (secs(until), secs(now));
        let pair_at = first.table.lookup(keys[0], now_s);
        let sig_at = second
            .as_ref()
            .unwrap_or(&first)
            .table
            .lookup(keys[1], now_s);
        if pair_at.live || sig_at.live {
            return Err(ReplayError::Reused);
        }
        // Room in every table first, so both are stored or neither.
        let budget = self.budget;
        let stored = match second.as_deref_mut() {
            // Most claims: two tables with room, unchanged since the
            // look-ups, which say where to store.
            Some(sig) if first.table.fits(1, budget) && sig.table.fits(1, budget) => {
                first.table.put(pair_at, keys[0], until_s) & sig.table.put(sig_at, keys[1], until_s)
            }
            Some(sig) => {
                if !self.reserve(a, &mut first, 1, now) || !self.reserve(b, sig, 1, now) {
                    return Err(ReplayError::Unavailable);
                }
                first.table.insert(keys[0], until_s, now_s)
                    & sig.table.insert(keys[1], until_s, now_s)
            }
            None => {
                if !self.reserve(a, &mut first, 2, now) {
                    return Err(ReplayError::Unavailable);
                }
                first.table.insert(keys[0], until_s, now_s)
                    & first.table.insert(keys[1], until_s, now_s)
            }
        };
        // Not stored only if a table with room had none, which cannot
        // happen; refusing keeps the guard closed.
        if stored {
            Ok(())
        } else {
            Err(ReplayError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests;
