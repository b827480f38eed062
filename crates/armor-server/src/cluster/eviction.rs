//! Whether Redis may evict replay claims. With a memory limit
//! (`maxmemory` above 0) and any policy but `noeviction`, Redis drops keys
//! when memory runs short, and a claim it dropped would let its request be
//! replayed. Such a Redis is refused: claims are unavailable (503) until
//! the policy is `noeviction` or the limit is lifted. Refused too until
//! the first check has read every bucket's server, and while a server
//! answers the check with an error (the settings cannot be read). Checked
//! at start-up, after each new connection, within half a second of an
//! epoch marker moving (a restarted or promoted server), every 10 seconds,
//! and every half second while refused.

use std::sync::atomic::Ordering;

use super::claims::bucket_key;
use super::{Cluster, ROUND_TRIP};

/// Returns the server's `maxmemory` and `maxmemory-policy`, as `INFO
/// memory` reports them (empty when it does not).
pub(super) const MEMORY_SCRIPT: &str = r"
local info = redis.call('INFO', 'memory')
return {
  string.match(info, 'maxmemory:(%d+)') or '',
  string.match(info, 'maxmemory_policy:([%w-]+)') or '',
}
";

/// Why a server's memory settings put claims at risk, if they do: a
/// limit with an evicting policy, or settings it does not report.
pub(super) fn eviction_risk(maxmemory: &str, policy: &str) -> Option<String> {
    match (maxmemory.parse::<u64>(), policy) {
        (Ok(0), _) | (Ok(_), "noeviction") => None,
        (Ok(limit), policy) if !policy.is_empty() => Some(format!(
            "maxmemory {limit} with maxmemory-policy {policy}: Redis may evict replay claims"
        )),
        _ => Some("INFO memory reports no maxmemory or maxmemory_policy".into()),
    }
}

impl Cluster {
    /// Whether claims are refused because Redis may evict them.
    pub(super) fn evicting(&self) -> bool {
        self.evicting.load(Ordering::Acquire)
    }

    /// Asks every bucket's server for its memory settings. Any server that
    /// may evict, or answers with an error, refuses claims; all of them
    /// safe lets them through; a server that does not answer in time (or
    /// cannot be reached) leaves the state as it was, unless another one
    /// refuses (its claims fail on their own meanwhile).
    pub(super) async fn check_eviction(&self) {
        let checks = (0..self.buckets).map(|bucket| async move {
            let (_, mut conn) = self.conn()?;
            let mut call = self.memory_script.prepare_invoke();
            call.key(bucket_key(bucket, b"m"));
            let answer = call.invoke_async::<(String, String)>(&mut conn);
            match tokio::time::timeout(ROUND_TRIP * 4, answer).await {
                Ok(Ok((maxmemory, policy))) => Some(eviction_risk(&maxmemory, &policy)),
                Ok(Err(e)) if unanswered(&e) => None,
                Ok(Err(e)) => Some(Some(format!("its memory settings cannot be read: {e}"))),
                Err(_) => None,
            }
        });
        let answers = futures_util::future::join_all(checks).await;
        let risk = answers.iter().flatten().flatten().next().cloned();
        if risk.is_none() && answers.iter().any(Option::is_none) {
            return;
        }
        self.evicting.store(risk.is_some(), Ordering::Release);
        // Logged once per refusal, not per check.
        match risk {
            Some(why) if !self.eviction_logged.swap(true, Ordering::AcqRel) => tracing::error!(
                reason = %why,
                "ARMOR-PSK requests refused (503) until Redis's maxmemory-policy is noeviction or maxmemory is 0"
            ),
            None if self.eviction_logged.swap(false, Ordering::AcqRel) => {
                tracing::info!("Redis no longer evicts: replay claims accepted again")
            }
            _ => {}
        }
    }
}

/// An error that says nothing of the server's settings: it was not
/// reached, did not answer, or is busy (loading, in a failover, a slot
/// moving). Only an error the script itself met (a command not allowed,
/// say) or an answer of another shape means they cannot be read.
fn unanswered(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    !matches!(
        e.kind(),
        ErrorKind::ResponseError
            | ErrorKind::ExtensionError
            | ErrorKind::TypeError
            | ErrorKind::ParseError
    )
}

#[cfg(test)]
mod tests {
    use super::eviction_risk;

    #[test]
    fn only_no_limit_or_noeviction_is_safe() {
        assert_eq!(eviction_risk("0", "allkeys-lru"), None);
        assert_eq!(eviction_risk("0", "noeviction"), None);
        assert_eq!(eviction_risk("104857600", "noeviction"), None);
        for policy in [
            "allkeys-lru",
            "volatile-lru",
            "volatile-ttl",
            "allkeys-random",
        ] {
            let why = eviction_risk("104857600", policy).unwrap();
            assert!(why.contains(policy), "{why}");
        }
        assert!(eviction_risk("", "noeviction").is_some());
        assert!(eviction_risk("104857600", "").is_some());
    }
}
