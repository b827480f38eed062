//! SQL of the outbox (messages for users, their bodies sealed) and of the
//! send limits (messages counted per target in a window).

use sqlx::FromRow;

use super::{secs, Store};
use crate::crypto::Sealed;
use crate::error::Error;

/// An outbox row. The body is sealed (`mk_version`, `nonce`, `ciphertext`;
/// see `core/outbox.rs` to open it); `body` is empty except in a pending
/// row written before bodies were sealed. Once sent, all are wiped.
#[derive(Clone, FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: i64,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub sent_at: Option<i64>,
    /// Failed SMTP tries.
    pub attempts: i64,
    /// No try before this (a retry's backoff, or a node's claim).
    pub next_attempt_at: i64,
    /// The last failure: a kind and the SMTP code, never the message.
    pub last_error: Option<String>,
    #[serde(skip)]
    #[sqlx(flatten)]
    pub seal: SealColumns,
}

/// The columns of a sealed outbox body (all `None` once delivered, or in a
/// row written before bodies were sealed).
#[derive(Clone, Default, FromRow)]
pub struct SealColumns {
    pub mk_version: Option<i64>,
    pub nonce: Option<Vec<u8>>,
    pub ciphertext: Option<Vec<u8>>,
}

impl std::fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold a code: not shown.
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("sent_at", &self.sent_at)
            .field("attempts", &self.attempts)
            .field("mk_version", &self.seal.mk_version)
            .finish_non_exhaustive()
    }
}

impl OutboxRow {
    /// The sealed body, if the row holds one.
    pub fn sealed(&self) -> Option<Sealed> {
        Some(Sealed {
            version: u32::try_from(self.seal.mk_version?).unwrap_or(u32::MAX),
            nonce: self.seal.nonce.clone()?,
            ciphertext: self.seal.ciphertext.clone()?,
        })
    }
}

impl Store {
    /// Queues a message: the row and its body sealed by `seal` (given the
    /// row's id) in one transaction, so no reader sees it before the body.
    pub async fn enqueue(
        &self,
        now: u64,
        channel: &str,
        recipient: &str,
        subject: &str,
        seal: impl FnOnce(i64) -> Result<Sealed, Error>,
    ) -> Result<i64, Error> {
        let mut tx = self.pool.begin().await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO outbox (created_at, channel, recipient, subject, body)
             VALUES ($1, $2, $3, $4, '') RETURNING id",
        )
        .bind(secs(now))
        .bind(channel)
        .bind(recipient)
        .bind(subject)
        .fetch_one(&mut *tx)
        .await?;
        let sealed = seal(id)?;
        sqlx::query("UPDATE outbox SET mk_version = $1, nonce = $2, ciphertext = $3 WHERE id = $4")
            .bind(i64::from(sealed.version))
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Messages not sent yet, oldest first.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, Error> {
        Ok(
            sqlx::query_as("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` unsent messages of `channel` due at `now` and tried
    /// fewer than `max_attempts` times, oldest first.
    pub async fn due_outbox(
        &self,
        channel: &str,
        now: u64,
        max_attempts: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND channel = $1
               AND next_attempt_at <= $2 AND attempts < $3
             ORDER BY id LIMIT $4",
        )
        .bind(channel)
        .bind(secs(now))
        .bind(max_attempts)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims a due message until `until`: of several nodes, one gets it;
    /// if the sender dies, the message is due again after `until`.
    pub async fn claim_outbox(&self, id: i64, now: u64, until: u64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1
             WHERE id = $2 AND sent_at IS NULL AND next_attempt_at <= $3",
        )
        .bind(secs(until))
        .bind(id)
        .bind(secs(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records a failed try: the try count, the error (kind and SMTP code)
    /// and when to try again.
    pub async fn outbox_failed(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        next_attempt_at: u64,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE outbox SET attempts = $1, last_error = $2, next_attempt_at = $3
             WHERE id = $4 AND sent_at IS NULL",
        )
        .bind(attempts)
        .bind(error)
        .bind(secs(next_attempt_at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a message delivered and wipes its body.
    pub async fn mark_sent(&self, id: i64, now: u64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE outbox SET sent_at = $1, body = '', mk_version = NULL, nonce = NULL,
               ciphertext = NULL
             WHERE id = $2 AND sent_at IS NULL",
        )
        .bind(secs(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` pending messages after id `after` whose body is in
    /// clear or (given a `version`) sealed with another master-key
    /// version, by id.
    pub async fn outbox_not_sealed_with(
        &self,
        version: Option<u32>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND id > $1
               AND ((mk_version IS NULL AND body <> '') OR ($2 IS NOT NULL AND mk_version <> $2))
             ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(version.map(i64::from))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a pending message's body with `sealed`, only if the row
    /// still holds what `old` read (a delivery or another re-seal in
    /// between wins); the clear body, if any, is wiped.
    pub async fn reseal_outbox(&self, old: &OutboxRow, sealed: &Sealed) -> Result<bool, Error> {
        let set = "UPDATE outbox SET mk_version = $1, nonce = $2, ciphertext = $3, body = ''
                   WHERE id = $4 AND sent_at IS NULL";
        let r = match old.sealed() {
            Some(o) => {
                let sql = format!("{set} AND mk_version = $5 AND nonce = $6");
                sqlx::query(&sql)
                    .bind(i64::from(sealed.version))
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(old.id)
                    .bind(i64::from(o.version))
                    .bind(o.nonce)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("{set} AND mk_version IS NULL AND body = $5");
                sqlx::query(&sql)
                    .bind(i64::from(sealed.version))
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(old.id)
                    .bind(&old.body)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(r.rows_affected() > 0)
    }

    /// Counts one message to the target `key` and returns the count in the
    /// current window and when the window ends. A window starts with the
    /// first message after the previous one ended and lasts `window`
    /// seconds. One upsert: concurrent calls (on any node) all count.
    /// Windows that ended are dropped.
    pub async fn count_send(&self, key: &[u8], now: u64, window: u64) -> Result<(i64, i64), Error> {
        let now = secs(now);
        let end = now.saturating_add(secs(window));
        // Housekeeping only: a failure (two nodes purging at once, say)
        // does not fail the count.
        if let Err(e) = sqlx::query("DELETE FROM send_limits WHERE window_end <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "send limits: ended windows not purged");
        }
        Ok(sqlx::query_as(
            "INSERT INTO send_limits (key, window_end, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key) DO UPDATE SET
               hits = CASE WHEN send_limits.window_end <= $3 THEN 1
                      ELSE send_limits.hits + 1 END,
               window_end = CASE WHEN send_limits.window_end <= $3 THEN $2
                            ELSE send_limits.window_end END
             RETURNING hits, window_end",
        )
        .bind(key.to_vec())
        .bind(end)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }
}
