//! Fixed-window request counts per API key (a key's `rateLimit`): on this
//! node ([`KeyWindows`]), or in shared [`Counters`] when the nodes share
//! Redis ([`SharedKeyWindows`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::ports::{BoxFuture, ClaimError, Counters, KeyRateLimit, RateWindow};

/// Counters past this many keys are swept of ended windows on the next
/// hit (so the map holds about one entry per key used in a window).
const SWEEP_AT: usize = 4096;

/// Per key id: the start and end of its current window and the requests
/// counted in it.
#[derive(Debug, Default)]
pub struct KeyWindows {
    counts: DashMap<String, (u64, u64, u32)>,
    /// The map's size after the last sweep.
    swept_to: AtomicUsize,
}

impl KeyWindows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a request as [`KeyRateLimit::hit`] does, at once.
    pub fn count(&self, key_id: &str, limit: u32, window: u64, now: u64) -> RateWindow {
        let window = window.max(1);
        let start = now - now % window;
        let reset = (start + window - now).max(1);
        let len = self.counts.len();
        if len > SWEEP_AT && len >= 2 * self.swept_to.load(Ordering::Relaxed) {
            // Each entry ends with its own window: a key with a short
            // window must not sweep away the count of one with a long one.
            // A sweep runs again only once the map has doubled since the
            // last one left it, so many long windows do not make every
            // request sweep.
            self.counts.retain(|_, (_, end, _)| *end > now);
            self.swept_to
                .store(self.counts.len().max(SWEEP_AT / 2), Ordering::Relaxed);
        }
        // A key already counted is found by its borrowed id: no allocation
        // per request.
        let mut entry = match self.counts.get_mut(key_id) {
            Some(entry) => entry,
            None => self
                .counts
                .entry(key_id.to_owned())
                .or_insert((start, start + window, 0)),
        };
        if entry.0 != start {
            *entry = (start, start + window, 0);
        }
        let allowed = entry.2 < limit;
        if allowed {
            entry.2 += 1;
        }
        RateWindow {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.2),
            reset,
        }
    }
}

impl KeyRateLimit for KeyWindows {
    fn hit(
        &self,
        key_id: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> BoxFuture<'static, Result<RateWindow, ClaimError>> {
        let answer = self.count(key_id, limit, window, now);
        Box::pin(async move { Ok(answer) })
    }
}

/// Where keys' rate limits count: this node's [`KeyWindows`] until a
/// shared limit is set (once, before serving).
#[derive(Default)]
pub struct KeyRates {
    local: KeyWindows,
    shared: std::sync::OnceLock<Arc<dyn KeyRateLimit>>,
}

impl KeyRates {
    /// Counts in `shared` from now on; a second call changes nothing.
    pub fn share(&self, shared: Arc<dyn KeyRateLimit>) {
        let _ = self.shared.set(shared);
    }

    pub fn limit(&self) -> &dyn KeyRateLimit {
        match self.shared.get() {
            Some(shared) => shared.as_ref(),
            None => &self.local,
        }
    }
}

/// A key's `rateLimit` counted in shared [`Counters`] (Redis), so the
/// limit holds for all the nodes together. The counter is incremented on
/// every hit, over the limit too; in a fixed window that changes nothing
/// (the window refuses until it ends either way).
pub struct SharedKeyWindows(pub Arc<dyn Counters>);

impl KeyRateLimit for SharedKeyWindows {
    fn hit(
        &self,
        key_id: &str,
        limit: u32,
        window: u64,
        now: u64,
    ) -> BoxFuture<'static, Result<RateWindow, ClaimError>> {
        let counters = self.0.clone();
        let key = format!("key:{key_id}");
        Box::pin(async move {
            let hit = counters
                .hit(&key, u64::from(limit), window, now)
                .await
                .map_err(|_| ClaimError::Unavailable)?;
            Ok(RateWindow {
                allowed: hit.allowed,
                limit,
                remaining: u32::try_from(hit.remaining).unwrap_or(u32::MAX),
                reset: hit.reset.saturating_sub(now).max(1),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_window() {
        let w = KeyWindows::new();
        let a = w.count("a", 2, 60, 120);
        assert_eq!((a.allowed, a.remaining, a.reset), (true, 1, 60));
        assert!(w.count("a", 2, 60, 150).allowed);
        let refused = w.count("a", 2, 60, 179);
        assert_eq!(
            (refused.allowed, refused.remaining, refused.reset),
            (false, 0, 1)
        );
        assert!(w.count("b", 2, 60, 179).allowed, "another key");
        assert!(w.count("a", 2, 60, 180).allowed, "the next window");
    }

    #[test]
    fn a_sweep_keeps_the_windows_that_have_not_ended() {
        let w = KeyWindows::new();
        assert!(w.count("hourly", 1, 3600, 3600).allowed);
        for i in 0..SWEEP_AT {
            w.count(&format!("k{i}"), 1, 1, 3601);
        }
        w.count("trigger", 1, 1, 3602);
        assert!(w.counts.len() < 10, "the ended windows were not swept");
        assert!(
            !w.count("hourly", 1, 3600, 3603).allowed,
            "a sweep by a one-second key reset an hour's count"
        );
    }

    #[test]
    fn long_windows_do_not_make_every_request_sweep() {
        let w = KeyWindows::new();
        for i in 0..=SWEEP_AT {
            w.count(&format!("k{i}"), 1, 86_400, 0);
        }
        w.count("one more", 1, 86_400, 1);
        assert_eq!(w.swept_to.load(Ordering::Relaxed), SWEEP_AT + 1);
        // Nothing ended: the next sweep waits for the map to double.
        for i in 0..100 {
            w.count(&format!("m{i}"), 1, 86_400, 2);
        }
        assert_eq!(w.swept_to.load(Ordering::Relaxed), SWEEP_AT + 1);
    }

    #[tokio::test]
    async fn shared_windows_count_in_the_counters_given() {
        let counters: Arc<dyn Counters> = Arc::new(crate::limit::MemoryCounters::default());
        let a = SharedKeyWindows(counters.clone());
        let b = SharedKeyWindows(counters);
        let first = a.hit("k", 2, 60, 120).await.unwrap();
        assert_eq!((first.allowed, first.remaining, first.reset), (true, 1, 60));
        assert!(b.hit("k", 2, 60, 121).await.unwrap().allowed);
        let third = a.hit("k", 2, 60, 122).await.unwrap();
        assert_eq!(
            (third.allowed, third.remaining, third.reset),
            (false, 0, 58)
        );
    }
}
