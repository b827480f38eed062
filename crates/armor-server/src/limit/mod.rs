//! Token buckets keyed by a small key: the one rate limiter of the server.
//!
//! Used by the gateway's per-key limits (`gateway::limits`), by the limit
//! on refused ARMOR-PSK attempts per (client address, key id) and by the
//! limit on failed password logins per (client address, user name) (both
//! [`AuthFailureLimiter`]).
//!
//! A bucket holds at most [`Rate::burst`] tokens and gains
//! [`Rate::per_second`] of them per second; what a caller does with it
//! (take a token or be refused, spend one whatever is left, give one back)
//! is up to the caller. Time comes from the monotonic clock.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

mod counters;
mod failures;
mod shared;
mod windows;

pub use counters::MemoryCounters;
pub use failures::{client_key, AuthFailureLimiter};
pub use windows::{KeyRates, KeyWindows, SharedKeyWindows};

/// Requests per second and burst of one token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `RPS:BURST`, e.g. `10:20` or `0.5:1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rps, burst) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected RPS:BURST, e.g. 10:20"))?;
        let per_second: f64 = rps
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: RPS must be a number"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: BURST must be a whole number"))?;
        if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
            return Err(format!("{s:?}: RPS must be above 0 and BURST at least 1"));
        }
        Ok(Rate { per_second, burst })
    }
}

