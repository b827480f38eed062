//! A user's security settings, as the user and their administrators see
//! them: challenge phrase, security information, and the summary (with
//! the reset of second factors).

use super::codes::{sec, valid_reference_key, valid_text};
use super::users::UserAdmin;
use super::{perm, Principal};
use crate::error::Error;
use crate::store::SecurityInfoRow;

/// What an administrator sees of a user's security settings (no secrets).
#[derive(Debug, Clone)]
pub struct SecuritySummary {
    pub user_id: i64,
    pub challenge_phrase_set: bool,
    pub totp_enabled: bool,
    pub phone_verified: bool,
    pub phone: Option<String>,
    pub reference_keys: Vec<String>,
}

impl UserAdmin {
    /// Whose security settings a call is about: oneself, or (with Users
    /// Manage) a user one administers.
    async fn security_subject(&self, p: &Principal, user_id: Option<i64>) -> Result<i64, Error> {
        match user_id {
            None => Ok(p.user_id),
            Some(id) if id == p.user_id => Ok(id),
            Some(id) => Ok(self.managed_user(p, id, perm::USERS_MANAGE).await?.id),
        }
    }

    pub async fn set_challenge_phrase(
        &self,
        p: &Principal,
        user_id: Option<i64>,
        phrase: &str,
        address: Option<String>,
    ) -> Result<(), Error> {
        let target = self.security_subject(p, user_id).await?;
        let phrase = valid_text("challengePhrase", phrase, 200)?;
        if phrase.is_empty() {
            return Err(Error::BadRequest("challengePhrase is required".into()));
        }
        self.store.set_challenge_phrase(target, &phrase).await?;
        self.audit
            .by(p, "challenge_phrase_set", target, address, None)
            .await;
        Ok(())
    }

    pub async fn challenge_phrase(
        &self,
        p: &Principal,
        user_id: i64,
    ) -> Result<Option<String>, Error> {
        let target = self.security_subject(p, Some(user_id)).await?;
        Ok(self
            .store
            .security(target)
            .await?
            .and_then(|s| s.challenge_phrase))
    }

    /// The caller's own security information under `reference_key`.
    pub async fn security_info(
        &self,
        p: &Principal,
        reference_key: &str,
    ) -> Result<SecurityInfoRow, Error> {
        let key = valid_reference_key(reference_key)?;
        self.store
            .security_info(p.user_id, Some(&key))
            .await?
            .into_iter()
            .next()
            .ok_or(Error::NotFound("security information"))
    }

    /// Writes the caller's security information: a new entry, or
    /// (`existing`) one that is there.
    pub async fn put_security_info(
        &self,
        p: &Principal,
        reference_key: &str,
        value: &str,
        existing: bool,
        address: Option<String>,
    ) -> Result<SecurityInfoRow, Error> {
        let key = valid_reference_key(reference_key)?;
        if value.is_empty() || value.len() > 4096 {
            return Err(Error::BadRequest("value must be 1 to 4096 bytes".into()));
        }
        let now = self.clock.now();
        if !self
            .store
            .put_security_info(p.user_id, &key, value, existing, now)
            .await?
        {
            return Err(if existing {
                Error::NotFound("security information")
            } else {
                Error::Conflict(format!(
                    "security information '{key}' exists: update it with POST /usersecurity/securityinformation/existing/{key}"
                ))
            });
        }
        self.audit
            .by(
                p,
                "security_info_set",
                p.user_id,
                address,
                Some(format!("key={key}")),
            )
            .await;
        Ok(SecurityInfoRow {
            reference_key: key,
            value: value.to_owned(),
            updated_at: sec(now),
        })
    }

    /// A user's security settings for an administrator (Users Manage in
    /// `account_id`); `clear_second_factors` removes TOTP and phone.
    pub async fn user_security(
        &self,
        p: &Principal,
        account_id: i64,
        user_id: i64,
        clear_second_factors: bool,
        address: Option<String>,
    ) -> Result<SecuritySummary, Error> {
        if account_id != p.account_id {
            return Err(Error::NotFound("user"));
        }
        let target = if user_id == p.user_id && !clear_second_factors {
            user_id
        } else {
            self.managed_user(p, user_id, perm::USERS_MANAGE).await?.id
        };
        if clear_second_factors {
            self.store.clear_second_factors(target).await?;
            self.store.delete_user_codes(target, Some("phone")).await?;
            self.store.delete_user_codes(target, Some("login")).await?;
            self.audit.by(p, "mfa_reset", target, address, None).await;
        }
        let s = self.store.security(target).await?.unwrap_or_default();
        let keys = self.store.security_info(target, None).await?;
        Ok(SecuritySummary {
            user_id: target,
            challenge_phrase_set: s.challenge_phrase.is_some(),
            totp_enabled: s.totp_enabled != 0,
            phone_verified: s.phone_verified != 0,
            phone: s.phone.filter(|_| s.phone_verified != 0),
            reference_keys: keys.into_iter().map(|r| r.reference_key).collect(),
        })
    }
}
