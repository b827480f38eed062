//! SQL that counts an attempt before the work it guards, so that
//! concurrent callers cannot all pass a check made before any of them is
//! counted: login attempts against the lockout, and token reissue (one
//! conditional revoke that only one caller can win).

use super::{secs, LockoutRow, Store};
use crate::error::Error;

/// A login attempt as counted: the failures in the window including this
/// one, and the lock as it stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedAttempt {
    pub failures: i64,
    pub locked_until: i64,
    pub lock_count: i64,
}

impl Store {
    /// Counts one attempt on `user_id`'s login in a single upsert and
    /// returns the counts after it: a new window when the last began before
    /// `window_start_min`, nothing added while a lock holds at `now`.
    pub async fn count_login_attempt(
        &self,
        user_id: i64,
        now: i64,
        window_start_min: i64,
    ) -> Result<CountedAttempt, Error> {
        let (failures, locked_until, lock_count): (i64, i64, i64) = sqlx::query_as(
            "INSERT INTO login_lockouts (user_id, failures, window_start, locked_until, lock_count)
             VALUES ($1, 1, $2, 0, 0)
             ON CONFLICT (user_id) DO UPDATE SET
               failures = CASE
                 WHEN login_lockouts.locked_until > $2 THEN login_lockouts.failures
                 WHEN login_lockouts.window_start < $3 THEN 1
                 ELSE login_lockouts.failures + 1 END,
               window_start = CASE
                 WHEN login_lockouts.locked_until > $2 THEN login_lockouts.window_start
                 WHEN login_lockouts.window_start < $3 THEN $2
                 ELSE login_lockouts.window_start END
             RETURNING failures, locked_until, lock_count",
        )
        .bind(user_id)
        .bind(now)
        .bind(window_start_min)
        .fetch_one(&self.pool)
        .await?;
        Ok(CountedAttempt {
            failures,
            locked_until,
            lock_count,
        })
    }

    /// Sets the next lock on `user_id` (until `locked_until`, the window
    /// and failures restarting at `now`) if no lock holds at `now` and
    /// none was set since `seen` was counted: of concurrent callers, one
    /// locks. Returns the row when this call locked.
    pub async fn lock_login(
        &self,
        user_id: i64,
        now: i64,
        seen: CountedAttempt,
        locked_until: i64,
    ) -> Result<Option<LockoutRow>, Error> {
        let r = sqlx::query(
            "UPDATE login_lockouts SET failures = 0, window_start = $1, locked_until = $2,
             lock_count = $3 WHERE user_id = $4 AND lock_count = $5 AND locked_until <= $1",
        )
        .bind(now)
        .bind(locked_until)
        .bind(seen.lock_count + 1)
        .bind(user_id)
        .bind(seen.lock_count)
        .execute(&self.pool)
        .await?;
        Ok((r.rows_affected() == 1).then_some(LockoutRow {
            user_id,
            failures: 0,
            window_start: now,
            locked_until,
            lock_count: seen.lock_count + 1,
        }))
    }

    /// Takes back an attempt counted by [`Store::count_login_attempt`] that
    /// turned out not to be a failure (the password was right and the
    /// login waits for its second factor).
    pub async fn uncount_login_attempt(&self, user_id: i64, now: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE login_lockouts SET failures = failures - 1
             WHERE user_id = $1 AND failures > 0 AND locked_until <= $2",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes the token `old` and issues `new` in its place, in one
    /// transaction: only while `old` is unrevoked, unexpired (absolute and
    /// idle) and its user active and not locked out. The revoke is a single
    /// conditional UPDATE, so of concurrent reissues of one token exactly
    /// one wins. The new token keeps the old one's absolute expiry.
    /// Returns the user id, `None` when refused.
    pub async fn reissue_token(
        &self,
        old: &[u8],
        new: &[u8],
        now: u64,
        idle_ttl: u64,
    ) -> Result<Option<i64>, Error> {
        let now = secs(now);
        let mut tx = self.pool.begin().await?;
        let won: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE tokens SET revoked = 1
             WHERE token_hash = $1 AND revoked = 0 AND expires_at >= $2 AND last_seen >= $3
               AND user_id IN (SELECT id FROM users WHERE status = 'active')
               AND user_id NOT IN (SELECT user_id FROM login_lockouts WHERE locked_until > $2)
             RETURNING user_id, expires_at",
        )
        .bind(old)
        .bind(now)
        .bind(now.saturating_sub(secs(idle_ttl)))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, expires_at)) = won else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, created_at, last_seen, expires_at)
             VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(new)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }
}
