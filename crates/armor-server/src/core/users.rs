//! User administration: invitations, activation and reset codes, edits,
//! roles, status, soft delete, and lockout as administrators see it. A
//! user's own security settings are in `security.rs` (same service).

use std::sync::Arc;

use super::audit::Audit;
use super::codes::{
    code_hash, code_key, human_code, legacy_code_hash, valid_email, valid_password, valid_text,
    IssuedCode, ACTIVATION_TTL, RESET_TTL,
};
use super::hashing::Hasher;
use super::lockout::{LockState, Lockout};
use super::outbox::Outbox;
use super::principals::Access;
use super::throttle::SendLimits;
use super::verifier::KeyVerifier;
use super::{perm, Principal};
use crate::clock::{rfc3339, Clock};
use crate::error::Error;
use crate::store::{AuditEvent, NewUser, Role, Store, UserRow, UserStatus};

/// Fields of `POST /users/` and `PUT /users/{id}`; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<String>,
}

/// Administers users and their security settings.
pub struct UserAdmin {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) access: Access,
    pub(super) verifier: Arc<KeyVerifier>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) sends: SendLimits,
    pub(super) hasher: Hasher,
    pub(super) lockout: Lockout,
    pub(super) audit: Audit,
    /// For the key codes are stored under.
    pub(super) master: Arc<super::master::Master>,
}

impl UserAdmin {
    // ---- helpers ----

    /// A user the caller administers: a member of the caller's account whose
    /// home account it is, with `permission`. Others are not found.
    pub(super) async fn managed_user(
        &self,
        p: &Principal,
        user_id: i64,
        permission: &str,
    ) -> Result<UserRow, Error> {
        let (user, _) = self.access.user_in_account(p, user_id).await?;
        if user.account_id != p.account_id {
            return Err(Error::NotFound("user"));
        }
        p.require(permission)?;
        Ok(user)
    }

    /// The user with `email` in `account_id`, for a caller with
    /// `permission` there.
    async fn user_by_account_email(
        &self,
        p: &Principal,
        account_id: i64,
        email: &str,
        permission: &str,
    ) -> Result<UserRow, Error> {
        let perms = if account_id == p.account_id {
            p.permissions.clone()
        } else {
            self.store
                .permissions(p.user_id, account_id)
                .await?
                .ok_or(Error::NotFound("user"))?
                .into()
        };
        if !perms.iter().any(|x| x == permission) {
            return Err(Error::PermissionDenied(permission.to_owned()));
        }
        self.store
            .user_by_email(email.trim())
            .await?
            .filter(|u| u.account_id == account_id && u.status != UserStatus::Deleted)
            .ok_or(Error::NotFound("user"))
    }

    /// A role the caller may hand out: it grants nothing the caller lacks.
    async fn grantable_role(&self, p: &Principal, role: &str) -> Result<Role, Error> {
        let role = Role::from(role.trim());
        let perms = self
            .store
            .role_permissions(&role)
            .await?
            .ok_or_else(|| Error::BadRequest(format!("unknown role {role}")))?;
        if let Some(missing) = perms.iter().find(|x| !p.has(x)) {
            return Err(Error::PermissionDenied(missing.clone()));
        }
        Ok(role)
    }

    async fn issue_activation(&self, user: &UserRow) -> Result<IssuedCode, Error> {
        let code = human_code();
        let expires_at = self.clock.now() + ACTIVATION_TTL;
        self.store
            .put_user_code(
                user.id,
                "activation",
                &code_hash(&code_key(&self.master), &code),
                expires_at,
                None,
            )
            .await?;
        Ok(IssuedCode { code, expires_at })
    }

    async fn send_invitation(&self, user: &UserRow) -> Result<(), Error> {
        let issued = self.issue_activation(user).await?;
        let body = format!(
            "You have been invited to armor as {}.\n\nYour activation code is {}; it works once and expires at {}.\nChoose your password with POST /users/setpassword {{\"code\": \"<code>\", \"password\": \"<password>\"}}.\n",
            user.email,
            issued.code.as_str(),
            rfc3339(issued.expires_at)
        );
        self.outbox
            .send_message("email", &user.email, "Your armor invitation", &body)
            .await
    }

    // ---- users ----

