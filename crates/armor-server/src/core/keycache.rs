//! The verifier's key cache: every active key with its keyed HMAC state,
//! found by a keyed 128-bit hash of the key id, in a constant-time
//! look-up.
//!
//! A request's key id must not tell, by timing, whether it exists. So
//! [`KeyCache::lookup`] does the same work for a hit and a miss: it hashes
//! the id, reads the same eight slots of a cuckoo table (two buckets of
//! four), keeps the matching place with a branch-free select, and copies
//! out the keyed HMAC state found there. For an unknown id that is the
//! state at a place the hash picks among all of the shard's places: a few
//! dummies (random secrets) and the keys. Either way the state comes from
//! the same array, so a miss reads memory laid out like a hit's, and it is
//! verified like a key's (see `KeyVerifier::psk_finish`, which never accepts a
//! request whose key id is not cached, whatever state verified it).
//!
//! Each place also holds its key's entry, a [`CachedKey`] (identity,
//! restrictions, last use, usage counts; a vacant one for dummies and freed
//! places), by value in an array beside the states: reaching it follows no
//! pointer. The look-up reads no entry; it notes the address of the one at
//! the place it found, so that a request whose signature has verified under
//! its own key's state can start loading it ([`Found::prefetch_entry`]).
//! An entry is used, under its shard's read lock, only once a signature
//! has verified ([`KeyCache::with_key_of`]), or off the request, by
//! [`KeyCache::with_key_alike`], to count a queued refusal (see
//! `core/usage.rs`), reading the same slots for a cached and an unknown id.
//!
//! A slot keeps 96 bits of the hash (a hash key drawn at random per
//! process): two ids are confused with probability 2⁻⁹⁶ per pair, and even
//! then a request verifies only under the other key's secret.
//!
//! Layout: [`KeyCache`] (the public face) over [`SHARDS`] shards, each a
//! `RwLock<Shard>` on cache lines of its own: a bucket array (four slots
//! of tag and place per cache line), the HMAC states by place (the first
//! [`DUMMIES`] places hold that shard's dummies) and the entries by place.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use armor_psk::SigningKey;
use siphasher::sip128::{Hasher128 as _, SipHasher13};
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};

use super::CachedKey;

/// Shards, each behind its own lock (by the top four bits of the hash).
const SHARDS: usize = 16;
/// Dummy states per shard, so that a shard without keys still has states
/// for unknown ids. Few: a dummy is reached only by unknown ids, so with
/// many dummies an unknown id would more often meet a state colder than
/// any key's.
const DUMMIES: usize = 2;
/// Slots per bucket.
const WAYS: usize = 4;
/// An empty slot's entry: the shard's first dummy, under tag 0. Should an
/// id's tag ever be 0 (probability 2⁻⁹⁶), it finds that dummy. Places
/// below [`DUMMIES`] hold dummies, so a slot is in use when its entry is
/// [`DUMMIES`] or more.
const EMPTY: u32 = 0;
/// Evictions tried before an insert grows the table.
const MAX_KICKS: usize = 256;

/// Four slots in one cache line. A slot keeps 96 bits of its key's hash
/// (`hi`: bits 64–127, `lo`: bits 0–31) and the key's place in the
/// shard's arrays.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    hi: [u64; WAYS],
    lo: [u32; WAYS],
    entries: [u32; WAYS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    hi: [0; WAYS],
    lo: [0; WAYS],
    entries: [EMPTY; WAYS],
};

/// The bits of a hash a slot keeps.
fn tag(h: u128) -> (u64, u32) {
    ((h >> 64) as u64, h as u32)
}

impl Bucket {
    fn holds(&self, way: usize, h: u128) -> bool {
        in_use(self.entries[way]) && (self.hi[way], self.lo[way]) == tag(h)
    }

    fn set(&mut self, way: usize, (h, entry): (u128, u32)) {
        (self.hi[way], self.lo[way]) = tag(h);
        self.entries[way] = entry;
    }

