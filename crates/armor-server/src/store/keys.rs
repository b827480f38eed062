//! API keys: sealed secrets, listing, deletion, re-sealing, last use.

use super::{secs, KeyRow, KeyRules, SealedKeyRow, Store, KEY_RULE_COLUMNS, LAST_USED_CHUNK};

/// A key to write ([`Store::insert_key`]).
#[derive(Debug, Clone, Copy)]
pub struct NewKeyRow<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub account_id: i64,
    pub name: &'a str,
    pub created_at: u64,
    pub sealed: &'a Sealed,
    pub rules: &'a KeyRules,
}
use crate::crypto::Sealed;
use crate::error::Error;

impl Store {
    pub async fn insert_key(&self, k: &NewKeyRow<'_>) -> Result<(), Error> {
        let NewKeyRow {
            id,
            user_id,
            account_id,
            name,
            created_at: now,
            sealed,
            rules,
        } = *k;
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, account_id, name, created_at, status, mk_version, nonce, ciphertext,
                 expires_at, permissions, allowed_routes, allowed_ips, rate_limit, rate_window, rolled_from, rolled_until)
             VALUES ($1, $2, $3, $4, $5, 'Active', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(id)
        .bind(user_id)
        .bind(account_id)
        .bind(name)
        .bind(secs(now))
        .bind(i64::from(sealed.version))
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(rules.expires_at)
        .bind(rules.permissions.as_deref())
        .bind(rules.allowed_routes.as_deref())
        .bind(rules.allowed_ips.as_deref())
        .bind(rules.rate_limit)
        .bind(rules.rate_window)
        .bind(rules.rolled_from.as_deref())
        .bind(rules.rolled_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a key's life at `until` (the grace period of a roll), unless it
    /// was rolled already. Whether it was.
    pub async fn mark_rolled(&self, id: &str, until: u64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE api_keys SET rolled_until = $1
             WHERE id = $2 AND status = 'Active' AND rolled_until IS NULL",
        )
        .bind(secs(until))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Undoes [`Store::mark_rolled`] (the new key could not be written).
    pub async fn unmark_rolled(&self, id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE api_keys SET rolled_until = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn keys_of_user(&self, user_id: i64, account_id: i64) -> Result<Vec<KeyRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, user_id, account_id, name, created_at, last_used, status, {KEY_RULE_COLUMNS} FROM api_keys
             WHERE user_id = $1 AND account_id = $2 AND status = 'Active' ORDER BY created_at, id",
        ))
        .bind(user_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, user_id, account_id, name, created_at, last_used, status, {KEY_RULE_COLUMNS} FROM api_keys
             WHERE id = $1 AND status = 'Active'",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks the key deleted and wipes its sealed secret.
    pub async fn delete_key(&self, id: &str, now: u64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE api_keys SET status = 'Deleted', deleted_at = $1, nonce = $3, ciphertext = $3
             WHERE id = $2 AND status = 'Active'",
        )
        .bind(secs(now))
        .bind(id)
        .bind(Vec::<u8>::new())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn rename_key(&self, id: &str, name: &str) -> Result<bool, Error> {
        let r = sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2 AND status = 'Active'")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Sealed secrets of the active keys of active users (optionally one
    /// user's), for the verifier's cache.
    pub async fn active_sealed_keys(
        &self,
        user_id: Option<i64>,
    ) -> Result<Vec<SealedKeyRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT k.id, k.user_id, k.account_id, k.mk_version, k.nonce, k.ciphertext,
                 k.expires_at, k.permissions, k.allowed_routes, k.allowed_ips, k.rate_limit,
                 k.rate_window, k.rolled_from, k.rolled_until
             FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.status = 'Active' AND u.status = 'active' AND ($1 IS NULL OR k.user_id = $1)",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Up to `limit` active keys sealed with another version than `version`.
    pub async fn keys_not_sealed_with(
        &self,
        version: u32,
        limit: i64,
    ) -> Result<Vec<SealedKeyRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, user_id, account_id, mk_version, nonce, ciphertext, {KEY_RULE_COLUMNS} FROM api_keys
             WHERE status = 'Active' AND mk_version <> $1 LIMIT $2",
        ))
        .bind(i64::from(version))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a row's sealed secret, only if it still holds `old_version`.
    pub async fn reseal_key(
        &self,
        id: &str,
        old_version: i64,
        sealed: &Sealed,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE api_keys SET mk_version = $1, nonce = $2, ciphertext = $3
             WHERE id = $4 AND mk_version = $5 AND status = 'Active'",
        )
        .bind(i64::from(sealed.version))
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(id)
        .bind(old_version)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Writes a batch of last-used times: one statement per
    /// [`LAST_USED_CHUNK`] keys, in one transaction. A time never moves a
    /// stored one backwards (another node may have written a later one).
    pub async fn record_last_used(&self, batch: &[(String, u64)]) -> Result<(), Error> {
        // In key order: the index is walked forwards, page after page
        // (2-3x fewer page visits than a random order on SQLite).
        let mut sorted: Vec<&(String, u64)> = batch.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut tx = self.pool.begin().await?;
        for chunk in sorted.chunks(LAST_USED_CHUNK) {
            let mut sql = String::from("WITH v(id, t) AS (VALUES ");
            sql.push_str(&self.value_rows(chunk.len(), 2));
            sql.push_str(
                ") UPDATE api_keys SET last_used = v.t FROM v
                 WHERE api_keys.id = v.id AND (api_keys.last_used IS NULL OR api_keys.last_used < v.t)",
            );
            let mut q = sqlx::query(&sql);
            for (id, at) in chunk.iter().copied() {
                q = q.bind(id.as_str()).bind(secs(*at));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
