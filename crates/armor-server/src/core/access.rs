//! A cache of what [`Core::principal`](super::Core::principal) reads per
//! request: that the user is active, and their permissions in the account.
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
//!   `Core` calls it wherever this process changes a user's status, role
//!   or keys, and when another node says so (`user:<id>` messages).
//! - Changes this process cannot see (`armor admin set-role` on a live
//!   data directory, another node without Redis) take effect within
//!   [`TTL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Longest an entry is served: the bound on staleness for changes made
/// outside this process.
pub const TTL: Duration = Duration::from_secs(1);

/// Most entries kept; past it the cache is emptied (it refills on use).
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    generation: u64,
    loaded: Instant,
    permissions: Vec<String>,
}

/// (user id, account id) → permissions, for active users only.
#[derive(Default)]
pub struct AccessCache {
    entries: DashMap<(i64, i64), Entry>,
    generation: AtomicU64,
}

impl AccessCache {
    /// The generation to pass to [`AccessCache::insert`]: read it before
    /// reading the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached permissions of an active `user` in `account`, if fresh.
    pub fn get(&self, user: i64, account: i64) -> Option<Vec<String>> {
        let e = self.entries.get(&(user, account))?;
        (e.generation == self.generation() && e.loaded.elapsed() < TTL)
            .then(|| e.permissions.clone())
    }

    /// Caches what was read from the store after `generation` was taken;
    /// ignored if anything was invalidated since.
    pub fn insert(&self, user: i64, account: i64, generation: u64, permissions: &[String]) {
        if generation != self.generation() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            (user, account),
            Entry {
                generation,
                loaded: Instant::now(),
                permissions: permissions.to_vec(),
            },
        );
        // A bump between the check above and the insert: drop the entry
        // (the bump's own removal may have run before the insert).
        if generation != self.generation() {
            self.entries.remove(&(user, account));
        }
    }

    /// Forgets one user's entries (status, role or membership changed).
    pub fn invalidate_user(&self, user: i64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.retain(|(u, _), _| *u != user);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms() -> Vec<String> {
        vec!["Users Read".to_owned()]
    }

    #[test]
    fn serves_what_was_inserted() {
        let c = AccessCache::default();
        assert_eq!(c.get(1, 1), None);
        c.insert(1, 1, c.generation(), &perms());
        assert_eq!(c.get(1, 1), Some(perms()));
        assert_eq!(c.get(1, 2), None);
    }

    #[test]
    fn invalidation_drops_the_user_and_stale_loads() {
        let c = AccessCache::default();
        c.insert(1, 1, c.generation(), &perms());
        c.insert(2, 1, c.generation(), &perms());
        // A load that started before the change finishes after it.
        let before = c.generation();
        c.invalidate_user(1);
        c.insert(1, 1, before, &perms());
        assert_eq!(c.get(1, 1), None);
        // Other users' entries are dropped too (the generation moved):
        // they are re-read once, never served stale.
        assert_eq!(c.get(2, 1), None);
        c.insert(1, 1, c.generation(), &perms());
        assert_eq!(c.get(1, 1), Some(perms()));
        c.clear();
        assert_eq!(c.get(1, 1), None);
    }
}
