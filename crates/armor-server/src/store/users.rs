//! SQL of user administration and account security: lockouts, single-use
//! codes, second factors, security information and audit queries.

use sqlx::FromRow;
use subtle::ConstantTimeEq as _;

use super::{secs, AuditRow, Role, Store, UserStatus};
use crate::crypto::Sealed;
use crate::error::Error;

/// A pending code: id, hash, expiry, attempts, detail.
type PendingCode = (i64, Vec<u8>, i64, i64, Option<String>);

/// Tries a short code may take before it is void.
pub const CODE_MAX_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone, Default, FromRow)]
pub struct LockoutRow {
    pub user_id: i64,
    pub failures: i64,
    pub window_start: i64,
    pub locked_until: i64,
    pub lock_count: i64,
}

#[derive(Debug, Clone, Default, FromRow)]
pub struct SecurityRow {
    pub user_id: i64,
    pub challenge_phrase: Option<String>,
    pub totp_mk_version: Option<i64>,
    pub totp_nonce: Option<Vec<u8>>,
    pub totp_ciphertext: Option<Vec<u8>>,
    pub totp_enabled: i64,
    pub totp_last_step: i64,
    pub phone: Option<String>,
    pub phone_verified: i64,
}

impl SecurityRow {
    /// The sealed TOTP secret, if one was enrolled.
    pub fn totp_sealed(&self) -> Option<Sealed> {
        Some(Sealed {
            version: u32::try_from(self.totp_mk_version?).unwrap_or(u32::MAX),
            nonce: self.totp_nonce.clone()?,
            ciphertext: self.totp_ciphertext.clone()?,
        })
    }
    pub fn has_second_factor(&self) -> bool {
        self.totp_enabled != 0 || self.phone_verified != 0
    }
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityInfoRow {
    pub reference_key: String,
    pub value: String,
    pub updated_at: i64,
}

/// What `GET /auditlog` and `armor admin audit` may filter on.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account_id: i64,
    /// Rows where this user acted or was acted on.
    pub user_id: Option<i64>,
    pub event: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Rows with an id below this (the cursor of the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    // ---- lockout ----

    pub async fn lockout(&self, user_id: i64) -> Result<Option<LockoutRow>, Error> {
        Ok(
            sqlx::query_as("SELECT * FROM login_lockouts WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Forgets failures and locks; returns whether there was a row.
    pub async fn clear_lockout(&self, user_id: i64) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM login_lockouts WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- single-use codes ----

    /// Stores a code's hash, replacing the user's pending codes of that
    /// purpose: one pending code per purpose.
    pub async fn put_user_code(
        &self,
        user_id: i64,
        purpose: &str,
        hash: &[u8],
        expires_at: u64,
        detail: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM user_codes WHERE user_id = $1 AND purpose = $2")
            .bind(user_id)
            .bind(purpose)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO user_codes (user_id, purpose, code_hash, expires_at, detail)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user_id)
        .bind(purpose)
        .bind(hash)
        .bind(secs(expires_at))
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finds, without consuming, an unexpired activation or reset code by
    /// its hash. Returns (user, purpose).
    pub async fn find_password_code(
        &self,
        hash: &[u8],
        now: u64,
    ) -> Result<Option<(i64, String)>, Error> {
        Ok(sqlx::query_as(
            "SELECT user_id, purpose FROM user_codes
             WHERE code_hash = $1 AND purpose IN ('activation', 'reset') AND expires_at >= $2",
        )
        .bind(hash)
        .bind(secs(now))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Consumes a long (unguessable) activation or reset code found by its
    /// hash: once, and only before it expires. Returns (user, purpose).
    pub async fn take_password_code(
        &self,
        hash: &[u8],
        now: u64,
    ) -> Result<Option<(i64, String)>, Error> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "DELETE FROM user_codes WHERE code_hash = $1 AND purpose IN ('activation', 'reset')
             RETURNING user_id, purpose, expires_at",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        sqlx::query("DELETE FROM user_codes WHERE expires_at < $1")
            .bind(secs(now))
            .execute(&self.pool)
            .await?;
        Ok(row.and_then(|(uid, purpose, exp)| (exp >= secs(now)).then_some((uid, purpose))))
    }

    /// Checks a short code against the user's pending code of `purpose`:
    /// a match consumes it (returns its detail, `Some("")` when none); a
    /// miss voids it after [`CODE_MAX_ATTEMPTS`]. Each try is counted
    /// before the comparison, by one conditional UPDATE that stops at the
    /// limit: however many tries arrive at once, at most
    /// [`CODE_MAX_ATTEMPTS`] of them are compared.
    pub async fn check_short_code(
        &self,
        user_id: i64,
        purpose: &str,
        hash: &[u8],
        now: u64,
    ) -> Result<Option<String>, Error> {
        let row: Option<PendingCode> = sqlx::query_as(
            "UPDATE user_codes SET attempts = attempts + 1
             WHERE id = (SELECT id FROM user_codes WHERE user_id = $1 AND purpose = $2
                         ORDER BY id DESC LIMIT 1)
               AND attempts < $3
             RETURNING id, code_hash, expires_at, attempts, detail",
        )
        .bind(user_id)
        .bind(purpose)
        .bind(CODE_MAX_ATTEMPTS)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, stored, exp, attempts, detail)) = row else {
            return Ok(None);
        };
        if exp < secs(now) {
            self.delete_code(id).await?;
            return Ok(None);
        }
        if bool::from(stored.ct_eq(hash)) {
            // Whoever deletes the row has used the code.
            if self.delete_code(id).await? {
                return Ok(Some(detail.unwrap_or_default()));
            }
            return Ok(None);
        }
        if attempts >= CODE_MAX_ATTEMPTS {
            self.delete_code(id).await?;
        }
        Ok(None)
    }

    async fn delete_code(&self, id: i64) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM user_codes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Voids a user's pending codes (all, or of one purpose).
    pub async fn delete_user_codes(
        &self,
        user_id: i64,
        purpose: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM user_codes WHERE user_id = $1 AND ($2 IS NULL OR purpose = $2)")
            .bind(user_id)
            .bind(purpose)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- users ----

    pub async fn update_user(
        &self,
        user_id: i64,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<(), Error> {
        let r = sqlx::query(
            "UPDATE users SET email = $1, first_name = $2, last_name = $3 WHERE id = $4",
        )
        .bind(email)
        .bind(first)
        .bind(last)
        .bind(user_id)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::Conflict(
                format!("a user with the email {email} exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the password of a user whose status is still `from`, and the
    /// status `to` (an invited user becomes active on activation); false if
    /// the status had changed (nothing written).
    pub async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        from: UserStatus,
        to: UserStatus,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, status = $2 WHERE id = $3 AND status = $4",
        )
        .bind(password_hash)
        .bind(to.as_str())
        .bind(user_id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Soft delete: status `deleted`, no password; the row stays.
    pub async fn soft_delete_user(&self, user_id: i64) -> Result<(), Error> {
        sqlx::query("UPDATE users SET status = 'deleted', password_hash = NULL WHERE id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes every active key of a user (wiping the sealed secrets);
    /// returns their ids.
    pub async fn delete_user_keys(&self, user_id: i64, now: u64) -> Result<Vec<String>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE api_keys SET status = 'Deleted', deleted_at = $1, nonce = $3, ciphertext = $3
             WHERE user_id = $2 AND status = 'Active' RETURNING id",
        )
        .bind(secs(now))
        .bind(user_id)
        .bind(Vec::<u8>::new())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The permissions a role grants; `None` for an unknown role.
    pub async fn role_permissions(&self, role: &Role) -> Result<Option<Vec<String>>, Error> {
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT rp.permission FROM roles r LEFT JOIN role_permissions rp ON rp.role_id = r.id
             WHERE r.name = $1",
        )
        .bind(role.as_str())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().filter_map(|r| r.0).collect()))
    }

    // ---- second factors and challenge phrase ----

    pub async fn security(&self, user_id: i64) -> Result<Option<SecurityRow>, Error> {
        Ok(
            sqlx::query_as("SELECT * FROM user_security WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn ensure_security(&self, user_id: i64) -> Result<(), Error> {
        sqlx::query("INSERT INTO user_security (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_challenge_phrase(&self, user_id: i64, phrase: &str) -> Result<(), Error> {
        self.ensure_security(user_id).await?;
        sqlx::query("UPDATE user_security SET challenge_phrase = $1 WHERE user_id = $2")
            .bind(phrase)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a new, not yet confirmed TOTP secret.
    pub async fn set_pending_totp(&self, user_id: i64, sealed: &Sealed) -> Result<(), Error> {
        self.ensure_security(user_id).await?;
        sqlx::query(
            "UPDATE user_security SET totp_mk_version = $1, totp_nonce = $2, totp_ciphertext = $3,
             totp_enabled = 0, totp_last_step = 0 WHERE user_id = $4",
        )
        .bind(i64::from(sealed.version))
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the step of an accepted TOTP code (and enables TOTP): only
    /// if it is later than the last one, so a code works once.
    pub async fn use_totp_step(&self, user_id: i64, step: u64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE user_security SET totp_last_step = $1, totp_enabled = 1
             WHERE user_id = $2 AND totp_last_step < $1",
        )
        .bind(secs(step))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Up to `limit` TOTP secrets sealed with another master-key version
    /// than `version`, of users after `after`, in user order.
    pub async fn totp_not_sealed_with(
        &self,
        version: u32,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SecurityRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT * FROM user_security
             WHERE totp_mk_version IS NOT NULL AND totp_mk_version <> $1 AND user_id > $2
             ORDER BY user_id LIMIT $3",
        )
        .bind(i64::from(version))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a user's sealed TOTP secret, only if the row still holds
    /// `old` (same version and nonce): a re-enrolment or reset in between
    /// wins.
    pub async fn reseal_totp(
        &self,
        user_id: i64,
        old: &Sealed,
        sealed: &Sealed,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE user_security SET totp_mk_version = $1, totp_nonce = $2, totp_ciphertext = $3
             WHERE user_id = $4 AND totp_mk_version = $5 AND totp_nonce = $6",
        )
        .bind(i64::from(sealed.version))
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(user_id)
        .bind(i64::from(old.version))
        .bind(&old.nonce)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_phone_verified(&self, user_id: i64, phone: &str) -> Result<(), Error> {
        self.ensure_security(user_id).await?;
        sqlx::query("UPDATE user_security SET phone = $1, phone_verified = 1 WHERE user_id = $2")
            .bind(phone)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes both second factors.
    pub async fn clear_second_factors(&self, user_id: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE user_security SET totp_mk_version = NULL, totp_nonce = NULL,
             totp_ciphertext = NULL, totp_enabled = 0, totp_last_step = 0, phone = NULL,
             phone_verified = 0 WHERE user_id = $1",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- security information ----

    pub async fn security_info(
        &self,
        user_id: i64,
        reference_key: Option<&str>,
    ) -> Result<Vec<SecurityInfoRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT reference_key, value, updated_at FROM security_info
             WHERE user_id = $1 AND ($2 IS NULL OR reference_key = $2) ORDER BY reference_key",
        )
        .bind(user_id)
        .bind(reference_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Writes an entry: `existing` updates one that must exist, otherwise
    /// one that must not.
    pub async fn put_security_info(
        &self,
        user_id: i64,
        reference_key: &str,
        value: &str,
        existing: bool,
        now: u64,
    ) -> Result<bool, Error> {
        let r = if existing {
            sqlx::query(
                "UPDATE security_info SET value = $1, updated_at = $2
                 WHERE user_id = $3 AND reference_key = $4",
            )
            .bind(value)
            .bind(secs(now))
            .bind(user_id)
            .bind(reference_key)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "INSERT INTO security_info (user_id, reference_key, value, updated_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(reference_key)
            .bind(value)
            .bind(secs(now))
            .execute(&self.pool)
            .await?
        };
        Ok(r.rows_affected() > 0)
    }

    // ---- audit queries ----

    /// Audit rows of an account matching `f`, newest first.
    pub async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, at, account_id, actor_id, credential, event, target, address, detail
             FROM audit_log
             WHERE account_id = $1
               AND ($2 IS NULL OR actor_id = $2 OR target = CAST($2 AS TEXT))
               AND ($3 IS NULL OR event = $3)
               AND ($4 IS NULL OR at >= $4)
               AND ($5 IS NULL OR at <= $5)
               AND ($6 IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7",
        )
        .bind(f.account_id)
        .bind(f.user_id)
        .bind(&f.event)
        .bind(f.since)
        .bind(f.until)
        .bind(f.before)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
