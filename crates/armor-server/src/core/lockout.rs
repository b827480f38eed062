//! Failed-login lockout: attempts counted per user in the store, a lock
//! past the threshold (doubling up to a cap), and the same count for a
//! signed-in user's second-factor checks.

use std::sync::Arc;

use super::audit::Audit;
use super::codes::sec;
use crate::clock::{rfc3339, Clock};
use crate::error::Error;
use crate::store::{AuditEvent, CountedAttempt, Store, UserRow};

/// When failed logins lock an account, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock.
    pub threshold: i64,
    pub window: u64,
    /// First lock; each further lock doubles it, up to `max_lock`.
    pub base_lock: u64,
    pub max_lock: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 5,
            window: 15 * 60,
            base_lock: 60,
            max_lock: 3_600,
        }
    }
}

impl LockoutPolicy {
    /// How long the `n`th lock (1-based) lasts.
    pub fn lock_for(&self, n: i64) -> u64 {
        let doublings = u32::try_from((n - 1).clamp(0, 30)).unwrap_or(30);
        self.base_lock
            .saturating_mul(1u64 << doublings)
            .min(self.max_lock)
    }
}

/// Whether a login is locked, as `GET /users/LockedOut` tells it.
#[derive(Debug, Clone)]
pub struct LockState {
    pub user_id: i64,
    pub locked_until: Option<u64>,
    pub failures: i64,
}

/// Counts failed attempts and locks.
#[derive(Clone)]
pub struct Lockout {
    store: Store,
    clock: Arc<dyn Clock>,
    policy: LockoutPolicy,
    audit: Audit,
}

impl Lockout {
    pub(super) fn new(store: Store, clock: Arc<dyn Clock>, audit: Audit) -> Self {
        Lockout {
            store,
            clock,
            policy: LockoutPolicy::default(),
            audit,
        }
    }

    pub fn policy(&self) -> LockoutPolicy {
        self.policy
    }

    /// Counts an attempt by `user_id` before its password is checked.
    pub(super) async fn count(&self, user_id: i64, now: u64) -> Result<CountedAttempt, Error> {
        self.store
            .count_login_attempt(
                user_id,
                sec(now),
                sec(now).saturating_sub(sec(self.policy.window)),
            )
            .await
    }

    /// Takes back an attempt counted at `now` (a right password whose
    /// login did not go on).
    pub(super) async fn uncount(&self, user_id: i64, now: u64) -> Result<(), Error> {
        self.store.uncount_login_attempt(user_id, sec(now)).await
    }

    /// Ends any lock and forgets the failures.
    pub(super) async fn clear(&self, user_id: i64) -> Result<bool, Error> {
        self.store.clear_lockout(user_id).await
    }

    /// Whether `user_id` is locked now, and the failures in the window.
    pub(super) async fn state(&self, user_id: i64) -> Result<LockState, Error> {
        let row = self.store.lockout(user_id).await?.unwrap_or_default();
        let now = sec(self.clock.now());
        let in_window = now.saturating_sub(row.window_start) <= sec(self.policy.window);
        Ok(LockState {
            user_id,
            locked_until: (row.locked_until > now).then_some(row.locked_until.max(0) as u64),
            failures: if in_window { row.failures } else { 0 },
        })
    }

    /// The lock on a user, if one holds now.
    pub async fn locked_until(&self, user_id: i64) -> Result<Option<u64>, Error> {
        let now = sec(self.clock.now());
        Ok(self
            .store
            .lockout(user_id)
            .await?
            .filter(|l| l.locked_until > now)
            .map(|l| l.locked_until.max(0) as u64))
    }

    /// The audit row of a lock just set.
    async fn audit_lockout(
        &self,
        user: &UserRow,
        row: &crate::store::LockoutRow,
        now: i64,
        address: Option<String>,
    ) {
        self.audit
            .record(AuditEvent {
                account_id: Some(user.account_id),
                actor_id: Some(user.id),
                credential: "password".into(),
                event: "lockout",
                target: Some(user.id.to_string()),
                address,
                detail: Some(format!(
                    "until={} lock={} seconds={}",
                    rfc3339(row.locked_until.max(0) as u64),
                    row.lock_count,
                    row.locked_until - now
                )),
            })
            .await;
    }

    /// A counted attempt failed: the one that reached the threshold sets
    /// the lock (one of any concurrent ones).
    pub(super) async fn failed_attempt(
        &self,
        user: &UserRow,
        seen: CountedAttempt,
        address: Option<String>,
    ) -> Result<(), Error> {
        if seen.failures < self.policy.threshold {
            return Ok(());
        }
        let now = sec(self.clock.now());
        let until = now.saturating_add(sec(self.policy.lock_for(seen.lock_count + 1)));
        if let Some(row) = self.store.lock_login(user.id, now, seen, until).await? {
            self.audit_lockout(user, &row, now, address).await;
        }
        Ok(())
    }

    /// Sets the lock missed by a counted attempt that was cancelled (its
    /// future dropped) after it reached the threshold: failures past the
    /// threshold with no lock holding. Idempotent through `lock_count`.
    pub(super) async fn lock_if_over(
        &self,
        user: &UserRow,
        seen: CountedAttempt,
        address: Option<String>,
    ) -> Result<(), Error> {
        if seen.locked_until <= sec(self.clock.now()) && seen.failures > self.policy.threshold {
            self.failed_attempt(user, seen, address).await?;
        }
        Ok(())
    }

    /// Counts a second-factor check by a signed-in user (enrolling an
    /// authenticator app or a phone) before it runs, like a login attempt;
    /// refuses with `invalid_mfa_code`, unchecked, while a lock holds or
    /// once the threshold is reached.
    pub(super) async fn admit_code_check(&self, user: &UserRow) -> Result<CountedAttempt, Error> {
        let now = sec(self.clock.now());
        let seen = self
            .store
            .count_login_attempt(user.id, now, now.saturating_sub(sec(self.policy.window)))
            .await?;
        if seen.locked_until > now || seen.failures > self.policy.threshold {
            self.lock_if_over(user, seen, None).await?;
            return Err(Error::InvalidMfaCode);
        }
        Ok(seen)
    }

    /// Ends a check admitted by [`Lockout::admit_code_check`]: a right code
    /// takes the attempt back; a wrong one leaves it counted (and may lock)
    /// and refuses with `invalid_mfa_code`.
    pub(super) async fn settle_code_check(
        &self,
        user: &UserRow,
        seen: CountedAttempt,
        ok: bool,
        address: Option<String>,
    ) -> Result<(), Error> {
        if ok {
            self.store
                .uncount_login_attempt(user.id, sec(self.clock.now()))
                .await?;
            return Ok(());
        }
        self.failed_attempt(user, seen, address).await?;
        Err(Error::InvalidMfaCode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_durations_double_up_to_the_cap() {
        let p = LockoutPolicy::default();
        let got: Vec<u64> = (1..=8).map(|n| p.lock_for(n)).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(p.lock_for(1_000_000), 3600);
    }
}