    /// The hash as far as the slot keeps it (bits 32–63 zero): enough to
    /// find both of its buckets again.
    fn hash(&self, way: usize) -> u128 {
        u128::from(self.hi[way]) << 64 | u128::from(self.lo[way])
    }
}

struct Shard {
    /// A power of two in length; a hash may sit in two buckets.
    buckets: Vec<Bucket>,
    /// HMAC states by place: dummies first, then keys; a freed place holds
    /// a dummy's state again.
    states: Vec<SigningKey>,
    /// The entries by place (vacant for dummies and freed places).
    keys: Vec<CachedKey>,
    /// Freed places, reused first.
    free: Vec<u32>,
    /// Keys held.
    len: usize,
    /// Varies which slot an insert evicts.
    kicks: u64,
}

fn in_use(entry: u32) -> bool {
    entry >= DUMMIES as u32
}

/// The two buckets a hash may occupy: from bits 0–31 and 64–127, which a
/// slot keeps (a shard never has 2³² buckets), so that a key can move.
fn buckets_of(h: u128, mask: usize) -> [usize; 2] {
    [(h as u32 as usize) & mask, ((h >> 64) as usize) & mask]
}

impl Shard {
    fn new(dummies: Vec<SigningKey>) -> Self {
        Shard {
            buckets: vec![EMPTY_BUCKET; 2],
            keys: dummies.iter().map(|_| CachedKey::vacant()).collect(),
            states: dummies,
            free: Vec::new(),
            len: 0,
            kicks: 0,
        }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The state of the key for `h`, or the state at a place `h` picks,
    /// and whether it is the key's own; reading the same slots either way
    /// and choosing without a branch.
    fn lookup(&self, h: u128) -> Found {
        let (found, hit) = self.find(h);
        Found {
            signing: self.states[found as usize].clone(),
            own: hit.into(),
            hash: h,
            entry: self.keys.as_ptr().wrapping_add(found as usize) as usize,
        }
    }

    /// The place of the key for `h` and whether it is `h`'s own, or a place
    /// `h` picks: reading the same slots either way and choosing without a
    /// branch.
    fn find(&self, h: u128) -> (u32, Choice) {
        // Any place, dummy or key, by bits 32–63 of the hash (multiply and
        // shift: no division).
        let places = self.states.len() as u64;
        let mut found = ((u64::from((h >> 32) as u32) * places) >> 32) as u32;
        let mut hit = Choice::from(0);
        let (hi, lo) = tag(h);
        for b in buckets_of(h, self.mask()) {
            let bucket = &self.buckets[b];
            for way in 0..WAYS {
                // An empty slot (tag 0, the first dummy) matches only an id
                // whose tag is 0 (2⁻⁹⁶): it then gets a dummy's state,
                // under which no signature can be made, and is not cached.
                let diff = (bucket.hi[way] ^ hi) | u64::from(bucket.lo[way] ^ lo);
                let same = diff.ct_eq(&0);
                found = u32::conditional_select(&found, &bucket.entries[way], same);
                hit |= same;
            }
        }
        (found, hit)
    }

    /// Where `h` sits: bucket and way. Not constant-time (writers only).
    fn position(&self, h: u128) -> Option<(usize, usize)> {
        buckets_of(h, self.mask()).into_iter().find_map(|b| {
            let bucket = &self.buckets[b];
            (0..WAYS).find(|&w| bucket.holds(w, h)).map(|w| (b, w))
        })
    }

    /// Holds `key` for `h`; returns the entry it replaces, if any.
    fn insert(&mut self, h: u128, key: CachedKey, signing: SigningKey) -> Option<CachedKey> {
        if let Some((b, w)) = self.position(h) {
            let e = self.buckets[b].entries[w] as usize;
            self.states[e] = signing;
            return Some(std::mem::replace(&mut self.keys[e], key));
        }
        let e = match self.free.pop() {
            Some(e) => {
                self.states[e as usize] = signing;
                self.keys[e as usize] = key;
                e
            }
            None => {
                self.make_room();
                self.states.push(signing);
                self.keys.push(key);
                (self.states.len() - 1) as u32
            }
        };
        self.len += 1;
        // At most half full: cuckoo inserts with four-way buckets then
        // almost never need more than a few evictions.
        if self.len * 2 > self.buckets.len() * WAYS {
            self.grow();
        }
        let mut item = (h, e);
        loop {
            match self.place(item) {
                None => return None,
                Some(homeless) => {
                    item = homeless;
                    self.grow();
                }
            }
        }
    }

    /// Grows `states` by moving every state into a new array through
    /// `Clone`, so that the old one is dropped state by state (zeroized):
    /// `Vec`'s own growth would copy the bytes and free the old buffer with
    /// the HMAC states still in it.
    fn make_room(&mut self) {
        if self.states.len() < self.states.capacity() {
            return;
        }
        let mut bigger = Vec::with_capacity((self.states.capacity() * 2).max(8));
        bigger.extend(self.states.iter().cloned());
        self.states = bigger;
    }

    /// Puts `(tag, entry)` in one of its buckets, evicting as cuckoo
    /// hashing does; returns the item left without a place, if any.
    fn place(&mut self, mut item: (u128, u32)) -> Option<(u128, u32)> {
        let mask = self.mask();
        for _ in 0..MAX_KICKS {
            let pair = buckets_of(item.0, mask);
            for b in pair {
                let bucket = &mut self.buckets[b];
                if let Some(w) = bucket.entries.iter().position(|&e| !in_use(e)) {
                    bucket.set(w, item);
                    return None;
                }
            }
            self.kicks = self.kicks.wrapping_add(1);
            let b = pair[(self.kicks & 1) as usize];
            let w = ((self.kicks >> 1) as usize) % WAYS;
            let bucket = &mut self.buckets[b];
            let evicted = (bucket.hash(w), bucket.entries[w]);
            bucket.set(w, item);
            item = evicted;
        }
        Some(item)
    }

    /// Doubles the buckets and places every held key again.
    fn grow(&mut self) {
        let held: Vec<(u128, u32)> = self
            .buckets
            .iter()
            .flat_map(|b| (0..WAYS).map(move |w| (b.hash(w), b.entries[w])))
            .filter(|&(_, e)| in_use(e))
            .collect();
        let mut size = self.buckets.len() * 2;
        'again: loop {
            self.buckets = vec![EMPTY_BUCKET; size];
            for &item in &held {
                if self.place(item).is_some() {
                    size *= 2;
                    continue 'again;
                }
            }
            return;
        }
    }