/// The longest wait a bucket announces.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// One key's token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
    }

    /// How long until a token is there (at most an hour; an hour at a
    /// rate of zero).
    fn wait(&self, rate: Rate) -> Duration {
        if rate.per_second <= 0.0 {
            return MAX_WAIT;
        }
        let secs = (1.0 - self.tokens) / rate.per_second;
        Duration::from_secs_f64(secs.clamp(0.0, MAX_WAIT.as_secs_f64()))
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(rate))
        }
    }

    /// Whether a token is there, without taking it; else how long until
    /// one is.
    pub fn check(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(rate))
        }
    }

    /// Spends a token, if there is one left (never below empty).
    pub fn spend(&mut self, rate: Rate, now: Instant) {
        self.refill(rate, now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// Gives a token back (never above the burst).
    pub fn give_back(&mut self, rate: Rate, now: Instant) {
        self.refill(rate, now);
        self.tokens = (self.tokens + 1.0).min(f64::from(rate.burst));
    }

    /// Whether it would hold its whole burst at `now`.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }
}

/// Whole seconds for `Retry-After`: a wait rounded up, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Token buckets per key, created full on first use.
#[derive(Debug)]
pub struct RateLimiter<K: Hash + Eq> {
    buckets: DashMap<K, Bucket>,
    /// The number of buckets, kept beside the map: a `DashMap` counts its
    /// entries by locking every shard in turn, and an empty limiter is
    /// asked on every authenticated request.
    tracked: AtomicUsize,
    /// Most keys tracked, if bounded. Past it, buckets that have filled up
    /// again are forgotten, then, if need be, all of them: limiting is a
    /// brake, not a security boundary, and its memory stays bounded.
    max_tracked: Option<usize>,
}

impl<K: Hash + Eq> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter {
            buckets: DashMap::new(),
            tracked: AtomicUsize::new(0),
            max_tracked: None,
        }
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// Tracking at most `max_tracked` keys.
    pub fn bounded(max_tracked: usize) -> Self {
        RateLimiter {
            buckets: DashMap::new(),
            tracked: AtomicUsize::new(0),
            max_tracked: Some(max_tracked),
        }
    }

    /// Runs `f` on `key`'s bucket (created full at `rate` when missing),
    /// with the time now. The key is copied only when the bucket is new.
    pub fn update<Q, R>(&self, key: &Q, rate: Rate, f: impl FnOnce(&mut Bucket, Instant) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = Instant::now();
        if let Some(mut bucket) = self.buckets.get_mut(key) {
            return f(&mut bucket, now);
        }
        self.make_room(rate, now);
        let mut bucket = match self.buckets.entry(key.to_owned()) {
            Entry::Occupied(e) => e.into_ref(),
            Entry::Vacant(e) => {
                self.tracked.fetch_add(1, Ordering::Relaxed);
                e.insert(Bucket::full(rate, now))
            }
        };
        f(&mut bucket, now)
    }

    /// Runs `f` on `key`'s bucket if there is one.
    pub fn update_existing<Q, R>(
        &self,
        key: &Q,
        f: impl FnOnce(&mut Bucket, Instant) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.buckets.get_mut(key).map(|mut b| f(&mut b, now))
    }

    fn make_room(&self, rate: Rate, now: Instant) {
        let Some(max) = self.max_tracked else {
            return;
        };
        if self.len() < max {
            return;
        }
        self.forget_refilled(rate, now);
        if self.len() >= max {
            tracing::warn!("rate limiter full: forgetting every bucket");
            self.forget(|_| true);
        }
    }

    /// Drops the buckets that have filled up again by `now`: a full bucket
    /// and no bucket limit alike, so nothing changes for their keys, and
    /// an idle limiter is empty again (nothing to look up per request).
    pub fn forget_refilled(&self, rate: Rate, now: Instant) {
        if !self.is_empty() {
            self.forget(|b| b.is_full(rate, now));
        }
    }

    /// Drops the buckets `pick` picks, keeping the count in step.
    fn forget(&self, mut pick: impl FnMut(&Bucket) -> bool) {
        self.buckets.retain(|_, b| {
            let gone = pick(b);
            if gone {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
            !gone
        });
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "10:20".parse::<Rate>(),
            Ok(Rate {
                per_second: 10.0,
                burst: 20
            })
        );
        assert!("0.5:1".parse::<Rate>().is_ok());
        for bad in ["10", "0:1", "1:0", "x:1", "-1:2", "inf:1"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_refill() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert!(b.take(rate, t0).is_ok());
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(b.take(rate, t0 + Duration::from_millis(500)).is_ok());
        // Never more than the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.take(rate, later).is_ok());
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn buckets_per_key_created_full() {
        let rate = Rate {
            per_second: 0.001,
            burst: 2,
        };
        let l: RateLimiter<String> = RateLimiter::default();
        for _ in 0..2 {
            assert!(l.update("a", rate, |b, now| b.take(rate, now)).is_ok());
        }
        assert!(l.update("a", rate, |b, now| b.take(rate, now)).is_err());
        assert!(l.update("b", rate, |b, now| b.take(rate, now)).is_ok());
        assert_eq!(l.len(), 2);
        assert!(l.update_existing("c", |_, _| ()).is_none());
    }

    #[test]
    fn refilled_buckets_are_forgotten_and_an_idle_limiter_empties() {
        let rate = Rate {
            per_second: 1.0,
            burst: 2,
        };
        let l: RateLimiter<String> = RateLimiter::default();
        assert!(l.update("a", rate, |b, now| b.take(rate, now)).is_ok());
        l.update("b", rate, |_, _| ()); // tracked, still full
        let now = Instant::now();
        l.forget_refilled(rate, now);
        assert_eq!((l.len(), l.buckets.len()), (1, 1));
        assert!(l.update_existing("a", |_, _| ()).is_some());
        l.forget_refilled(rate, now + Duration::from_secs(2));
        assert!(l.is_empty() && l.buckets.is_empty());
    }

    #[test]
    fn a_full_limiter_forgets_refilled_buckets_first_and_keeps_its_count() {
        let rate = Rate {
            per_second: 0.001,
            burst: 2,
        };
        let l: RateLimiter<String> = RateLimiter::bounded(3);
        assert!(l.is_empty());
        let take = |k: &str| l.update(k, rate, |b, now| b.take(rate, now)).is_ok();
        assert!(take("a") && take("b"));
        l.update("c", rate, |_, _| ()); // tracked, still full
        assert_eq!((l.len(), l.buckets.len()), (3, 3));
        // At the bound: "c" (full again) goes, the others stay.
        assert!(take("d"));
        assert_eq!((l.len(), l.buckets.len()), (3, 3));
        assert!(l.update_existing("c", |_, _| ()).is_none());
        assert!(l.update_existing("a", |_, _| ()).is_some());
        // None full: every bucket goes.
        assert!(take("e"));
        assert_eq!((l.len(), l.buckets.len()), (1, 1));
        assert!(!l.is_empty());
    }
}
