//! A cache of what [`Access::principal`](super::principals::Access::principal) reads per
//! request: that the user is active, and their permissions in the account;
//! of what `GET /me` shows ([`Profile`]); and of the FH-AUTH tokens the
//! store let through ([`CachedToken`], used by `core/tokens.rs`).
//!
//! Without it every authenticated request costs two store queries (user,
//! then permissions), several times the cost of verifying a signature.
//!
//! Correctness rules:
//! - Only answers that let a request through are cached (active user, a
//!   membership): a refusal is always re-read, so a grant (a new
//!   membership, an enabled user) takes effect at once.
//! - [`AccessCache::invalidate_user`] drops a user's entries and bumps a
//!   generation; an entry loaded before a bump is never served after it,
//!   even if its load finishes later (a load racing with a change).
//!   The key verifier calls it wherever this process changes a user's status, role
//!   or keys, and when another node says so (`user:<id>` messages).
//! - Changes this process cannot see (`armor admin set-role` on a live
//!   data directory, another node without Redis) take effect within
//!   [`TTL`].

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::store::AccountRow;

/// Longest an entry is served: the bound on staleness for changes made
/// outside this process.
pub const TTL: Duration = Duration::from_secs(1);

/// Most entries kept per table; past it the table is emptied (it refills
/// on use).
const MAX_ENTRIES: usize = 100_000;

/// What `GET /me` shows of an active user: read from the store at most
/// once per [`TTL`] per user under load, instead of 2 + one per account
/// queries per request.
#[derive(Debug)]
pub struct Profile {
    pub user_id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub accounts: Vec<AccountRow>,
    /// Permissions per account, in the order of `accounts`.
    pub permissions: Vec<Arc<[String]>>,
    /// The API's rendering of this profile, made on first use by
    /// `web/handlers/me.rs`. A profile's fields never change after it is
    /// made: a changed user gets a new `Profile`, which starts without a
    /// rendering. `Rendered` is not `Clone`, so neither is a `Profile`
    /// (no copy carries a filled rendering along).
    pub(crate) rendered: OnceLock<Rendered>,
}

/// Bytes the web layer made of a [`Profile`] (core never reads them): the
/// part of its answer that is the same for every caller, and the part that
/// is the same for every caller whose key does not narrow it.
pub(crate) struct Rendered {
    pub(crate) common: Box<[u8]>,
    pub(crate) unnarrowed: Box<[u8]>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rendered {{ common: {} B, unnarrowed: {} B }}",
            self.common.len(),
            self.unnarrowed.len()
        )
    }
}

struct Entry<V> {
    generation: u64,
    loaded: Instant,
    value: V,
}

/// One keyed table of cached answers, each tagged with the generation it
/// was read under. Hashed with foldhash (seeded per process) rather than
/// SipHash: every request looks entries up, and no key is the caller's
/// choice (ids, and the hashes of tokens the store let through).
struct Table<K, V> {
    entries: DashMap<K, Entry<V>, foldhash::fast::RandomState>,
}

impl<K: Eq + Hash + Copy, V: Clone> Table<K, V> {
    fn get(&self, key: &K, generation: u64) -> Option<V> {
        let e = self.entries.get(key)?;
        (e.generation == generation && e.loaded.elapsed() < TTL).then(|| e.value.clone())
    }

    /// Stores `value` read under `generation`, unless `current` says
    /// something was invalidated since.
    fn insert(&self, key: K, generation: u64, value: V, current: impl Fn() -> u64) {
        if generation != current() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            key,
            Entry {
                generation,
                loaded: Instant::now(),
                value,
            },
        );
        // A bump between the check above and the insert: drop the entry
        // (the bump's own removal may have run before the insert).
        if generation != current() {
            self.entries.remove(&key);
        }
    }
}

impl<K: Eq + Hash, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
        }
    }
}

/// An FH-AUTH token that the store let through: whose it is, and what its
/// expiry checks need (see `core/tokens.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedToken {
    pub user_id: i64,
    /// The user's home account.
    pub account_id: i64,
    pub expires_at: i64,
    /// The last use as stored, or as queued for the store.
    pub last_seen: i64,
}

/// (user id, account id) → permissions, user id → [`Profile`], and token
/// hash → [`CachedToken`], for active users and live tokens only.
#[derive(Default)]
pub struct AccessCache {
    permissions: Table<(i64, i64), Arc<[String]>>,
    profiles: Table<i64, Arc<Profile>>,
    tokens: Table<[u8; 32], CachedToken>,
    generation: AtomicU64,
}

