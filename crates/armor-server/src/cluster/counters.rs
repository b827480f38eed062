//! Fixed-window counters in Redis, shared by every node: one key per
//! (counter, window), `INCR` and an expiry at the window's end, one script
//! call (so one round trip) per hit.

use super::{Cluster, ROUND_TRIP};
use crate::ports::{window_hit, BoxFuture, CounterUnavailable, Counters, Hit};

/// KEYS: the counter of this window. ARGV: seconds until the window ends.
/// Returns the count, this hit included.
pub(super) const COUNTER_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

impl Cluster {
    /// Counts one hit of `key` in its window (see [`Counters::hit`]).
    pub async fn hit(
        &self,
        key: &str,
        limit: u64,
        window: u64,
        now: u64,
    ) -> Result<Hit, CounterUnavailable> {
        let window = window.max(1);
        let start = now / window * window;
        let (slot, mut conn) = self.conn().ok_or(CounterUnavailable)?;
        let mut call = self.counter_script.prepare_invoke();
        call.key(format!("ac:{key}:{window}:{start}"))
            .arg(start + window - now + 1);
        match tokio::time::timeout(ROUND_TRIP, call.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(count)) => Ok(window_hit(count, limit, window, now)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared counter failed");
                self.failed(slot);
                Err(CounterUnavailable)
            }
            Err(_) => {
                tracing::warn!("shared counter timed out");
                self.failed(slot);
                Err(CounterUnavailable)
            }
        }
    }
}

impl Counters for Cluster {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        window: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<Hit, CounterUnavailable>> {
        Box::pin(Cluster::hit(self, key, limit, window, now))
    }
}
