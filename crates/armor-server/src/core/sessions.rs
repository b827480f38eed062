//! Sessions: FH-AUTH tokens (checked, issued, revoked), password login
//! (`login.rs`), redeeming a sign-in code, and portal sessions.
//!
//! The portal's sign-in ends in a session, not an FH-AUTH token: a
//! credential of its own kind, in its own table, which the API's
//! `Authorization` never accepts and which cannot be reissued (the token
//! look-ups never see it), while an API token is not a portal session.
//! Sessions follow the tokens' idle and absolute expiry, and end on
//! sign-out, when the user is disabled or deleted, and on a new password.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::access::AccessCache;
use super::audit::Audit;
use super::factors::Factors;
use super::hashing::Hasher;
use super::lockout::Lockout;
use super::tokens::TokenTouches;
use super::verifier::KeyVerifier;
use super::{Metrics, Principal, Via, TOKEN_IDLE_TTL, TOKEN_MAX_TTL};
use crate::clock::Clock;
use crate::crypto;
use crate::error::Error;
use crate::store::{AuditEvent, Store, UserStatus};

/// Password login, tokens and portal sessions.
pub struct Sessions {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    /// Password hashes run here, off the async workers.
    pub(super) hasher: Hasher,
    pub(super) dummy_hash: Arc<str>,
    pub(super) lockout: Lockout,
    /// Failed logins per (client address, user name); `None`: unlimited.
    pub(super) login_limit: Option<crate::limit::AuthFailureLimiter>,
    pub(super) factors: Factors,
    pub(super) metrics: Arc<Metrics>,
    pub(super) audit: Audit,
    /// Tokens the store let through (`core/tokens.rs`).
    pub(super) cache: Arc<AccessCache>,
    /// Told when a token is revoked, to tell the other nodes.
    pub(super) verifier: Arc<KeyVerifier>,
    /// Tokens' last uses, written behind.
    pub(super) touches: TokenTouches,
}

impl Sessions {
    /// Takes a single-use sign-in code (refused for a user no longer
    /// active) and records the login; the caller issues the credential.
    pub(super) async fn redeem_code(
        &self,
        code: &str,
        address: Option<String>,
        now: u64,
    ) -> Result<i64, Error> {
        let user_id = self
            .store
            .take_code(&crypto::token_hash(code), now)
            .await?
            .ok_or(Error::InvalidCode)?;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(Error::InvalidCode)?;
        if user.status != UserStatus::Active {
            return Err(Error::InvalidCode);
        }
        self.metrics.logins_ok.fetch_add(1, Ordering::Relaxed);
        self.audit
            .record(AuditEvent {
                account_id: Some(user.account_id),
                actor_id: Some(user.id),
                credential: "password".into(),
                event: "login",
                address,
                ..Default::default()
            })
            .await;
        Ok(user_id)
    }

    /// The portal's sign-in: exchanges a code (from [`Sessions::authorize`]) for
    /// a new portal session.
    pub async fn open_session(
        &self,
        code: &str,
        address: Option<String>,
    ) -> Result<Zeroizing<String>, Error> {
        let now = self.clock.now();
        let user_id = self.redeem_code(code, address, now).await?;
        let session = crypto::new_token();
        self.store
            .insert_session(
                &crypto::token_hash(&session),
                user_id,
                now,
                now + TOKEN_MAX_TTL,
            )
            .await?;
        Ok(session)
    }

    /// Checks a portal session; slides its idle expiry. Returns the user
    /// and the session's hash. Anything else (an FH-AUTH token, say) is
    /// `InvalidToken`.
    pub async fn authenticate_session(&self, session: &str) -> Result<(i64, [u8; 32]), Error> {
        let hash = crypto::token_hash(session);
        let now = self.clock.now();
        let row = self
            .store
            .session(&hash)
            .await?
            .ok_or(Error::InvalidToken)?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        if now_i > row.expires_at || now_i > row.last_seen.saturating_add(TOKEN_IDLE_TTL as i64) {
            return Err(Error::InvalidToken);
        }
        if now_i - row.last_seen >= 30 {
            self.store.touch_session(&hash, now).await?;
        }
        Ok((row.user_id, hash))
    }

    /// Portal sign-out: ends the session.
    pub async fn close_session(&self, p: &Principal, hash: &[u8]) -> Result<(), Error> {
        if self.store.end_session(hash).await? {
            self.audit_logout(p).await;
        }
        Ok(())
    }

    /// A token or portal session ended by its holder.
    async fn audit_logout(&self, p: &Principal) {
        self.audit
            .record(AuditEvent {
                account_id: Some(p.account_id),
                actor_id: Some(p.user_id),
                credential: p.credential(),
                event: "logout",
                ..Default::default()
            })
            .await;
    }

    /// `POST /auth/token`: exchanges a code for an FH-AUTH token.
    pub async fn exchange_code(
        &self,
        code: &str,
        address: Option<String>,
    ) -> Result<Zeroizing<String>, Error> {
        let now = self.clock.now();
        let user_id = self.redeem_code(code, address, now).await?;
        self.issue_token(user_id, now).await
    }

    async fn issue_token(&self, user_id: i64, now: u64) -> Result<Zeroizing<String>, Error> {
        let token = crypto::new_token();
        self.store
            .insert_token(
                &crypto::token_hash(&token),
                user_id,
                now,
                now + TOKEN_MAX_TTL,
            )
            .await?;
        Ok(token)
    }

    pub async fn logout(&self, p: &Principal) -> Result<(), Error> {
        if let Via::Password { token_hash } = &p.via {
            self.store.revoke_token(token_hash).await?;
            // Dropped from every node's cache (core/tokens.rs).
            self.verifier.invalidate_user(p.user_id);
            self.audit_logout(p).await;
        }
        Ok(())
    }
}
