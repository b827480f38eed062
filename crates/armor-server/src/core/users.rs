//! User administration and account security: invitations, activation and
//! reset codes, edits, status, soft delete, login lockout, challenge
//! phrase, security information, second factors (TOTP and phone), and the
//! outbox that carries codes to users.

use rand::Rng as _;
use zeroize::Zeroizing;

use super::{perm, totp, Core, Principal};
use crate::clock::rfc3339;
use crate::crypto;
use crate::error::Error;
use crate::store::{AuditEvent, NewUser, SecurityInfoRow, SecurityRow, UserRow};

/// Lifetimes of user codes (seconds).
pub const ACTIVATION_TTL: u64 = 7 * 86_400;
pub const RESET_TTL: u64 = 3_600;
pub const PHONE_CODE_TTL: u64 = 600;
pub const LOGIN_CODE_TTL: u64 = 300;
/// Shortest password accepted by `setpassword`.
pub const MIN_PASSWORD: usize = 12;

/// When failed logins lock an account, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock.
    pub threshold: i64,
    pub window: u64,
    /// First lock; each further lock doubles it, up to `max_lock`.
    pub base_lock: u64,
    pub max_lock: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 5,
            window: 15 * 60,
            base_lock: 60,
            max_lock: 3_600,
        }
    }
}

impl LockoutPolicy {
    /// How long the `n`th lock (1-based) lasts.
    pub fn lock_for(&self, n: i64) -> u64 {
        let doublings = u32::try_from((n - 1).clamp(0, 30)).unwrap_or(30);
        self.base_lock
            .saturating_mul(1u64 << doublings)
            .min(self.max_lock)
    }
}

/// Whether a login is locked, as `GET /users/LockedOut` tells it.
#[derive(Debug, Clone)]
pub struct LockState {
    pub user_id: i64,
    pub locked_until: Option<u64>,
    pub failures: i64,
}

/// Fields of `POST /users/` and `PUT /users/{id}`; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<String>,
}

/// A freshly issued code, shown once.
pub struct IssuedCode {
    pub code: Zeroizing<String>,
    pub expires_at: u64,
}

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

/// A TOTP enrolment: the secret for the app, as base32 and as a URI.
pub struct TotpEnrolment {
    pub secret_base32: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
}

fn sec(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A code an administrator can read out: 20 characters of an alphabet
/// without look-alikes (100 bits), in groups of four.
fn human_code() -> Zeroizing<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let mut out = Zeroizing::new(String::with_capacity(24));
    for i in 0..20 {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[rng.gen_range(0..32)]));
    }
    out
}

/// Six random digits.
fn digit_code() -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{:06}",
        rand::rngs::OsRng.gen_range(0..1_000_000u32)
    ))
}

/// A code as typed, normalised: case, spaces and dashes ignored.
fn code_norm(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

/// The stored hash of a code: HMAC-SHA256 under `key` (derived from the
/// master key), so a copy of the database cannot try the 10^6 six-digit
/// codes against it.
fn code_hash(key: &[u8], code: &str) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac as _};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(code_norm(code).as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The unkeyed hash long codes were stored under before: a pending
/// activation or reset code issued before the upgrade still works.
fn legacy_code_hash(code: &str) -> Vec<u8> {
    crypto::token_hash(&code_norm(code))
}

impl Core {
    fn code_hash(&self, code: &str) -> Vec<u8> {
        code_hash(&self.master().derive_16("user code key v1"), code)
    }
}

fn valid_email(email: &str) -> Result<String, Error> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::BadRequest("email must be an email address".into()));
    }
    Ok(e.to_owned())
}

fn valid_text(field: &str, value: &str, max: usize) -> Result<String, Error> {
    let v = value.trim();
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "{field} must be at most {max} characters, without control characters"
        )));
    }
    Ok(v.to_owned())
}

fn valid_password(password: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=1024).contains(&n) {
        return Err(Error::BadRequest(format!(
            "password must be {MIN_PASSWORD} to 1024 characters"
        )));
    }
    Ok(())
}

fn valid_phone(phone: &str) -> Result<String, Error> {
    let p: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = p.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(
            "phoneNumber must be in international form, e.g. +15551234567".into(),
        ));
    }
    Ok(p)
}

