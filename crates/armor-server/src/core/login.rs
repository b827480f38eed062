//! Password login and token reissue, with every limit counted before the
//! work it guards:
//!
//! - failed logins per (client address, user) take a token from the
//!   login limiter before the password is checked (429 `rate_limited`
//!   past the burst, without hashing); a right password gives it back.
//!   The user is the one the store finds, or the name as given when none
//!   is; IPv6 clients count by their /64;
//! - each attempt on an active user is counted in the lockout row before
//!   the password is checked, and only attempts counted within the
//!   threshold check the real hash, so however many arrive at once, at
//!   most `threshold` of them check it before the lock is set;
//! - the hash itself runs on the bounded blocking pool (`hashing.rs`), the
//!   dummy hash of unknown, inactive and locked users too, so all cost
//!   the same.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use zeroize::Zeroizing;

use super::codes::sec;
use super::sessions::Sessions;
use super::{CODE_TTL, TOKEN_IDLE_TTL};
use crate::crypto;
use crate::error::Error;
use crate::store::{AuditEvent, UserStatus};

/// Longest user name kept as a limiter key.
const MAX_KEY: usize = 256;

/// The login limiter's key for a user name, as the store compares them.
fn limiter_key(username: &str) -> String {
    let mut k = username.trim().to_lowercase();
    if k.len() > MAX_KEY {
        let mut cut = MAX_KEY;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

impl Sessions {
    /// `POST /auth/authorize`: a single-use code for a right password (and
    /// second-factor code, for a user who has one). A locked login gets the
    /// answer of a wrong password; failures count towards a lock.
    pub async fn authorize(
        &self,
        username: &str,
        password: &str,
        mfa_code: Option<&str>,
        address: Option<String>,
    ) -> Result<Zeroizing<String>, Error> {
        let user = self.store.user_by_email(username.trim()).await?;
        // Keyed by the user found, so that spellings the store takes for
        // one address share a bucket; an unknown name by itself.
        let key = match &user {
            Some(u) => format!("\0user {}", u.id),
            None => limiter_key(username),
        };
        let throttle = self
            .login_limit
            .as_ref()
            .zip(address.as_deref().and_then(|a| a.parse::<IpAddr>().ok()))
            .map(|(l, ip)| (l, ip, key));
        if let Some((l, ip, key)) = &throttle {
            l.take(*ip, key)?;
        }
        // A busy server refuses before the attempt is counted anywhere.
        let permit = match self.hasher.permit().await {
            Ok(p) => p,
            Err(e) => {
                if let Some((l, ip, key)) = &throttle {
                    l.refund(*ip, key);
                }
                return Err(e);
            }
        };
        let usable = user.as_ref().filter(|u| u.status == UserStatus::Active);
        let now = self.clock.now();
        let policy = self.lockout.policy();
        let counted = match usable {
            Some(u) => Some(self.lockout.count(u.id, now).await?),
            None => None,
        };
        // Only an attempt counted within the threshold, with no lock
        // holding, checks the real hash; the others check the dummy hash:
        // same work, same answer as a wrong password.
        let admitted =
            counted.is_some_and(|c| c.locked_until <= sec(now) && c.failures <= policy.threshold);
        let stored = usable
            .filter(|_| admitted)
            .and_then(|u| u.password_hash.clone());
        let ok = permit
            .verify(password, stored, self.dummy_hash.clone())
            .await?;
        let (Some(user), Some(seen), true) = (usable, counted, ok) else {
            self.metrics.logins_failed.fetch_add(1, Ordering::Relaxed);
            let reason = match (usable, counted) {
                (Some(u), Some(seen)) if admitted => {
                    self.lockout
                        .failed_attempt(u, seen, address.clone())
                        .await?;
                    "password"
                }
                (Some(u), Some(seen)) => {
                    // Past the threshold with no lock (the attempt that
                    // reached it was cancelled): lock now.
                    self.lockout.lock_if_over(u, seen, address.clone()).await?;
                    "locked"
                }
                (Some(_), None) => "locked",
                (None, _) => "unknown_or_inactive",
            };
            self.audit
                .record(AuditEvent {
                    account_id: user.as_ref().map(|u| u.account_id),
                    actor_id: user.as_ref().map(|u| u.id),
                    credential: "password".into(),
                    event: "login_failed",
                    target: None,
                    address,
                    detail: Some(format!("reason={reason}")),
                })
                .await;
            return Err(Error::InvalidCredentials);
        };
        if let Some((l, ip, key)) = &throttle {
            l.refund(*ip, key);
        }
        match self
            .factors
            .login_second_factor(user, mfa_code, address.clone())
            .await
        {
            Ok(()) => {}
            Err(Error::InvalidMfaCode) => {
                // The attempt was counted before the password was checked;
                // a wrong code leaves it counted.
                self.metrics.logins_failed.fetch_add(1, Ordering::Relaxed);
                self.lockout.failed_attempt(user, seen, address).await?;
                return Err(Error::InvalidMfaCode);
            }
            Err(e) => {
                self.lockout.uncount(user.id, now).await?;
                return Err(e);
            }
        }
        self.lockout.clear(user.id).await?;
        let code = crypto::new_token();
        self.store
            .insert_code(&crypto::token_hash(&code), user.id, now + CODE_TTL)
            .await?;
        Ok(code)
    }

    /// `POST /auth/token/reissue`: a fresh token for a valid one, which is
    /// revoked. The fresh token keeps the old one's absolute expiry (a
    /// chain of reissues ends when the first token would have); a user
    /// who is no longer active, or is locked out, gets `invalid_token`;
    /// of concurrent reissues of one token, one wins and the others get
    /// `invalid_token`.
    pub async fn reissue(&self, token: &str) -> Result<Zeroizing<String>, Error> {
        let fresh = crypto::new_token();
        let user_id = self
            .store
            .reissue_token(
                &crypto::token_hash(token),
                &crypto::token_hash(&fresh),
                self.clock.now(),
                TOKEN_IDLE_TTL,
            )
            .await?
            .ok_or(Error::InvalidToken)?;
        // The old token dropped from every node's cache (core/tokens.rs).
        self.verifier.invalidate_user(user_id);
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_keys_fold_case_and_stay_short() {
        assert_eq!(limiter_key("  Ann@Example.COM "), "ann@example.com");
        assert_eq!(limiter_key(&"é".repeat(300)).len(), MAX_KEY);
    }
}