    /// Frees the place of the key in bucket `b`, way `w`; returns its entry.
    fn remove_at(&mut self, b: usize, w: usize) -> CachedKey {
        let e = self.buckets[b].entries[w];
        self.buckets[b].set(w, (0, EMPTY));
        // The freed place holds a dummy's state, so that no stale key
        // stays reachable through it.
        let e = e as usize;
        self.states[e] = self.states[e % DUMMIES].clone();
        self.free.push(e as u32);
        self.len -= 1;
        std::mem::replace(&mut self.keys[e], CachedKey::vacant())
    }

    fn key_at(&self, b: usize, w: usize) -> &CachedKey {
        &self.keys[self.buckets[b].entries[w] as usize]
    }

    fn held(&self) -> impl Iterator<Item = (usize, usize, &CachedKey)> {
        self.buckets
            .iter()
            .enumerate()
            .flat_map(move |(b, bucket)| {
                (0..WAYS)
                    .filter(move |&w| in_use(bucket.entries[w]))
                    .map(move |w| (b, w, self.key_at(b, w)))
            })
    }
}

/// What [`KeyCache::lookup`] found: a copy of the HMAC state to verify
/// under, and whether it is the id's own key's or borrowed (the id is not
/// cached). A borrowed state may be another key's: a request that verifies
/// under it was signed with that key's secret, and must be refused. So the
/// flag is checked once a signature has verified, never before (the check
/// would then take time for unknown ids only).
pub struct Found {
    signing: SigningKey,
    own: bool,
    /// The id's hash, so that [`KeyCache::with_key_of`] need not hash it again.
    hash: u128,
    /// The address of the entry at the place found (never read through).
    entry: usize,
}