fn valid_reference_key(key: &str) -> Result<String, Error> {
    let k = key.trim().to_ascii_lowercase();
    if k.is_empty()
        || k.len() > 100
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(Error::BadRequest(
            "the reference key must be 1 to 100 letters, digits, '-', '.' or '_'".into(),
        ));
    }
    Ok(k)
}

impl Core {
    // ---- helpers ----

    /// A user the caller administers: a member of the caller's account whose
    /// home account it is, with `permission`. Others are not found.
    async fn managed_user(
        &self,
        p: &Principal,
        user_id: i64,
        permission: &str,
    ) -> Result<UserRow, Error> {
        let (user, _) = self.user_in_account(p, user_id).await?;
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
            .filter(|u| u.account_id == account_id && u.status != "deleted")
            .ok_or(Error::NotFound("user"))
    }

    /// A role the caller may hand out: it grants nothing the caller lacks.
    async fn grantable_role(&self, p: &Principal, role: &str) -> Result<String, Error> {
        let role = role.trim();
        let perms = self
            .store
            .role_permissions(role)
            .await?
            .ok_or_else(|| Error::BadRequest(format!("unknown role {role}")))?;
        if let Some(missing) = perms.iter().find(|x| !p.has(x)) {
            return Err(Error::PermissionDenied(missing.clone()));
        }
        Ok(role.to_owned())
    }

    async fn audit_by(
        &self,
        p: &Principal,
        event: &'static str,
        target: i64,
        address: Option<String>,
        detail: Option<String>,
    ) {
        self.audit(AuditEvent {
            account_id: Some(p.account_id),
            actor_id: Some(p.user_id),
            credential: p.credential(),
            event,
            target: Some(target.to_string()),
            address,
            detail,
        })
        .await;
    }

