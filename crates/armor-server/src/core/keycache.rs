//! The verifier's key cache: every active key with its keyed HMAC state,
//! found by a keyed 128-bit hash of the key id.
//!
//! Looking a key up by its hash rather than by the id string makes a hit
//! and a miss do the same work (hash the id, probe, compare one integer):
//! a string comparison only on a hit would tell, by timing, whether a key
//! id exists. Two ids share a slot with probability 2⁻¹²⁸ per pair, under a
//! hash key drawn at random per process.

use std::sync::Arc;

use dashmap::DashMap;
use siphasher::sip128::{Hasher128 as _, SipHasher13};

use super::CachedKey;

/// Active keys by a keyed hash of their id.
pub struct KeyCache {
    map: DashMap<u128, Arc<CachedKey>>,
    k0: u64,
    k1: u64,
}

impl KeyCache {
    pub fn new(key: [u8; 16]) -> Self {
        let (a, b) = key.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        KeyCache {
            map: DashMap::new(),
            k0: word(a),
            k1: word(b),
        }
    }

    fn slot(&self, key_id: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        std::hash::Hasher::write(&mut h, key_id.as_bytes());
        h.finish128().as_u128()
    }

    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        self.map.get(&self.slot(key_id)).map(|k| k.clone())
    }

    pub fn insert(&self, key: Arc<CachedKey>) {
        self.map.insert(self.slot(&key.id.key_id), key);
    }

    pub fn remove(&self, key_id: &str) {
        self.map.remove(&self.slot(key_id));
    }

    /// Keeps the keys for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&CachedKey) -> bool) {
        self.map.retain(|_, k| keep(k));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn for_each(&self, mut f: impl FnMut(&CachedKey)) {
        for k in self.map.iter() {
            f(k.value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::KeyIdentity;
    use armor_psk::SigningKey;

    fn key(id: &str) -> Arc<CachedKey> {
        Arc::new(CachedKey::new(
            KeyIdentity {
                key_id: id.to_owned(),
                user_id: 1,
                account_id: 1,
            },
            SigningKey::from_bytes(b"s"),
        ))
    }

    #[test]
    fn finds_by_id_and_forgets() {
        let c = KeyCache::new([9; 16]);
        c.insert(key("a"));
        c.insert(key("b"));
        assert_eq!(
            c.get("a").map(|k| k.id.key_id.clone()).as_deref(),
            Some("a")
        );
        assert!(c.get("A").is_none());
        assert!(c.get("").is_none());
        c.remove("a");
        assert!(c.get("a").is_none());
        c.retain(|k| k.id.key_id != "b");
        assert_eq!(c.len(), 0);
    }
}