    /// `POST /users/`: creates a user in the caller's account, invited, and
    /// sends the invitation.
    pub async fn create_user(
        &self,
        p: &Principal,
        edit: &UserEdit,
        address: Option<String>,
    ) -> Result<(UserRow, Role), Error> {
        p.require(perm::USERS_MANAGE)?;
        let email = valid_email(edit.email.as_deref().unwrap_or(""))?;
        let first = valid_text("firstName", edit.first_name.as_deref().unwrap_or(""), 100)?;
        let last = valid_text("lastName", edit.last_name.as_deref().unwrap_or(""), 100)?;
        let role = self
            .grantable_role(p, edit.role.as_deref().unwrap_or(Role::User.as_str()))
            .await?;
        let id = self
            .store
            .create_user(
                &NewUser {
                    account_id: p.account_id,
                    email: &email,
                    first: &first,
                    last: &last,
                    password_hash: None,
                    status: UserStatus::Invited,
                    role: &role,
                },
                self.clock.now(),
            )
            .await?;
        let user = self
            .store
            .user_by_id(id)
            .await?
            .ok_or(Error::Internal("created user not found".into()))?;
        self.send_invitation(&user).await?;
        self.audit
            .by(p, "user_created", id, address, Some(format!("role={role}")))
            .await;
        Ok((user, role))
    }

    /// `DELETE /users/softDelete` by email: the user with that email, if
    /// the caller administers them.
    pub async fn soft_delete_by_email(
        &self,
        p: &Principal,
        email: &str,
        address: Option<String>,
    ) -> Result<(), Error> {
        let id = self
            .store
            .user_by_email(email.trim())
            .await?
            .ok_or(Error::NotFound("user"))?
            .id;
        self.soft_delete(p, id, address).await
    }

    /// `POST /users/{id}/invite`: a fresh activation code, sent again.
    pub async fn invite(
        &self,
        p: &Principal,
        user_id: i64,
        address: Option<String>,
    ) -> Result<(), Error> {
        let user = self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        if user.status != UserStatus::Invited {
            return Err(Error::Conflict(format!(
                "the user is {}, not invited",
                user.status
            )));
        }
        self.send_invitation(&user).await?;
        self.audit
            .by(p, "user_invited", user_id, address, None)
            .await;
        Ok(())
    }

    /// `GET /users/{id}/ActivationCode`: a fresh activation code for an
    /// administrator to read out (earlier codes stop working: only hashes
    /// are kept, so a pending code cannot be shown again).
    pub async fn activation_code(
        &self,
        p: &Principal,
        user_id: i64,
        address: Option<String>,
    ) -> Result<IssuedCode, Error> {
        let user = self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        if user.status != UserStatus::Invited {
            return Err(Error::Conflict(format!(
                "the user is {}, not invited",
                user.status
            )));
        }
        let issued = self.issue_activation(&user).await?;
        self.audit
            .by(p, "activation_code_issued", user_id, address, None)
            .await;
        Ok(issued)
    }

    /// `POST /users/setpassword`: an activation or reset code and a new
    /// password. The code works once.
    pub async fn set_password_with_code(
        &self,
        code: &str,
        password: &str,
        address: Option<String>,
    ) -> Result<(), Error> {
        valid_password(password)?;
        let now = self.clock.now();
        // Looked up, not consumed, until the new password is hashed: a
        // busy or cancelled hash leaves the code usable.
        let mut found = None;
        for hashed_code in [
            code_hash(&code_key(&self.master), code),
            legacy_code_hash(code),
        ] {
            if let Some(f) = self.store.find_password_code(&hashed_code, now).await? {
                found = Some((hashed_code, f));
                break;
            }
        }
        let (hashed_code, (user_id, purpose)) = found.ok_or(Error::InvalidCode)?;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(Error::InvalidCode)?;
        let expected = if purpose == "activation" {
            UserStatus::Invited
        } else {
            UserStatus::Active
        };
        if user.status != expected {
            return Err(Error::InvalidCode);
        }
        let hash = self.hasher.hash(password).await?;
        if self.store.take_password_code(&hashed_code, now).await?
            != Some((user_id, purpose.clone()))
        {
            return Err(Error::InvalidCode);
        }
        // Only from the status checked above: a user disabled or deleted
        // meanwhile stays so.
        if !self
            .store
            .set_password(user_id, &hash, expected, UserStatus::Active)
            .await?
        {
            return Err(Error::InvalidCode);
        }
        self.store.delete_user_codes(user_id, None).await?;
        self.store.revoke_user_tokens(user_id).await?;
        // Their tokens dropped from every node's cache (core/tokens.rs).
        self.verifier.invalidate_user(user_id);
        self.lockout.clear(user_id).await?;
        self.audit
            .record(AuditEvent {
                account_id: Some(user.account_id),
                actor_id: Some(user_id),
                credential: "code".into(),
                event: "password_changed",
                target: Some(user_id.to_string()),
                address,
                detail: Some(format!("via={purpose}")),
            })
            .await;
        Ok(())
    }

