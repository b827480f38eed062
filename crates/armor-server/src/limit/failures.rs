//! Refused ARMOR-PSK attempts, per client address and key id: after the
//! burst, further attempts for that key from that address get 429
//! `rate_limited` (with `Retry-After`) without being verified, until the
//! bucket refills.
//!
//! Only refusals count (a wrong signature, an unknown or deleted key), so a
//! client that signs correctly is never limited here. The bucket is keyed by
//! (address, key id), not by address alone: callers behind one address (a
//! NAT, or the tests on loopback) keep working with their own keys while
//! another key is being guessed at. Guessing an HMAC-SHA512 secret is hopeless
//! anyway; this bounds the work and the log volume such a flood costs.
//!
//! Clients are told apart by [`client_key`]: IPv6 ones by their /64.
//!
//! Failed password logins use a second limiter of the same kind, keyed by
//! (address, user): [`AuthFailureLimiter::take`] counts the attempt
//! before the password is checked and [`AuthFailureLimiter::refund`] gives
//! it back when the password was right.

use std::net::IpAddr;

use super::{retry_after, Rate, RateLimiter};
use crate::error::Error;

/// Most (address, key id) pairs tracked (see [`RateLimiter::bounded`]).
const MAX_TRACKED: usize = 100_000;

/// The address a client is limited under: an IPv4 address as it is (also
/// when IPv4-mapped), an IPv6 address folded to its /64, the block one
/// subscriber usually holds whole (so a client cannot get a fresh bucket
/// per address in it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The failure limiter of one server.
#[derive(Debug)]
pub struct AuthFailureLimiter {
    pub(super) rate: Rate,
    buckets: RateLimiter<(IpAddr, String)>,
    /// Refusals counted on every node too (limit/shared.rs).
    pub(super) shared: Option<super::shared::SharedFailures>,
}

impl AuthFailureLimiter {
    pub fn new(rate: Rate) -> Self {
        AuthFailureLimiter {
            rate,
            buckets: RateLimiter::bounded(MAX_TRACKED),
            shared: None,
        }
    }

    fn refused(wait: std::time::Duration) -> Error {
        Error::RateLimited {
            retry_after: retry_after(wait),
        }
    }

    /// Refuses with 429 when `key_id` has no failures left from `addr`.
    pub fn check(&self, addr: IpAddr, key_id: &str) -> Result<(), Error> {
        if let Some(wait) = self
            .shared
            .as_ref()
            .and_then(|s| s.blocked_for(addr, key_id))
        {
            return Err(Self::refused(wait));
        }
        // No refusal counted here (the usual case): no look-up, and no key
        // built for one.
        if self.buckets.is_empty() {
            return Ok(());
        }
        let rate = self.rate;
        self.buckets
            .update_existing(&(client_key(addr), key_id.to_owned()), |b, now| {
                b.check(rate, now)
            })
            .unwrap_or(Ok(()))
            .map_err(Self::refused)
    }

    /// Forgets the addresses and keys whose failures have all come back
    /// (run periodically): once refusals stop, the limiter empties and
    /// [`AuthFailureLimiter::check`] looks nothing up again.
    pub fn forget_refilled(&self) {
        self.buckets
            .forget_refilled(self.rate, std::time::Instant::now());
    }

    /// Counts one refused attempt.
    pub fn failed(&self, addr: IpAddr, key_id: &str) {
        let rate = self.rate;
        self.buckets
            .update(&(client_key(addr), key_id.to_owned()), rate, |b, now| {
                b.spend(rate, now)
            });
    }

    /// Takes one failure ahead of the work it may cost, under the same
    /// lock as the test: refuses with 429 when none is left, so however
    /// many attempts arrive at once, at most the burst of them go ahead.
    /// Give it back with [`AuthFailureLimiter::refund`] when the attempt
    /// succeeds.
    pub fn take(&self, addr: IpAddr, key: &str) -> Result<(), Error> {
        let rate = self.rate;
        self.buckets
            .update(&(client_key(addr), key.to_owned()), rate, |b, now| {
                b.take(rate, now)
            })
            .map_err(Self::refused)
    }

    /// Returns a failure taken by [`AuthFailureLimiter::take`] for an
    /// attempt that succeeded.
    pub fn refund(&self, addr: IpAddr, key: &str) {
        let rate = self.rate;
        self.buckets
            .update_existing(&(client_key(addr), key.to_owned()), |b, now| {
                b.give_back(rate, now)
            });
    }

    /// Pairs tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_429_per_address_and_key() {
        let l = AuthFailureLimiter::new(Rate {
            per_second: 0.001,
            burst: 3,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, "k1").is_ok());
            l.failed(a, "k1");
        }
        assert!(matches!(
            l.check(a, "k1"),
            Err(Error::RateLimited { retry_after }) if retry_after >= 1
        ));
        // Another key from the same address, the same key from another one.
        assert!(l.check(a, "k2").is_ok());
        assert!(l.check(b, "k1").is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn take_refuses_past_the_burst_and_refund_gives_back() {
        let l = AuthFailureLimiter::new(Rate {
            per_second: 0.001,
            burst: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.take(a, "u").is_ok());
        assert!(l.take(a, "u").is_ok());
        assert!(matches!(l.take(a, "u"), Err(Error::RateLimited { .. })));
        l.refund(a, "u");
        assert!(l.take(a, "u").is_ok());
        assert!(l.take(a, "v").is_ok());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        // The limiter folds them: another address in the /64 shares the bucket.
        let l = AuthFailureLimiter::new(Rate {
            per_second: 0.001,
            burst: 2,
        });
        assert!(l.take(ip("2001:db8::1"), "u").is_ok());
        assert!(l.take(ip("2001:db8::2"), "u").is_ok());
        assert!(matches!(
            l.take(ip("2001:db8::ffff:3"), "u"),
            Err(Error::RateLimited { .. })
        ));
        l.refund(ip("2001:db8::4"), "u");
        assert!(l.check(ip("2001:db8::5"), "u").is_ok());
        assert!(l.take(ip("2001:db8:0:1::1"), "u").is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = AuthFailureLimiter::new(Rate {
            per_second: 0.0,
            burst: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..(MAX_TRACKED + 10) {
            l.failed(a, &i.to_string());
        }
        assert!(l.len() <= MAX_TRACKED);
    }
}
