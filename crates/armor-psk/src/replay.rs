//! Replay protection: fixed-size fingerprints and an in-memory guard.
//!
//! After a signature verifies, the verifier claims two fingerprints until
//! the timestamp leaves the window: one of (key id, nonce) and one of the
//! signature itself (SPEC.md, "Freshness and replay"). Either already held
//! means a replay.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

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
}

/// One stored fingerprint: the top 96 bits of the hash, and the last second
/// it must be kept in the low 32 bits. Equality and hashing look only at the
/// top 96 bits, so a look-up finds an entry whatever its expiry.
#[derive(Clone, Copy)]
struct Entry(u128);

const EXPIRY_BITS: u32 = 32;
const HASH_MASK: u128 = !((1u128 << EXPIRY_BITS) - 1);

impl Entry {
    fn new(fp: u128, until: u64) -> Self {
        // Unix seconds fit 32 bits until 2106; later ones saturate, which
        // only keeps an entry longer.
        let until = u32::try_from(until).unwrap_or(u32::MAX);
        Entry((fp & HASH_MASK) | u128::from(until))
    }
    fn until(self) -> u64 {
        (self.0 & !HASH_MASK) as u64
    }
    fn live(self, now: u64) -> bool {
        // `now` saturates like `until`: past 2106 an entry is kept (and a
        // full guard fails closed) rather than taken as already expired.
        self.until() >= now.min(u64::from(u32::MAX))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.0 & HASH_MASK) == (other.0 & HASH_MASK)
    }
}
impl Eq for Entry {}
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((self.0 >> 64) as u64);
    }
}

/// The fingerprint is already a keyed hash: pass its bits through.
#[derive(Default)]
struct PassThrough(u64);
impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Set = HashSet<Entry, BuildHasherDefault<PassThrough>>;

struct Shard {
    set: Set,
    last_sweep: u64,
}

impl Shard {
    fn held(&self, fp: u128, now: u64) -> bool {
        self.set
            .get(&Entry::new(fp, 0))
            .is_some_and(|e| e.live(now))
    }

    /// Makes room for one insert: when the table (or the budget) is full,
    /// drop the expired entries first, at most once a second, so the table
    /// grows only with live ones.
    fn reserve_one(&mut self, now: u64, max: usize) {
        let len = self.set.len();
        if (len < self.set.capacity() && len < max) || self.last_sweep == now {
            return;
        }
        self.last_sweep = now;
        self.set.retain(|e| e.live(now));
        if self.set.len() < self.set.capacity() / 4 {
            self.set.shrink_to(self.set.len() * 2);
        }
    }

    fn insert(&mut self, fp: u128, until: u64) {
        // `replace` overwrites an expired entry with the same fingerprint.
        self.set.replace(Entry::new(fp, until));
    }
}

const SHARDS: usize = 64;

/// In-memory [`ReplayGuard`] for one process.
///
/// Memory: 16 bytes plus one control byte per fingerprint and table slot,
/// two fingerprints per accepted request; bounded by the traffic in the
/// window because expired entries are swept before a table grows. A live
/// entry is never dropped: past `max_entries`, claims are refused with
/// [`ReplayError::Unavailable`] instead.
pub struct MemoryReplayGuard {
    shards: Box<[Mutex<Shard>]>,
    max_per_shard: usize,
}

