//! Fixed-window counters of this node: the memory implementation of
//! [`Counters`] (the Redis one, shared by every node, is
//! [`crate::cluster::Cluster`]).

use std::sync::Mutex;

use dashmap::DashMap;

use crate::ports::{window_hit, BoxFuture, CounterUnavailable, Counters, Hit};

/// Most counters kept; past it, windows that have ended are dropped.
const MAX_TRACKED: usize = 100_000;

/// Counts per (key, window length), with the window each count is for.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    counts: DashMap<(String, u64), (u64, u64)>,
    sweeping: Mutex<()>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one hit (see [`Counters::hit`]).
    pub fn hit_now(&self, key: &str, limit: u64, window: u64, now: u64) -> Hit {
        let window = window.max(1);
        let start = now / window * window;
        if self.counts.len() >= MAX_TRACKED {
            if let Ok(_one) = self.sweeping.try_lock() {
                self.counts.retain(|(_, w), (s, _)| *s + *w > now);
            }
        }
        let mut entry = self
            .counts
            .entry((key.to_owned(), window))
            .or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        entry.1 += 1;
        window_hit(entry.1, limit, window, now)
    }
}

impl Counters for MemoryCounters {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        window: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<Hit, CounterUnavailable>> {
        let hit = self.hit_now(key, limit, window, now);
        Box::pin(async move { Ok(hit) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_limit_then_starts_again() {
        let c = MemoryCounters::new();
        for i in 1..=3 {
            let h = c.hit_now("k", 3, 60, 120);
            assert!(h.allowed);
            assert_eq!(h.remaining, 3 - i);
            assert_eq!(h.reset, 180);
        }
        assert!(!c.hit_now("k", 3, 60, 179).allowed);
        assert!(c.hit_now("other", 3, 60, 179).allowed);
        let h = c.hit_now("k", 3, 60, 180);
        assert!(h.allowed);
        assert_eq!((h.remaining, h.reset), (2, 240));
    }
}