    async fn issue_activation(&self, user: &UserRow) -> Result<IssuedCode, Error> {
        let code = human_code();
        let expires_at = self.now() + ACTIVATION_TTL;
        self.store
            .put_user_code(
                user.id,
                "activation",
                &self.code_hash(&code),
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
        self.send_message("email", &user.email, "Your armor invitation", &body)
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
    ) -> Result<(UserRow, String), Error> {
        p.require(perm::USERS_MANAGE)?;
        let email = valid_email(edit.email.as_deref().unwrap_or(""))?;
        let first = valid_text("firstName", edit.first_name.as_deref().unwrap_or(""), 100)?;
        let last = valid_text("lastName", edit.last_name.as_deref().unwrap_or(""), 100)?;
        let role = self
            .grantable_role(p, edit.role.as_deref().unwrap_or("User"))
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
                    status: "invited",
                    role: &role,
                },
                self.now(),
            )
            .await?;
        let user = self
            .store
            .user_by_id(id)
            .await?
            .ok_or(Error::Internal("created user not found".into()))?;
        self.send_invitation(&user).await?;
        self.audit_by(p, "user_created", id, address, Some(format!("role={role}")))
            .await;
        Ok((user, role))
    }

    /// `POST /users/{id}/invite`: a fresh activation code, sent again.
    pub async fn invite(
        &self,
        p: &Principal,
        user_id: i64,
        address: Option<String>,
    ) -> Result<(), Error> {
        let user = self.managed_user(p, user_id, perm::USERS_MANAGE).await?;
        if user.status != "invited" {
            return Err(Error::Conflict(format!(
                "the user is {}, not invited",
                user.status
            )));
        }
        self.send_invitation(&user).await?;
        self.audit_by(p, "user_invited", user_id, address, None)
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
        if user.status != "invited" {
            return Err(Error::Conflict(format!(
                "the user is {}, not invited",
                user.status
            )));
        }
        let issued = self.issue_activation(&user).await?;
        self.audit_by(p, "activation_code_issued", user_id, address, None)
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
        let now = self.now();
        // Looked up, not consumed, until the new password is hashed: a
        // busy or cancelled hash leaves the code usable.
        let mut found = None;
        for hashed_code in [self.code_hash(code), legacy_code_hash(code)] {
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
            "invited"
        } else {
            "active"
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
            .set_password(user_id, &hash, expected, "active")
            .await?
        {
            return Err(Error::InvalidCode);
        }
        self.store.delete_user_codes(user_id, None).await?;
        self.store.revoke_user_tokens(user_id).await?;
        self.store.clear_lockout(user_id).await?;
        self.audit(AuditEvent {
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
            .reset_allowed(email, user.as_ref().map(|u| u.id), address.as_deref())
            .await?
        {
            return Ok(());
        }
        let Some(user) = user.filter(|u| u.status == "active") else {
            return Ok(());
        };
        let code = human_code();
        let expires_at = self.now() + RESET_TTL;
        self.store
            .put_user_code(user.id, "reset", &self.code_hash(&code), expires_at, None)
            .await?;
        let body = format!(
            "A password reset was asked for {}.\n\nYour reset code is {}; it works once and expires at {}.\nIf you did not ask for it, ignore this message.\n",
            user.email,
            code.as_str(),
            rfc3339(expires_at)
        );
        self.send_message("email", &user.email, "Your armor password reset", &body)
            .await?;
        self.audit(AuditEvent {
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
    ) -> Result<(UserRow, String), Error> {
        let (user, old_role) = self.user_in_account(p, user_id).await?;
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
            Some(r) if r.trim() != old_role => {
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
            self.invalidate_user(user_id);
            self.audit_by(
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
                self.invalidate_user(user_id);
                self.audit_by(
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
        let target = if enabled { "active" } else { "disabled" };
        if user.status == target {
            return Ok(user);
        }
        if !matches!(user.status.as_str(), "active" | "disabled") {
            return Err(Error::Conflict(format!(
                "the user is {}; only active and disabled users change status",
                user.status
            )));
        }
        // From the status read above only: a concurrent change (a delete,
        // say) is not overwritten.
        if !self
            .store
            .set_user_status(user_id, &user.status, target)
            .await?
        {
            return Err(Error::Conflict(
                "the user's status changed meanwhile; read it again".into(),
            ));
        }
        if enabled {
            self.load_keys(Some(user_id)).await?;
        } else {
            self.forget_user_keys(user_id).await;
            // Tokens are refused while disabled; portal sessions end.
            self.store.end_user_sessions(user_id).await?;
        }
        self.audit_by(
            p,
            "status_changed",
            user_id,
            address,
            Some(format!("from={} to={target}", user.status)),
        )
        .await;
        user.status = target.to_owned();
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
        self.forget_user_keys(user_id).await;
        let now = self.now();
        let keys = self.store.delete_user_keys(user_id, now).await?;
        self.store.revoke_user_tokens(user_id).await?;
        self.store.delete_user_codes(user_id, None).await?;
        self.store.clear_second_factors(user_id).await?;
        self.store.clear_lockout(user_id).await?;
        for key in &keys {
            self.audit(AuditEvent {
                account_id: Some(p.account_id),
                actor_id: Some(p.user_id),
                credential: p.credential(),
                event: "key_deleted",
                target: Some(key.clone()),
                address: address.clone(),
                detail: Some(format!("owner={user_id} reason=user_deleted")),
            })
            .await;
        }
        self.audit_by(
            p,
            "user_deleted",
            user_id,
            address,
            Some(format!("keys={}", keys.len())),
        )
        .await;
        Ok(())
    }

    // ---- lockout ----

    /// The lock on a user, if one holds now.
    pub(super) async fn locked_until(&self, user_id: i64) -> Result<Option<u64>, Error> {
        let now = sec(self.now());
        Ok(self
            .store
            .lockout(user_id)
            .await?
            .filter(|l| l.locked_until > now)
            .map(|l| l.locked_until.max(0) as u64))
    }

    /// The audit row of a lock just set.
    pub(super) async fn audit_lockout(
        &self,
        user: &UserRow,
        row: &crate::store::LockoutRow,
        now: i64,
        address: Option<String>,
    ) {
        self.audit(AuditEvent {
            account_id: Some(user.account_id),
            actor_id: Some(user.id),
            credential: "password".into(),
            event: "lockout",
            target: Some(user.id.to_string()),
            address,
            detail: Some(format!(
                "until={} lock={} seconds={}",
                rfc3339(row.locked_until.max(0) as u64),
                row.lock_count,
                row.locked_until - now
            )),
        })
        .await;
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
        let row = self.store.lockout(user.id).await?.unwrap_or_default();
        let now = sec(self.now());
        let in_window = now.saturating_sub(row.window_start) <= sec(self.lockout.window);
        Ok(LockState {
            user_id: user.id,
            locked_until: (row.locked_until > now).then_some(row.locked_until.max(0) as u64),
            failures: if in_window { row.failures } else { 0 },
        })
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
        let was = self.locked_until(user.id).await?.is_some();
        self.store.clear_lockout(user.id).await?;
        self.audit(AuditEvent {
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

    // ---- challenge phrase and security information ----

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
        self.audit_by(p, "challenge_phrase_set", target, address, None)
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
        let now = self.now();
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
        self.audit_by(
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
            self.audit_by(p, "mfa_reset", target, address, None).await;
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

    // ---- second factors ----

    pub(super) fn totp_ad(user_id: i64) -> String {
        format!("totp:{user_id}")
    }

    fn totp_secret(&self, s: &SecurityRow) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let Some(sealed) = s.totp_sealed() else {
            return Ok(None);
        };
        let mut master = self.master();
        if !master.has_version(sealed.version) {
            master = self.reload_master()?;
        }
        master.open(&Self::totp_ad(s.user_id), &sealed).map(Some)
    }

    /// Starts TOTP enrolment for the caller: a new secret, sealed, pending
    /// until a code from it is validated.
    pub async fn totp_enrol(
        &self,
        p: &Principal,
        account_label: &str,
    ) -> Result<TotpEnrolment, Error> {
        let s = self.store.security(p.user_id).await?.unwrap_or_default();
        if s.totp_enabled != 0 {
            return Err(Error::Conflict(
                "an authenticator app is enrolled; an administrator can reset it".into(),
            ));
        }
        let mut secret = Zeroizing::new([0u8; 20]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret[..]);
        let sealed = self.master().seal(&Self::totp_ad(p.user_id), &secret[..])?;
        self.store.set_pending_totp(p.user_id, &sealed).await?;
        Ok(TotpEnrolment {
            secret_base32: Zeroizing::new(totp::base32(&secret[..])),
            otpauth_uri: Zeroizing::new(totp::otpauth_uri("armor", account_label, &secret[..])),
        })
    }

    /// Checks a TOTP code of `user` at the clock's time; a code works once.
    async fn totp_accepts(&self, s: &SecurityRow, code: &str) -> Result<bool, Error> {
        let Some(secret) = self.totp_secret(s)? else {
            return Ok(false);
        };
        match totp::verify(&secret, code, self.now()) {
            Some(step) if sec(step) > s.totp_last_step => {
                self.store.use_totp_step(s.user_id, step).await
            }
            _ => Ok(false),
        }
    }

    async fn caller_user(&self, p: &Principal) -> Result<UserRow, Error> {
        self.store
            .user_by_id(p.user_id)
            .await?
            .ok_or(Error::InvalidToken)
    }

    /// `POST /usersecurity/validatephoneapppin` with a pin: checks it; the
    /// first good code after enrolment turns TOTP on.
    pub async fn totp_validate(
        &self,
        p: &Principal,
        pin: &str,
        address: Option<String>,
    ) -> Result<bool, Error> {
        let user = self.caller_user(p).await?;
        let s = self.store.security(p.user_id).await?.unwrap_or_default();
        if s.totp_sealed().is_none() {
            return Err(Error::Conflict(
                "no authenticator app is enrolled: POST without a pin to enrol".into(),
            ));
        }
        let seen = self.admit_code_check(&user).await?;
        let ok = self.totp_accepts(&s, pin).await?;
        self.settle_code_check(&user, seen, ok, address.clone())
            .await?;
        let newly = s.totp_enabled == 0;
        if newly {
            self.audit_by(
                p,
                "mfa_enrolled",
                p.user_id,
                address,
                Some("factor=totp".into()),
            )
            .await;
        }
        Ok(newly)
    }

    /// `POST /usersecurity/validatemfaphone` without a code: sends one to
    /// the number through the outbox. At most
    /// [`super::throttle::PHONE_PER_NUMBER`] codes to a number and
    /// [`super::throttle::PHONE_PER_USER`] for a user per window; past
    /// them, 429 `rate_limited` (the caller is signed in: nothing to hide).
    pub async fn phone_start(&self, p: &Principal, phone: &str) -> Result<u64, Error> {
        let phone = valid_phone(phone)?;
        self.phone_code_allowed(p.user_id, &phone).await?;
        let code = digit_code();
        let expires_at = self.now() + PHONE_CODE_TTL;
        self.store
            .put_user_code(
                p.user_id,
                "phone",
                &self.code_hash(&code),
                expires_at,
                Some(&phone),
            )
            .await?;
        self.send_message(
            "sms",
            &phone,
            "armor phone verification",
            &format!("Your armor verification code is {}", code.as_str()),
        )
        .await?;
        Ok(expires_at)
    }

    /// `POST /usersecurity/validatemfaphone` with a code: verifies the
    /// number, which becomes a second factor.
    pub async fn phone_verify(
        &self,
        p: &Principal,
        phone: &str,
        code: &str,
        address: Option<String>,
    ) -> Result<(), Error> {
        let phone = valid_phone(phone)?;
        let user = self.caller_user(p).await?;
        let seen = self.admit_code_check(&user).await?;
        let detail = self
            .store
            .check_short_code(p.user_id, "phone", &self.code_hash(code), self.now())
            .await?;
        let ok = detail.as_deref() == Some(phone.as_str());
        self.settle_code_check(&user, seen, ok, address.clone())
            .await?;
        self.store.set_phone_verified(p.user_id, &phone).await?;
        self.audit_by(
            p,
            "mfa_enrolled",
            p.user_id,
            address,
            Some("factor=phone".into()),
        )
        .await;
        Ok(())
    }

    /// The second-factor step of a login whose password was right.
    pub(super) async fn login_second_factor(
        &self,
        user: &UserRow,
        code: Option<&str>,
        address: Option<String>,
    ) -> Result<(), Error> {
        let Some(s) = self
            .store
            .security(user.id)
            .await?
            .filter(SecurityRow::has_second_factor)
        else {
            return Ok(());
        };
        let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
            if s.totp_enabled == 0 {
                if let Some(phone) = &s.phone {
                    // Sign-in codes count against the number's limit too.
                    let limit = super::throttle::PHONE_PER_NUMBER;
                    if let Err(retry_after) = self.count_send("phone-number", phone, limit).await? {
                        return Err(Error::RateLimited { retry_after });
                    }
                    let code = digit_code();
                    self.store
                        .put_user_code(
                            user.id,
                            "login",
                            &self.code_hash(&code),
                            self.now() + LOGIN_CODE_TTL,
                            None,
                        )
                        .await?;
                    self.send_message(
                        "sms",
                        phone,
                        "armor sign-in code",
                        &format!("Your armor sign-in code is {}", code.as_str()),
                    )
                    .await?;
                }
            }
            return Err(Error::MfaRequired);
        };
        let mut ok = s.totp_enabled != 0 && self.totp_accepts(&s, code).await?;
        if !ok && s.phone_verified != 0 {
            ok = self
                .store
                .check_short_code(user.id, "login", &self.code_hash(code), self.now())
                .await?
                .is_some();
        }
        if !ok {
            // Not counted here: the login counted this attempt before its
            // password was checked (`login.rs`).
            self.audit(AuditEvent {
                account_id: Some(user.account_id),
                actor_id: Some(user.id),
                credential: "password".into(),
                event: "login_failed",
                target: None,
                address,
                detail: Some("reason=mfa".into()),
            })
            .await;
            return Err(Error::InvalidMfaCode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_durations_double_up_to_the_cap() {
        let p = LockoutPolicy::default();
        let got: Vec<u64> = (1..=8).map(|n| p.lock_for(n)).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(p.lock_for(1_000_000), 3600);
    }

    #[test]
    fn human_codes_are_readable_and_hash_as_typed() {
        let c = human_code();
        assert_eq!(c.len(), 24);
        assert_eq!(c.matches('-').count(), 4);
        let typed = c.to_ascii_lowercase().replace('-', " ");
        let k = [7u8; 16];
        assert_eq!(code_hash(&k, &c), code_hash(&k, &typed));
        assert_ne!(code_hash(&k, &c), code_hash(&k, &human_code()));
        assert_ne!(code_hash(&k, &c), code_hash(&[8u8; 16], &c));
        assert_ne!(code_hash(&k, &c), legacy_code_hash(&c));
    }

    #[test]
    fn input_checks() {
        assert!(valid_email("a@b.c").is_ok());
        assert!(valid_email("ab.c").is_err());
        assert!(valid_email("a b@c.d").is_err());
        assert_eq!(valid_phone("+1 555-123 4567").unwrap(), "+15551234567");
        assert!(valid_phone("5551234567").is_err());
        assert!(valid_reference_key("Recovery.Email").is_ok());
        assert!(valid_reference_key("a/b").is_err());
        assert!(valid_password("short").is_err());
        assert!(valid_password("long enough password").is_ok());
    }
}