impl Found {
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// Whether the state is the looked-up key's own.
    pub fn is_own(&self) -> bool {
        self.own
    }

    /// Starts loading the cache lines of the entry at the place found that
    /// an accepted request uses: for a request whose signature verified
    /// under its own key's state (after that, how long a request takes no
    /// longer says whether its id exists). A hint: the entry may have moved.
    pub fn prefetch_entry(&self) {
        for line in [0, 64] {
            armor_psk::replay::prefetch_addr(self.entry.wrapping_add(line));
        }
    }

    /// The looked-up id's hash (for [`KeyCache::with_key_alike`]).
    pub fn hash(&self) -> u128 {
        self.hash
    }
}

/// A shard on cache lines of its own: its lock and table headers are read
/// on every look-up, and must neither straddle a line (a look-up in one
/// shard would cost more than in another) nor share one with another shard
/// (threads would contend on it).
#[repr(align(128))]
struct Padded(RwLock<Shard>);

/// Active keys by a keyed hash of their id.
pub struct KeyCache {
    shards: Box<[Padded]>,
    k0: u64,
    k1: u64,
}

impl KeyCache {
    /// An empty cache under the hash key `key`; `dummy` makes the dummy
    /// states (each keyed with its own random secret).
    pub fn new(key: [u8; 16], mut dummy: impl FnMut() -> SigningKey) -> Self {
        let (a, b) = key.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        KeyCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(RwLock::new(Shard::new(
                        (0..DUMMIES).map(|_| dummy()).collect(),
                    )))
                })
                .collect(),
            k0: word(a),
            k1: word(b),
        }
    }

    /// The keyed hash an id is found under (see [`Found::hash`]).
    pub fn hash_of(&self, key_id: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        std::hash::Hasher::write(&mut h, key_id.as_bytes());
        h.finish128().as_u128()
    }

    fn read(&self, h: u128) -> RwLockReadGuard<'_, Shard> {
        self.shards[(h >> 124) as usize % SHARDS]
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, h: u128) -> RwLockWriteGuard<'_, Shard> {
        self.shards[(h >> 124) as usize % SHARDS]
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_all(&self) -> impl Iterator<Item = RwLockWriteGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.0.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of the HMAC state of the key with this id or, if there is
    /// none, of the state at a place the id's hash picks; in the same time
    /// either way. For the verifier.
    pub fn lookup(&self, key_id: &str) -> Found {
        let h = self.hash_of(key_id);
        self.read(h).lookup(h)
    }

    /// `f` of the entry of the key with this id, if cached, under its
    /// shard's read lock (`f` must not take a key cache lock). Not
    /// constant-time.
    pub fn with_key<R>(&self, key_id: &str, f: impl FnOnce(&CachedKey) -> R) -> Option<R> {
        self.with_hash(self.hash_of(key_id), f)
    }

    /// `f` of the entry of the key `found` was looked up for, if it is
    /// cached now (the id is not hashed again), as [`KeyCache::with_key`].
    /// Not constant-time: for verified requests.
    pub fn with_key_of<R>(&self, found: &Found, f: impl FnOnce(&CachedKey) -> R) -> Option<R> {
        self.with_hash(found.hash, f)
    }

    /// `f` of the entry of the key whose id has hash `h` (from
    /// [`Found::hash`]), if cached, reading the same slots as
    /// [`KeyCache::lookup`] whether it is or not: for counting queued
    /// refusals, which must not leave a cached id's slots warmer than an
    /// unknown one's.
    pub fn with_key_alike<R>(&self, h: u128, f: impl FnOnce(&CachedKey) -> R) -> Option<R> {
        let shard = self.read(h);
        let (place, hit) = shard.find(h);
        let key = &shard.keys[place as usize];
        bool::from(hit).then(|| f(key))
    }

    fn with_hash<R>(&self, h: u128, f: impl FnOnce(&CachedKey) -> R) -> Option<R> {
        let shard = self.read(h);
        shard.position(h).map(|(b, w)| f(shard.key_at(b, w)))
    }

    /// Adds a key with its HMAC state, or replaces the one with the same
    /// id; returns the entry replaced.
    pub fn insert(&self, key: CachedKey, signing: SigningKey) -> Option<CachedKey> {
        let h = self.hash_of(&key.id.key_id);
        self.write(h).insert(h, key, signing)
    }

    /// Drops the key with this id; returns its entry.
    pub fn remove(&self, key_id: &str) -> Option<CachedKey> {
        let h = self.hash_of(key_id);
        let mut shard = self.write(h);
        shard.position(h).map(|(b, w)| shard.remove_at(b, w))
    }

    /// Keeps the keys for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&CachedKey) -> bool) {
        for mut shard in self.write_all() {
            let gone: Vec<(usize, usize)> = shard
                .held()
                .filter(|(_, _, k)| !keep(k))
                .map(|(b, w, _)| (b, w))
                .collect();
            for (b, w) in gone {
                shard.remove_at(b, w);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.read().unwrap_or_else(PoisonError::into_inner).len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn for_each(&self, mut f: impl FnMut(&CachedKey)) {
        for shard in self.shards.iter() {
            let shard = shard.0.read().unwrap_or_else(PoisonError::into_inner);
            for (_, _, k) in shard.held() {
                f(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::KeyIdentity;
    use armor_psk::{SignableRequest, Signature};

    /// Each key and dummy is keyed with its own secret; a state is known by
    /// the signature it makes.
    struct Fixture {
        cache: KeyCache,
    }

    fn sig(signing: &SigningKey) -> Signature {
        SignableRequest {
            key_id: "k",
            method: "GET",
            request_path: "/",
            nonce: "n",
            timestamp: 1,
            body: b"",
        }
        .sign(signing)
    }

    fn secret(id: &str) -> SigningKey {
        SigningKey::from_bytes(format!("secret of {id}").as_bytes())
    }

    impl Fixture {
        fn new() -> Self {
            let mut n = 0;
            Fixture {
                cache: KeyCache::new([9; 16], || {
                    n += 1;
                    SigningKey::from_bytes(format!("dummy {n}").as_bytes())
                }),
            }
        }

        fn insert(&self, id: &str) {
            self.insert_for(id, 1);
        }

        /// Caches `id` for `user_id`; the entry it replaced, if any.
        fn insert_for(&self, id: &str, user_id: i64) -> Option<CachedKey> {
            let key = CachedKey::new(KeyIdentity {
                key_id: id.into(),
                user_id,
                account_id: 1,
                permissions: None,
            });
            self.cache.insert(key, secret(id))
        }

        /// Whether `lookup` gives the key's own state, and says so.
        fn finds(&self, id: &str) -> bool {
            let found = self.cache.lookup(id);
            let same = sig(found.signing()).ct_eq(&sig(&secret(id)));
            assert_eq!(same, found.is_own(), "{id}");
            same
        }
    }

    #[test]
    fn finds_by_id_and_forgets() {
        let f = Fixture::new();
        let c = &f.cache;
        f.insert("a");
        f.insert("b");
        assert_eq!(
            c.with_key("a", |k| k.id.key_id.clone()).as_deref(),
            Some("a")
        );
        assert!(f.finds("a"));
        assert!(c.with_key("A", |_| ()).is_none());
        assert!(!f.finds("A"));
        assert!(c.with_key("", |_| ()).is_none());
        assert_eq!(c.remove("a").map(|k| k.id.key_id), Some("a".into()));
        assert!(c.remove("a").is_none());
        assert!(c.with_key("a", |_| ()).is_none());
        assert!(!f.finds("a"));
        c.retain(|k| &*k.id.key_id != "b");
        assert_eq!(c.len(), 0);
        assert!(!f.finds("b"));
    }

    #[test]
    fn an_entry_is_reached_through_its_id_only_while_cached() {
        let f = Fixture::new();
        let c = &f.cache;
        assert!(f.insert_for("a", 1).is_none());
        // Replacing a key hands back the entry it replaces.
        let old = f.insert_for("a", 2);
        assert_eq!(old.map(|k| k.id.user_id), Some(1));
        assert_eq!(c.with_key("a", |k| k.id.user_id), Some(2));
        let found = c.lookup("a");
        assert_eq!(c.with_key_of(&found, |k| k.id.user_id), Some(2));
        assert_eq!(c.with_key_alike(found.hash(), |k| k.id.user_id), Some(2));
        // An unknown id reaches no entry, though its state is borrowed
        // from a place that has one (the only key's, or a dummy's).
        for i in 0..200 {
            let unknown = c.lookup(&format!("b{i}"));
            assert!(c.with_key_of(&unknown, |_| ()).is_none());
            assert!(c.with_key_alike(unknown.hash(), |_| ()).is_none());
        }
        // Removing hands the entry back; the place then holds none.
        assert_eq!(c.remove("a").map(|k| k.id.user_id), Some(2));
        assert!(c.with_key_of(&found, |_| ()).is_none());
        assert!(c.with_key_alike(found.hash(), |_| ()).is_none());
        // The entry's address is a hint only: once its array has moved
        // (grown by other keys), loading it ahead still does no harm.
        for i in 0..1000 {
            f.insert(&format!("c{i}"));
        }
        found.prefetch_entry();
        assert_eq!(c.len(), 1000);
    }

    #[test]
    fn unknown_ids_spread_over_the_states() {
        let f = Fixture::new();
        let first = sig(f.cache.lookup("nope").signing());
        assert!(first.ct_eq(&sig(f.cache.lookup("nope").signing())));
        let states = |f: &Fixture| -> std::collections::HashSet<[u8; 64]> {
            (0..2000)
                .map(|i| {
                    let found = f.cache.lookup(&format!("unknown-{i}"));
                    // A borrowed state, even a key's, is never the id's own.
                    assert!(!found.is_own());
                    *sig(found.signing()).as_bytes()
                })
                .collect()
        };
        // No keys: every dummy of every shard.
        assert_eq!(states(&f).len(), SHARDS * DUMMIES);
        // With keys, unknown ids reach their places too.
        for i in 0..100 {
            f.insert(&format!("key-{i}"));
        }
        let reached = states(&f);
        assert_eq!(reached.len(), SHARDS * DUMMIES + 100);
        assert!(reached.contains(sig(&secret("key-1")).as_bytes()));
    }

    #[test]
    fn many_keys_grow_the_table_and_stay_found() {
        let f = Fixture::new();
        let c = &f.cache;
        let n = 20_000;
        for i in 0..n {
            f.insert(&format!("key-{i}"));
        }
        // Some inserts had to evict (the cuckoo path is exercised).
        let kicks: u64 = c.shards.iter().map(|s| s.0.read().unwrap().kicks).sum();
        assert!(kicks > 0);
        // Replacing a key keeps one entry.
        f.insert("key-7");
        assert_eq!(c.len(), n);
        for i in 0..n {
            let id = format!("key-{i}");
            assert!(f.finds(&id), "{id}");
            assert_eq!(c.with_key(&id, |k| k.id.key_id.to_string()), Some(id));
        }
        for i in (0..n).step_by(2) {
            c.remove(&format!("key-{i}"));
        }
        assert_eq!(c.len(), n / 2);
        for i in 0..n {
            let id = format!("key-{i}");
            assert_eq!(f.finds(&id), i % 2 == 1, "{id}");
            assert_eq!(c.with_key(&id, |_| ()).is_some(), i % 2 == 1, "{id}");
        }
        // Freed places are reused, and a removed key is never returned.
        for i in (0..n).step_by(2) {
            f.insert(&format!("new-{i}"));
        }
        assert_eq!(c.len(), n);
        for i in (0..n).step_by(2) {
            assert!(!f.finds(&format!("key-{i}")));
            assert!(c.with_key(&format!("key-{i}"), |_| ()).is_none());
            assert!(f.finds(&format!("new-{i}")));
        }
        let mut seen = 0;
        c.for_each(|_| seen += 1);
        assert_eq!(seen, n);
    }
}
