//! Rate limits of API keys through the gateway: a token bucket per key id,
//! at the key's own rate, else its role's (in the account the request acts
//! in), else the default; none of them: no limit. Password callers are not
//! limited here.
//!
//! With Redis, every node also counts the key's requests in one shared
//! fixed window of `burst` requests per `burst / rate` seconds (one `INCR`
//! per request that passed this node's bucket): N nodes together allow at
//! most `burst` per window (up to twice that across a window boundary),
//! not N times the limit. If Redis does not answer, the node's own bucket
//! still applies.

use super::Gateway;
use crate::core::{Core, Principal, Via};
use crate::error::Error;
use crate::limit::retry_after;

impl Gateway {
    /// Takes one token from the caller's bucket (API keys only).
    pub(super) async fn rate_limit(&self, core: &Core, p: &Principal) -> Result<(), Error> {
        let Via::ApiKey { key_id, .. } = &p.via else {
            return Ok(());
        };
        let mut rate = self.config.key_rate_limits.get(&**key_id).copied();
        if rate.is_none() && !self.config.role_rate_limits.is_empty() {
            if let Some(role) = core.access.role(p).await? {
                rate = self.config.role_rate_limits.get(role.as_str()).copied();
            }
        }
        let Some(rate) = rate.or(self.config.rate_limit) else {
            return Ok(());
        };
        self.buckets
            .update(&**key_id, rate, |bucket, now| bucket.take(rate, now))
            .map_err(|wait| Error::RateLimited {
                retry_after: retry_after(wait),
            })?;
        let Some(counters) = &self.counters else {
            return Ok(());
        };
        let limit = u64::from(rate.burst.max(1));
        let window = if rate.per_second > 0.0 {
            ((limit as f64) / rate.per_second).ceil().max(1.0) as u64
        } else {
            86_400
        };
        let now = core.now();
        match counters
            .hit(&format!("g:{key_id}"), limit, window, now)
            .await
        {
            Ok(hit) if !hit.allowed => Err(Error::RateLimited {
                retry_after: retry_after(std::time::Duration::from_secs(
                    hit.reset.saturating_sub(now).max(1),
                )),
            }),
            _ => Ok(()),
        }
    }
}
