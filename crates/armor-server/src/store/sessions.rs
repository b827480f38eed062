//! SQL of portal sessions (`portal_sessions`): the portal's own sign-in
//! credential, stored as the SHA-256 of its text, apart from FH-AUTH
//! tokens so that no token query can ever match a session.

use sqlx::FromRow;

use super::{secs, Store};
use crate::error::Error;

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub user_id: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

impl Store {
    /// Records a new session; drops the user's expired ones on the way.
    pub async fn insert_session(
        &self,
        hash: &[u8],
        user_id: i64,
        now: u64,
        expires_at: u64,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM portal_sessions WHERE user_id = $1 AND expires_at < $2")
            .bind(user_id)
            .bind(secs(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO portal_sessions (session_hash, user_id, created_at, last_seen, expires_at) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(secs(now))
        .bind(secs(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, hash: &[u8]) -> Result<Option<SessionRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT user_id, last_seen, expires_at FROM portal_sessions WHERE session_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Writes tokens' last uses (hash, Unix seconds) in one transaction; a
    /// stored time never moves backwards.
    pub async fn touch_tokens(&self, touches: &[([u8; 32], u64)]) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        for (hash, seen) in touches {
            sqlx::query(
                "UPDATE tokens SET last_seen = $1 WHERE token_hash = $2 AND last_seen < $1",
            )
            .bind(secs(*seen))
            .bind(&hash[..])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn touch_session(&self, hash: &[u8], now: u64) -> Result<(), Error> {
        sqlx::query("UPDATE portal_sessions SET last_seen = $1 WHERE session_hash = $2")
            .bind(secs(now))
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends one session (portal sign-out).
    pub async fn end_session(&self, hash: &[u8]) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM portal_sessions WHERE session_hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ends every session of a user (disabled, deleted, new password).
    pub async fn end_user_sessions(&self, user_id: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM portal_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