impl MemoryReplayGuard {
    /// A guard holding at most `max_entries` fingerprints (two per request).
    pub fn new(max_entries: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    set: Set::default(),
                    last_sweep: 0,
                })
            })
            .collect();
        MemoryReplayGuard {
            shards,
            max_per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Fingerprints currently stored (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).set.len())
            .sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes held by the tables.
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let cap = s
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .set
                    .capacity();
                cap * (std::mem::size_of::<Entry>() + 1)
            })
            .sum()
    }

    /// Drops every expired entry now.
    pub fn sweep(&self, now: u64) {
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
            s.last_sweep = now;
            s.set.retain(|e| e.live(now));
        }
    }

    fn shard_of(fp: u128) -> usize {
        // Bits not used by the table's own hash (which takes the top 64).
        ((fp >> 40) as usize) % SHARDS
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn claim(&self, fp: &Fingerprints, until: u64, now: u64) -> Result<(), ReplayError> {
        let (a, b) = (Self::shard_of(fp.pair), Self::shard_of(fp.signature));
        let lock = |i: usize| {
            self.shards[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        // Lock in index order; one lock when both land in the same shard.
        let (mut first, mut second) = match a.cmp(&b) {
            std::cmp::Ordering::Equal => (lock(a), None),
            std::cmp::Ordering::Less => {
                let x = lock(a);
                (x, Some(lock(b)))
            }
            std::cmp::Ordering::Greater => {
                let y = lock(b);
                (lock(a), Some(y))
            }
        };
        let pair_shard = &first;
        let sig_shard = second.as_ref().unwrap_or(&first);
        if pair_shard.held(fp.pair, now) || sig_shard.held(fp.signature, now) {
            return Err(ReplayError::Reused);
        }
        for shard in std::iter::once(&mut *first).chain(second.as_deref_mut()) {
            shard.reserve_one(now, self.max_per_shard);
            if shard.set.len() >= self.max_per_shard {
                return Err(ReplayError::Unavailable);
            }
        }
        match second.as_deref_mut() {
            Some(sig) => {
                first.insert(fp.pair, until);
                sig.insert(fp.signature, until);
            }
            None => {
                first.insert(fp.pair, until);
                first.insert(fp.signature, until);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(p: u128, s: u128) -> Fingerprints {
        Fingerprints {
            pair: p << 64,
            signature: s << 64,
        }
    }

    #[test]
    fn either_fingerprint_held_is_a_replay() {
        let g = MemoryReplayGuard::new(1000);
        assert_eq!(g.claim(&fp(1, 2), 100, 10), Ok(()));
        assert_eq!(g.claim(&fp(1, 3), 100, 10), Err(ReplayError::Reused));
        assert_eq!(g.claim(&fp(4, 2), 100, 10), Err(ReplayError::Reused));
        assert_eq!(g.claim(&fp(4, 5), 100, 10), Ok(()));
    }

    #[test]
    fn held_through_the_last_second_then_free() {
        let g = MemoryReplayGuard::new(1000);
        g.claim(&fp(1, 2), 100, 10).unwrap();
        assert_eq!(g.claim(&fp(1, 9), 200, 100), Err(ReplayError::Reused));
        assert_eq!(g.claim(&fp(1, 9), 200, 101), Ok(()));
    }

    #[test]
    fn full_guard_fails_closed_and_never_forgets() {
        let g = MemoryReplayGuard::new(SHARDS * 2);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..2000u128 {
            match g.claim(&fp(i * 2 + 1, i * 2 + 2), 1_000, 10) {
                Ok(()) => accepted.push(i),
                Err(ReplayError::Unavailable) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(refused > 0);
        for i in accepted {
            assert_eq!(
                g.claim(&fp(i * 2 + 1, 7_777_777), 1_000, 11),
                Err(ReplayError::Reused)
            );
        }
        // Once the window has passed, room comes back.
        assert_eq!(g.claim(&fp(99_999, 99_998), 3_000, 1_001), Ok(()));
    }

    #[test]
    fn expired_entries_are_swept_before_growth() {
        let g = MemoryReplayGuard::new(1 << 20);
        for sec in 0..50u64 {
            for i in 0..200u128 {
                let n = u128::from(sec) * 1000 + i;
                g.claim(&fp(2 * n + 1, 2 * n + 2), sec + 2, sec).unwrap();
            }
        }
        // 3 seconds of traffic are live at most; far fewer than 50 s worth.
        assert!(g.len() < 200 * 2 * 10, "{}", g.len());
    }

    #[test]
    fn fingerprints_separate_fields() {
        let k = FingerprintKey::new([7; 16]);
        let sig = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";
        let a = format!("ARMOR-PSK ab:{sig}:c:1");
        let b = format!("ARMOR-PSK a:{sig}:bc:1");
        let fa = k.fingerprints(&Credentials::parse(&a).unwrap());
        let fb = k.fingerprints(&Credentials::parse(&b).unwrap());
        assert_ne!(fa.pair, fb.pair);
        assert_eq!(fa.signature, fb.signature);
    }
}