    /// `POST /users/resetpassword`: sends a reset code to an active user's
    /// address. The caller learns nothing either way, also past the limits
    /// on requests per client address and mails per address (then nothing
    /// is sent).
    pub async fn reset_password(&self, email: &str, address: Option<String>) -> Result<(), Error> {
        // Counted for any address, the same work whether a user has it
        // or not; under the user found, so that spellings the store takes
        // for one address share its limit.
        let user = self.store.user_by_email(email.trim()).await?;
        if !self
            .sends
            .reset_allowed(email, user.as_ref().map(|u| u.id), address.as_deref())
            .await?
        {
            return Ok(());
        }
        let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
            return Ok(());
        };
        let code = human_code();
        let expires_at = self.clock.now() + RESET_TTL;
        self.store
            .put_user_code(
                user.id,
                "reset",
                &code_hash(&code_key(&self.master), &code),
                expires_at,
                None,
            )
            .await?;
        let body = format!(
            "A password reset was asked for {}.\n\nYour reset code is {}; it works once and expires at {}.\nIf you did not ask for it, ignore this message.\n",
            user.email,
            code.as_str(),
            rfc3339(expires_at)
        );
        self.outbox
            .send_message("email", &user.email, "Your armor password reset", &body)
            .await?;
        self.audit
            .record(AuditEvent {
                account_id: Some(user.account_id),
                actor_id: None,
                credential: "none".into(),
                event: "password_reset_requested",
                target: Some(user.id.to_string()),
                address,
                detail: None,
            })
            .await;
        Ok(())
    }

    /// `PUT /users/{id}`: names (oneself, or with Users Manage), email and
    /// role (with Users Manage; not one's own role).
    pub async fn update_user(
        &self,
        p: &Principal,
        user_id: i64,
        edit: &UserEdit,
        address: Option<String>,
    ) -> Result<(UserRow, Role), Error> {
        let (user, old_role) = self.access.user_in_account(p, user_id).await?;
        let names_only = edit.email.is_none() && edit.role.is_none();
        if !(names_only && user_id == p.user_id) {
            self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        }
        let email = match &edit.email {
            Some(e) => valid_email(e)?,
            None => user.email.clone(),
        };
        let first = match &edit.first_name {
            Some(v) => valid_text("firstName", v, 100)?,
            None => user.first_name.clone(),
        };
        let last = match &edit.last_name {
            Some(v) => valid_text("lastName", v, 100)?,
            None => user.last_name.clone(),
        };
        let new_role = match &edit.role {
            Some(r) if old_role != r.trim() => {
                if user_id == p.user_id {
                    return Err(Error::Conflict("you cannot change your own role".into()));
                }
                Some(self.grantable_role(p, r).await?)
            }
            _ => None,
        };
        let mut changed = Vec::new();
        if !email.eq_ignore_ascii_case(&user.email) {
            changed.push("email");
        }
        if first != user.first_name {
            changed.push("firstName");
        }
        if last != user.last_name {
            changed.push("lastName");
        }
        if !changed.is_empty() {
            self.store
                .update_user(user_id, &email, &first, &last)
                .await?;
            self.verifier.invalidate_user(user_id);
            self.audit
                .by(
                    p,
                    "user_updated",
                    user_id,
                    address.clone(),
                    Some(format!("changed={}", changed.join(","))),
                )
                .await;
        }
        let role = match new_role {
            Some(role) => {
                self.store.set_role(user_id, p.account_id, &role).await?;
                self.verifier.invalidate_user(user_id);
                self.audit
                    .by(
                        p,
                        "role_changed",
                        user_id,
                        address,
                        Some(format!("from={old_role} to={role}")),
                    )
                    .await;
                role
            }
            None => old_role,
        };
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        Ok((user, role))
    }

    /// `POST /users/status`: enables or disables a user. A disabled user's
    /// tokens and keys are refused at once, and work again on enabling;
    /// their portal sessions end.
    pub async fn set_user_enabled(
        &self,
        p: &Principal,
        user_id: i64,
        enabled: bool,
        address: Option<String>,
    ) -> Result<UserRow, Error> {
        let mut user = self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        if user_id == p.user_id {
            return Err(Error::Conflict("you cannot change your own status".into()));
        }
        let target = if enabled {
            UserStatus::Active
        } else {
            UserStatus::Disabled
        };
        if user.status == target {
            return Ok(user);
        }
        if !matches!(user.status, UserStatus::Active | UserStatus::Disabled) {
            return Err(Error::Conflict(format!(
                "the user is {}; only active and disabled users change status",
                user.status
            )));
        }
        // From the status read above only: a concurrent change (a delete,
        // say) is not overwritten.
        if !self
            .store
            .set_user_status(user_id, user.status, target)
            .await?
        {
            return Err(Error::Conflict(
                "the user's status changed meanwhile; read it again".into(),
            ));
        }
        if enabled {
            self.verifier.load_keys(Some(user_id)).await?;
        } else {
            self.verifier.forget_user_keys(user_id).await;
            // Tokens are refused while disabled; portal sessions end.
            self.store.end_user_sessions(user_id).await?;
        }
        self.audit
            .by(
                p,
                "status_changed",
                user_id,
                address,
                Some(format!("from={} to={target}", user.status)),
            )
            .await;
        user.status = target;
        Ok(user)
    }

    /// `DELETE /users/softDelete`: the user can no longer sign in; keys
    /// deleted, tokens revoked, codes and second factors dropped. The row
    /// stays for the audit trail.
    pub async fn soft_delete(
        &self,
        p: &Principal,
        user_id: i64,
        address: Option<String>,
    ) -> Result<(), Error> {
        self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        if user_id == p.user_id {
            return Err(Error::Conflict("you cannot delete yourself".into()));
        }
        // Refused from here on: status first, then the cache.
        self.store.soft_delete_user(user_id).await?;
        self.verifier.forget_user_keys(user_id).await;
        let now = self.clock.now();
        let keys = self.store.delete_user_keys(user_id, now).await?;
        self.store.revoke_user_tokens(user_id).await?;
        self.verifier.invalidate_user(user_id);
        self.store.delete_user_codes(user_id, None).await?;
        self.store.clear_second_factors(user_id).await?;
        self.lockout.clear(user_id).await?;
        for key in &keys {
            self.audit
                .by(
                    p,
                    "key_deleted",
                    key,
                    address.clone(),
                    Some(format!("owner={user_id} reason=user_deleted")),
                )
                .await;
        }
        self.audit
            .by(
                p,
                "user_deleted",
                user_id,
                address,
                Some(format!("keys={}", keys.len())),
            )
            .await;
        Ok(())
    }

    /// The lock on a user, if one holds now.
    pub async fn locked_until(&self, user_id: i64) -> Result<Option<u64>, Error> {
        self.lockout.locked_until(user_id).await
    }

    /// `GET /users/LockedOut/{accountId}/{email}` (Users Read there).
    pub async fn lock_state(
        &self,
        p: &Principal,
        account_id: i64,
        email: &str,
    ) -> Result<LockState, Error> {
        let user = self
            .user_by_account_email(p, account_id, email, perm::USERS_READ)
            .await?;
        self.lockout.state(user.id).await
    }

    /// `POST /users/unlock/{accountId}/{email}` (Users Manage there).
    pub async fn unlock(
        &self,
        p: &Principal,
        account_id: i64,
        email: &str,
        address: Option<String>,
    ) -> Result<bool, Error> {
        let user = self
            .user_by_account_email(p, account_id, email, perm::USERS_MANAGE)
            .await?;
        let was = self.lockout.locked_until(user.id).await?.is_some();
        self.lockout.clear(user.id).await?;
        self.audit
            .record(AuditEvent {
                account_id: Some(account_id),
                actor_id: Some(p.user_id),
                credential: p.credential(),
                event: "unlock",
                target: Some(user.id.to_string()),
                address,
                detail: Some(format!("was_locked={was}")),
            })
            .await;
        Ok(was)
    }
}