impl AccessCache {
    /// The generation to pass to the `insert` methods: read it before
    /// reading the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached permissions of an active `user` in `account`, if fresh.
    pub fn get(&self, user: i64, account: i64) -> Option<Arc<[String]>> {
        self.permissions.get(&(user, account), self.generation())
    }

    /// Caches what was read from the store after `generation` was taken;
    /// ignored if anything was invalidated since.
    pub fn insert(&self, user: i64, account: i64, generation: u64, permissions: Arc<[String]>) {
        self.permissions
            .insert((user, account), generation, permissions, || {
                self.generation()
            });
    }

    /// The cached profile of an active user, if fresh.
    pub fn profile(&self, user: i64) -> Option<Arc<Profile>> {
        self.profiles.get(&user, self.generation())
    }

    /// As [`AccessCache::insert`], for a profile.
    pub fn insert_profile(&self, generation: u64, profile: Arc<Profile>) {
        self.profiles
            .insert(profile.user_id, generation, profile, || self.generation());
    }

    /// The cached token with this hash, if fresh.
    pub fn token(&self, hash: &[u8; 32]) -> Option<CachedToken> {
        self.tokens.get(hash, self.generation())
    }

    /// As [`AccessCache::insert`], for a token.
    pub fn insert_token(&self, hash: [u8; 32], generation: u64, token: CachedToken) {
        self.tokens
            .insert(hash, generation, token, || self.generation());
    }

    /// Records a use of a cached token queued for the store.
    pub fn token_seen(&self, hash: &[u8; 32], last_seen: i64) {
        if let Some(mut e) = self.tokens.entries.get_mut(hash) {
            e.value.last_seen = e.value.last_seen.max(last_seen);
        }
    }

    /// Forgets one user's entries (status, role, names, membership,
    /// password or tokens changed).
    pub fn invalidate_user(&self, user: i64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.permissions.entries.retain(|(u, _), _| *u != user);
        self.profiles.entries.remove(&user);
        self.tokens.entries.retain(|_, e| e.value.user_id != user);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.permissions.entries.clear();
        self.profiles.entries.clear();
        self.tokens.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms() -> Arc<[String]> {
        Arc::from(vec!["Users Read".to_owned()])
    }

    #[test]
    fn serves_what_was_inserted() {
        let c = AccessCache::default();
        assert_eq!(c.get(1, 1), None);
        c.insert(1, 1, c.generation(), perms());
        assert_eq!(c.get(1, 1), Some(perms()));
        assert_eq!(c.get(1, 2), None);
    }

    #[test]
    fn invalidation_drops_the_user_and_stale_loads() {
        let c = AccessCache::default();
        c.insert(1, 1, c.generation(), perms());
        c.insert(2, 1, c.generation(), perms());
        // A load that started before the change finishes after it.
        let before = c.generation();
        c.invalidate_user(1);
        c.insert(1, 1, before, perms());
        assert_eq!(c.get(1, 1), None);
        // Other users' entries are dropped too (the generation moved):
        // they are re-read once, never served stale.
        assert_eq!(c.get(2, 1), None);
        c.insert(1, 1, c.generation(), perms());
        assert_eq!(c.get(1, 1), Some(perms()));
        c.clear();
        assert_eq!(c.get(1, 1), None);
    }

    #[test]
    fn profiles_follow_the_same_rules() {
        let c = AccessCache::default();
        let profile = |id| {
            Arc::new(Profile {
                user_id: id,
                email: "a@example.com".into(),
                first_name: "A".into(),
                last_name: "B".into(),
                accounts: Vec::new(),
                permissions: Vec::new(),
                rendered: OnceLock::new(),
            })
        };
        assert!(c.profile(1).is_none());
        c.insert_profile(c.generation(), profile(1));
        assert_eq!(c.profile(1).map(|p| p.user_id), Some(1));
        let before = c.generation();
        c.invalidate_user(1);
        assert!(c.profile(1).is_none());
        c.insert_profile(before, profile(1));
        assert!(c.profile(1).is_none(), "a load from before the change");
        c.insert_profile(c.generation(), profile(1));
        c.clear();
        assert!(c.profile(1).is_none());
    }
}
