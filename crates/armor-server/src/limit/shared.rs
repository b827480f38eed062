//! Refused attempts counted on every node: with Redis configured, each
//! refusal the [`AuthFailureLimiter`] records also counts in a shared
//! fixed window ([`Counters`]) of `burst` refusals per `burst / rate`
//! seconds. Checks stay local and cost no round trip: a node that counts
//! a refusal past the shared limit blocks the pair itself until the
//! window ends. So once the pair has used its refusals across all nodes,
//! each node lets through at most one more (the one that tells it), plus
//! those already in flight: N nodes overshoot by at most N per window.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::{client_key, AuthFailureLimiter, Rate};
use crate::clock::Clock;
use crate::ports::Counters;

/// Most pairs blocked at once; past it, ended blocks are dropped.
const MAX_BLOCKED: usize = 100_000;

pub(super) struct SharedFailures {
    counters: Arc<dyn Counters>,
    clock: Arc<dyn Clock>,
    limit: u64,
    window: u64,
    /// Pairs over the shared limit, until the Unix second their window
    /// ends.
    blocked: DashMap<(IpAddr, String), u64>,
}

impl std::fmt::Debug for SharedFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFailures")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("blocked", &self.blocked.len())
            .finish()
    }
}

impl SharedFailures {
    pub(super) fn new(counters: Arc<dyn Counters>, clock: Arc<dyn Clock>, rate: Rate) -> Self {
        let limit = u64::from(rate.burst.max(1));
        let window = if rate.per_second > 0.0 {
            ((limit as f64) / rate.per_second).ceil().max(1.0) as u64
        } else {
            86_400
        };
        SharedFailures {
            counters,
            clock,
            limit,
            window,
            blocked: DashMap::new(),
        }
    }

    /// How long the pair stays blocked, if it is.
    pub(super) fn blocked_for(&self, addr: IpAddr, key_id: &str) -> Option<Duration> {
        let until = *self.blocked.get(&(client_key(addr), key_id.to_owned()))?;
        let now = self.clock.now();
        (until > now).then(|| Duration::from_secs(until - now))
    }

    async fn count(&self, addr: IpAddr, key_id: &str) {
        let addr = client_key(addr);
        let now = self.clock.now();
        let key = format!("f:{addr}:{key_id}");
        match self.counters.hit(&key, self.limit, self.window, now).await {
            Ok(hit) if !hit.allowed => {
                if self.blocked.len() >= MAX_BLOCKED {
                    self.blocked.retain(|_, until| *until > now);
                }
                self.blocked.insert((addr, key_id.to_owned()), hit.reset);
            }
            Ok(_) => {}
            // The local limit still holds; the shared one resumes with
            // Redis.
            Err(_) => {}
        }
    }
}

impl AuthFailureLimiter {
    /// Counts refusals on every node through `counters` too (windows by
    /// `clock`).
    pub fn with_counters(mut self, counters: Arc<dyn Counters>, clock: Arc<dyn Clock>) -> Self {
        self.shared = Some(SharedFailures::new(counters, clock, self.rate));
        self
    }

    /// Counts one refused attempt here and, when shared, on every node.
    pub async fn failed_everywhere(&self, addr: IpAddr, key_id: &str) {
        self.failed(addr, key_id);
        if let Some(shared) = &self.shared {
            shared.count(addr, key_id).await;
        }
    }
}
