//! Rate limits of API keys through the gateway: a token bucket per key id,
//! at the key's own rate, else its role's (in the account the request acts
//! in), else the default; none of them: no limit. Password callers are not
//! limited here.

use super::Gateway;
use crate::core::{Core, Principal, Via};
use crate::error::Error;
use crate::limit::retry_after;

impl Gateway {
    /// Takes one token from the caller's bucket (API keys only).
    pub(super) async fn rate_limit(&self, core: &Core, p: &Principal) -> Result<(), Error> {
        let Via::ApiKey { key_id } = &p.via else {
            return Ok(());
        };
        let mut rate = self.config.key_rate_limits.get(key_id).copied();
        if rate.is_none() && !self.config.role_rate_limits.is_empty() {
            if let Some(role) = core.access.role(p).await? {
                rate = self.config.role_rate_limits.get(role.as_str()).copied();
            }
        }
        let Some(rate) = rate.or(self.config.rate_limit) else {
            return Ok(());
        };
        self.buckets
            .update(key_id.as_str(), rate, |bucket, now| bucket.take(rate, now))
            .map_err(|wait| Error::RateLimited {
                retry_after: retry_after(wait),
            })
    }
}
