//! Per-key usage counts by time bucket (table `key_usage`, migration
//! 0007): batched upserts that add, the read behind the usage endpoint,
//! and the retention clean-up.

use std::collections::BTreeMap;

use super::{secs, Store};
use crate::error::Error;

/// One row to add: key, bucket length (seconds), bucket start, error code
/// (empty for accepted) and the count.
pub type UsageRow = (String, u64, u64, String, u64);

/// Rows per upsert statement: five parameters each, well under SQLite's
/// 32 766 and PostgreSQL's 65 535 parameters per statement (see
/// `Store::value_rows` for why many parameters are cheap to bind).
const USAGE_CHUNK: usize = 500;

impl Store {
    /// Adds a batch of counts, in one transaction. Each (key, grain, start,
    /// code) must appear once in `rows` (an upsert may not touch a row
    /// twice in one statement).
    pub async fn add_usage(&self, rows: &[UsageRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(USAGE_CHUNK) {
            let mut sql =
                String::from("INSERT INTO key_usage (key_id, grain, start, code, n) VALUES ");
            sql.push_str(&self.value_rows(chunk.len(), 5));
            sql.push_str(
                " ON CONFLICT (key_id, grain, start, code) DO UPDATE SET n = key_usage.n + excluded.n",
            );
            let mut q = sqlx::query(&sql);
            for (key, grain, start, code, n) in chunk {
                q = q
                    .bind(key.as_str())
                    .bind(secs(*grain))
                    .bind(secs(*start))
                    .bind(code.as_str())
                    .bind(secs(*n));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored counts of one key in buckets of `grain` seconds starting
    /// in `[from, to)`: bucket start → code (empty: accepted) → count.
    pub async fn usage_of_key(
        &self,
        key_id: &str,
        grain: u64,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, BTreeMap<String, u64>>, Error> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT start, code, n FROM key_usage
             WHERE key_id = $1 AND grain = $2 AND start >= $3 AND start < $4",
        )
        .bind(key_id)
        .bind(secs(grain))
        .bind(secs(from))
        .bind(secs(to))
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
        for (start, code, n) in rows {
            *out.entry(start.max(0) as u64)
                .or_default()
                .entry(code)
                .or_default() += n.max(0) as u64;
        }
        Ok(out)
    }

    /// Deletes up to `limit` rows of buckets of `grain` seconds that
    /// started before `before`; returns how many went.
    pub async fn purge_usage(&self, grain: u64, before: u64, limit: i64) -> Result<u64, Error> {
        let r = sqlx::query(
            "DELETE FROM key_usage WHERE (key_id, grain, start, code) IN (
                 SELECT key_id, grain, start, code FROM key_usage
                 WHERE grain = $1 AND start < $2 LIMIT $3)",
        )
        .bind(secs(grain))
        .bind(secs(before))
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Rows of buckets of `grain` seconds that started before `before`.
    pub async fn count_usage_before(&self, grain: u64, before: u64) -> Result<u64, Error> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM key_usage WHERE grain = $1 AND start < $2")
                .bind(secs(grain))
                .bind(secs(before))
                .fetch_one(&self.pool)
                .await?;
        Ok(n.max(0) as u64)
    }
}
