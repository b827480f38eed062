//! Fixed-window request counts per API key on this node: the memory
//! implementation of [`KeyRateLimit`] (a key's `rateLimit`).

use dashmap::DashMap;

use crate::ports::{BoxFuture, ClaimError, KeyRateLimit, RateWindow};

/// Counters past this many keys are swept of ended windows on the next
/// hit (so the map holds about one entry per key used in a window).
const SWEEP_AT: usize = 4096;

/// Per key id: the start of its current window and the requests counted
/// in it.
#[derive(Debug, Default)]
pub struct KeyWindows {
    counts: DashMap<String, (u64, u32)>,
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
        if self.counts.len() > SWEEP_AT {
            self.counts.retain(|_, (s, _)| *s + window > now);
        }
        let mut entry = self.counts.entry(key_id.to_owned()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        RateWindow {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
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
}
