//! Who a caller is: the account context applied to a credential, the
//! permissions in it, the `GET /me` profile, and the reads every caller
//! may make of their own accounts and users (cached in `access.rs`).

use std::sync::Arc;

use super::access::{AccessCache, Profile};
use super::{perm, Principal, Via};
use crate::error::Error;
use crate::store::{AccountRow, Role, Store, UserRow, UserStatus};

/// The account context as sent: up to 18 digits, or refused.
pub fn parse_account_context(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What a portal page needs to know of its signed-in user.
pub struct SessionView {
    pub p: Principal,
    pub user: UserRow,
    /// `None`: no role in the account (a member of a parent account).
    pub role: Option<Role>,
    pub account: AccountRow,
    pub accounts: Vec<AccountRow>,
}

/// Resolves callers and answers what they may read about themselves.
#[derive(Clone)]
pub struct Access {
    store: Store,
    cache: Arc<AccessCache>,
}

impl Access {
    pub(super) fn new(store: Store, cache: Arc<AccessCache>) -> Self {
        Access { store, cache }
    }

    /// Whether the store answers.
    pub async fn store_ok(&self) -> bool {
        self.store.ping().await
    }

    /// Closes the store (at shutdown, after the last write).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Applies the account context and loads the permissions in it.
    pub async fn principal(
        &self,
        user_id: i64,
        default_account: i64,
        context: Option<&str>,
        via: Via,
    ) -> Result<Principal, Error> {
        let account = match context {
            None => Some(default_account),
            Some(text) => parse_account_context(text),
        };
        // Served from the cache only what a store read let through; any
        // refusal below is decided by the store.
        if let Some(account_id) = account {
            if let Some(permissions) = self.cache.get(user_id, account_id) {
                return Ok(Principal {
                    user_id,
                    account_id,
                    via,
                    permissions,
                });
            }
        }
        let generation = self.cache.generation();
        let user = self.store.user_by_id(user_id).await?;
        if user.as_ref().is_none_or(|u| u.status != UserStatus::Active) {
            return Err(match via {
                Via::Password { .. } => Error::InvalidToken,
                Via::ApiKey { .. } => armor_psk::Error::InvalidSignature.into(),
            });
        }
        let account_id = account.ok_or(Error::InvalidAccountContext)?;
        let permissions: Arc<[String]> = self
            .store
            .permissions(user_id, account_id)
            .await?
            .ok_or(Error::InvalidAccountContext)?
            .into();
        self.cache
            .insert(user_id, account_id, generation, permissions.clone());
        Ok(Principal {
            user_id,
            account_id,
            via,
            permissions,
        })
    }

    /// A portal session's user in `account` (or, when they do not belong
    /// to it, their home account), with what the pages show.
    pub async fn session_view(
        &self,
        user_id: i64,
        session_hash: [u8; 32],
        account: Option<&str>,
    ) -> Result<SessionView, Error> {
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(Error::InvalidToken)?;
        // Password-level access, as the sign-in proved the password.
        let via = Via::Password {
            token_hash: session_hash,
        };
        let p = match self
            .principal(user_id, user.account_id, account, via.clone())
            .await
        {
            Err(Error::InvalidAccountContext) if account.is_some() => {
                self.principal(user_id, user.account_id, None, via).await?
            }
            other => other?,
        };
        let accounts = self.store.accounts_of(user_id).await?;
        let account = match accounts.iter().find(|a| a.id == p.account_id) {
            Some(a) => a.clone(),
            None => self
                .store
                .account(p.account_id)
                .await?
                .ok_or(Error::InvalidAccountContext)?,
        };
        let role = self.store.role_in(user_id, p.account_id).await?;
        Ok(SessionView {
            p,
            user,
            role,
            account,
            accounts,
        })
    }

    /// What `GET /me` shows of an active user (cached like permissions).
    pub async fn profile(&self, user_id: i64) -> Result<Arc<Profile>, Error> {
        if let Some(p) = self.cache.profile(user_id) {
            return Ok(p);
        }
        let generation = self.cache.generation();
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or(Error::NotFound("user"))?;
        let accounts = self.store.accounts_of(user_id).await?;
        let mut permissions = Vec::with_capacity(accounts.len());
        for a in &accounts {
            let p = self.store.permissions(user_id, a.id).await?;
            permissions.push(p.unwrap_or_default().into());
        }
        let profile = Arc::new(Profile {
            user_id,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            accounts,
            permissions,
            rendered: std::sync::OnceLock::new(),
        });
        self.cache.insert_profile(generation, profile.clone());
        Ok(profile)
    }

    /// The caller's own user row.
    pub async fn caller(&self, p: &Principal) -> Result<UserRow, Error> {
        self.store
            .user_by_id(p.user_id)
            .await?
            .ok_or(Error::InvalidToken)
    }

    /// The accounts the caller belongs to.
    pub async fn accounts(&self, p: &Principal) -> Result<Vec<AccountRow>, Error> {
        self.store.accounts_of(p.user_id).await
    }

    /// The caller's role in the account they act in (empty: none).
    pub async fn role(&self, p: &Principal) -> Result<Option<Role>, Error> {
        self.store.role_in(p.user_id, p.account_id).await
    }

    /// A user visible in the caller's account: a member of it, not
    /// deleted; with their role there.
    pub async fn user_in_account(
        &self,
        p: &Principal,
        user_id: i64,
    ) -> Result<(UserRow, Role), Error> {
        let role = self
            .store
            .role_in(user_id, p.account_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.status != UserStatus::Deleted)
            .ok_or(Error::NotFound("user"))?;
        Ok((user, role))
    }

    /// `GET /users/{id}`: a user of the caller's account; another than
    /// oneself needs Users Read.
    pub async fn user(&self, p: &Principal, user_id: i64) -> Result<(UserRow, Role), Error> {
        let found = self.user_in_account(p, user_id).await?;
        if user_id != p.user_id {
            p.require(perm::USERS_READ)?;
        }
        Ok(found)
    }

    /// The members of the caller's account (deleted users left out), with
    /// their roles; needs Users Read.
    pub async fn users(&self, p: &Principal) -> Result<Vec<(UserRow, Role)>, Error> {
        p.require(perm::USERS_READ)?;
        self.members(p).await
    }

    /// The members of the caller's account (deleted users left out).
    pub(super) async fn members(&self, p: &Principal) -> Result<Vec<(UserRow, Role)>, Error> {
        let mut users = self.store.users_in_account(p.account_id).await?;
        users.retain(|(u, _)| u.status != UserStatus::Deleted);
        Ok(users)
    }

    /// The email of every member of the caller's account, deleted users
    /// included (the audit log names them).
    pub async fn member_emails(&self, p: &Principal) -> Result<Vec<(i64, String)>, Error> {
        Ok(self
            .store
            .users_in_account(p.account_id)
            .await?
            .into_iter()
            .map(|(u, _)| (u.id, u.email))
            .collect())
    }
}
