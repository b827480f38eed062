//! FH-AUTH / Bearer tokens checked from memory.
//!
//! A token the store lets through (unrevoked, unexpired, its user known)
//! is cached by the SHA-256 of its text in the [`AccessCache`], with its
//! user, home account, absolute expiry and last use; each request then
//! checks both expiries against the clock without reading the store.
//!
//! Revocation: logout, reissue, a new password, disable and delete call
//! [`KeyVerifier::invalidate_user`](super::verifier::KeyVerifier::invalidate_user),
//! which drops the user's tokens here at once and, with other nodes, sends
//! `user:<id>` on the invalidation channel, which drops them there (a load
//! racing with the change is never cached: the generation rule of
//! `core/access.rs`). Whatever this process cannot hear of is re-read
//! within the cache's one-second TTL, so a revoked token is refused
//! everywhere within a second.
//!
//! Idle expiry: as before, the stored last use moves when a request comes
//! [`TOUCH_EVERY`] seconds or more after it; that write is now queued and
//! written behind in batches ([`Sessions::flush_token_touches`], with the
//! keys' last-used times), except for a token within
//! [`WRITE_THROUGH_WITHIN`] seconds of its idle expiry, written at once so
//! that every node sees it before it would matter.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::access::CachedToken;
use super::sessions::Sessions;
use super::TOKEN_IDLE_TTL;
use crate::error::Error;

/// A use this long after the stored last use moves it (seconds).
pub const TOUCH_EVERY: i64 = 30;

/// A token this close to its idle expiry has its use written at once
/// (seconds).
pub const WRITE_THROUGH_WITHIN: i64 = 60;

/// The token of an authenticated request.
#[derive(Debug, Clone, Copy)]
pub struct TokenUser {
    pub user_id: i64,
    /// The user's home account.
    pub account_id: i64,
    /// The SHA-256 of the token.
    pub hash: [u8; 32],
}

/// Last uses queued for the store: token hash → Unix seconds.
#[derive(Default)]
pub struct TokenTouches {
    pending: Mutex<HashMap<[u8; 32], u64>>,
}

impl TokenTouches {
    fn queue(&self, hash: [u8; 32], seen: u64) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let e = p.entry(hash).or_insert(seen);
        *e = (*e).max(seen);
    }

    fn pending(&self, hash: &[u8; 32]) -> Option<u64> {
        let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.get(hash).copied()
    }

    /// A copy of the queue, in key order. Entries stay queued (a load
    /// still sees them) until [`TokenTouches::written`].
    fn snapshot(&self) -> Vec<([u8; 32], u64)> {
        let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = p.iter().map(|(h, s)| (*h, *s)).collect();
        v.sort_unstable();
        v
    }

    /// Drops what was written, unless a later use was queued since.
    fn written(&self, batch: &[([u8; 32], u64)]) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (hash, seen) in batch {
            if p.get(hash) == Some(seen) {
                p.remove(hash);
            }
        }
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Whether a token may be used at `now` (Unix seconds): the same rule as
/// the store's.
fn live(t: &CachedToken, now: i64) -> bool {
    now <= t.expires_at && now <= t.last_seen.saturating_add(TOKEN_IDLE_TTL as i64)
}

impl Sessions {
    /// Checks an FH-AUTH / Bearer token; slides its idle expiry.
    pub async fn authenticate_token(&self, token: &str) -> Result<TokenUser, Error> {
        let hash = crate::crypto::token_hash(token);
        let now = self.clock.now();
        let now_i = secs(now);
        let t = match self.cache.token(&hash) {
            Some(t) => t,
            None => self.load_token(&hash, now_i).await?,
        };
        if !live(&t, now_i) {
            return Err(Error::InvalidToken);
        }
        if now_i - t.last_seen >= TOUCH_EVERY {
            if now_i - t.last_seen >= TOKEN_IDLE_TTL as i64 - WRITE_THROUGH_WITHIN {
                self.store.touch_token(&hash, now).await?;
            } else {
                self.touches.queue(hash, now);
            }
            self.cache.token_seen(&hash, now_i);
        }
        Ok(TokenUser {
            user_id: t.user_id,
            account_id: t.account_id,
            hash,
        })
    }

    /// Reads a token from the store; caches it if it may be used.
    async fn load_token(&self, hash: &[u8; 32], now: i64) -> Result<CachedToken, Error> {
        let generation = self.cache.generation();
        let row = self.store.token(hash).await?.ok_or(Error::InvalidToken)?;
        if row.revoked != 0 {
            return Err(Error::InvalidToken);
        }
        let user = self
            .store
            .user_by_id(row.user_id)
            .await?
            .ok_or(Error::InvalidToken)?;
        let queued = self.touches.pending(hash).map_or(0, secs);
        let t = CachedToken {
            user_id: row.user_id,
            account_id: user.account_id,
            expires_at: row.expires_at,
            last_seen: row.last_seen.max(queued),
        };
        if live(&t, now) {
            self.cache.insert_token(*hash, generation, t);
        }
        Ok(t)
    }

    /// Writes the queued last uses of tokens (every few seconds, and on
    /// a clean shutdown).
    pub async fn flush_token_touches(&self) -> Result<(), Error> {
        let batch = self.touches.snapshot();
        if batch.is_empty() {
            return Ok(());
        }
        self.store.touch_tokens(&batch).await?;
        self.touches.written(&batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_use_stays_until_written_and_a_later_one_is_kept() {
        let t = TokenTouches::default();
        t.queue([1; 32], 100);
        t.queue([1; 32], 90);
        t.queue([2; 32], 50);
        let batch = t.snapshot();
        assert_eq!(batch, vec![([1; 32], 100), ([2; 32], 50)]);
        assert_eq!(t.pending(&[1; 32]), Some(100));
        t.queue([2; 32], 80);
        t.written(&batch);
        assert_eq!(t.pending(&[1; 32]), None);
        assert_eq!(t.pending(&[2; 32]), Some(80));
    }
}
