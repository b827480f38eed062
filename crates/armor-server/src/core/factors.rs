//! Second factors: an authenticator app (TOTP, its secret sealed under
//! the master key) and a verified phone number; enrolment, and the check
//! a login with a right password goes through.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::audit::Audit;
use super::codes::{
    code_hash, code_key, digit_code, sec, valid_phone, LOGIN_CODE_TTL, PHONE_CODE_TTL,
};
use super::lockout::Lockout;
use super::master::Master;
use super::outbox::Outbox;
use super::throttle::SendLimits;
use super::{totp, Principal};
use crate::clock::Clock;
use crate::error::Error;
use crate::store::{AuditEvent, SecurityRow, Store, UserRow};

/// A TOTP enrolment: the secret for the app, as base32 and as a URI.
pub struct TotpEnrolment {
    pub secret_base32: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
}

/// What a user's TOTP secret is sealed to.
pub(super) fn totp_ad(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// Enrols and checks second factors.
#[derive(Clone)]
pub struct Factors {
    store: Store,
    clock: Arc<dyn Clock>,
    master: Arc<Master>,
    outbox: Arc<Outbox>,
    sends: SendLimits,
    lockout: Lockout,
    audit: Audit,
}

impl Factors {
    pub(super) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        master: Arc<Master>,
        outbox: Arc<Outbox>,
        lockout: Lockout,
        audit: Audit,
    ) -> Self {
        Factors {
            sends: SendLimits::new(store.clone(), clock.clone(), master.clone()),
            store,
            clock,
            master,
            outbox,
            lockout,
            audit,
        }
    }

    fn totp_secret(&self, s: &SecurityRow) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let Some(sealed) = s.totp_sealed() else {
            return Ok(None);
        };
        let master = self.master.with_version(sealed.version)?;
        master.open(&totp_ad(s.user_id), &sealed).map(Some)
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
        let sealed = self
            .master
            .current()
            .seal(&totp_ad(p.user_id), &secret[..])?;
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
        match totp::verify(&secret, code, self.clock.now()) {
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
        let seen = self.lockout.admit_code_check(&user).await?;
        let ok = self.totp_accepts(&s, pin).await?;
        self.lockout
            .settle_code_check(&user, seen, ok, address.clone())
            .await?;
        let newly = s.totp_enabled == 0;
        if newly {
            self.audit
                .by(
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
    /// `throttle::PHONE_PER_NUMBER` codes to a number and
    /// `throttle::PHONE_PER_USER` for a user per window; past
    /// them, 429 `rate_limited` (the caller is signed in: nothing to hide).
    pub async fn phone_start(&self, p: &Principal, phone: &str) -> Result<u64, Error> {
        let phone = valid_phone(phone)?;
        self.sends.phone_code_allowed(p.user_id, &phone).await?;
        let code = digit_code();
        let expires_at = self.clock.now() + PHONE_CODE_TTL;
        self.store
            .put_user_code(
                p.user_id,
                "phone",
                &code_hash(&code_key(&self.master), &code),
                expires_at,
                Some(&phone),
            )
            .await?;
        self.outbox
            .send_message(
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
        let seen = self.lockout.admit_code_check(&user).await?;
        let detail = self
            .store
            .check_short_code(
                p.user_id,
                "phone",
                &code_hash(&code_key(&self.master), code),
                self.clock.now(),
            )
            .await?;
        let ok = detail.as_deref() == Some(phone.as_str());
        self.lockout
            .settle_code_check(&user, seen, ok, address.clone())
            .await?;
        self.store.set_phone_verified(p.user_id, &phone).await?;
        self.audit
            .by(
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
                    if let Err(retry_after) =
                        self.sends.count_send("phone-number", phone, limit).await?
                    {
                        return Err(Error::RateLimited { retry_after });
                    }
                    let code = digit_code();
                    self.store
                        .put_user_code(
                            user.id,
                            "login",
                            &code_hash(&code_key(&self.master), &code),
                            self.clock.now() + LOGIN_CODE_TTL,
                            None,
                        )
                        .await?;
                    self.outbox
                        .send_message(
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
                .check_short_code(
                    user.id,
                    "login",
                    &code_hash(&code_key(&self.master), code),
                    self.clock.now(),
                )
                .await?
                .is_some();
        }
        if !ok {
            // Not counted here: the login counted this attempt before its
            // password was checked (`login.rs`).
            self.audit
                .record(AuditEvent {
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
