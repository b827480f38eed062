//! Handlers of user administration and account security. Every one takes
//! [`PasswordCaller`] (or [`NoApiKey`] for the code-based password routes),
//! so API keys never reach them.

use crate::web::Path;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{int_id, user_json, ApiResult};
use crate::clock::rfc3339;
use crate::core::UserEdit;
use crate::error::Error;
use crate::web::auth::{ClientAddr, NoApiKey, PasswordCaller};
use crate::web::{ApiJson, AppState};

/// One role (`role`) or a list of one (`roles`, the vendor's shape).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Roles {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    #[serde(alias = "username")]
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    role: Option<String>,
    roles: Option<Roles>,
}

impl UserBody {
    fn edit(self) -> Result<UserEdit, Error> {
        let role = match (self.role, self.roles) {
            (Some(r), None) => Some(r),
            (None, Some(Roles::One(r))) => Some(r),
            (None, Some(Roles::Many(mut v))) if v.len() <= 1 => v.pop(),
            (None, None) => None,
            _ => {
                return Err(Error::BadRequest(
                    "a user has one role per account: give role, or roles with one name".into(),
                ))
            }
        };
        Ok(UserEdit {
            email: self.email,
            first_name: self.first_name,
            last_name: self.last_name,
            role,
        })
    }
}

pub async fn create_user(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<UserBody>,
) -> ApiResult<Json<Value>> {
    let (user, role) = core.users.create_user(&p, &body.edit()?, addr).await?;
    Ok(Json(user_json(&user, &role)))
}

pub async fn update_user(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserBody>,
) -> ApiResult<Json<Value>> {
    let id = int_id(&id)?;
    let (user, role) = core.users.update_user(&p, id, &body.edit()?, addr).await?;
    Ok(Json(user_json(&user, &role)))
}

pub async fn invite_user(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
) -> ApiResult<Json<bool>> {
    let id = int_id(&id)?;
    core.users.invite(&p, id, addr).await?;
    Ok(Json(true))
}

pub async fn activation_code(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id(&id)?;
    let issued = core.users.activation_code(&p, id, addr).await?;
    let body = json!({
        "userId": id,
        "activationCode": issued.code.as_str(),
        "expiresAt": rfc3339(issued.expires_at),
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPasswordBody {
    #[serde(alias = "activationCode", alias = "resetCode")]
    code: Option<String>,
    #[serde(alias = "newPassword")]
    password: Option<String>,
}

pub async fn set_password(
    State(core): State<AppState>,
    NoApiKey(_): NoApiKey,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<SetPasswordBody>,
) -> ApiResult<Json<bool>> {
    let (Some(code), Some(password)) = (body.code, body.password) else {
        return Err(Error::BadRequest("code and password are required".into()).into());
    };
    core.users
        .set_password_with_code(&code, &password, addr)
        .await?;
    Ok(Json(true))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetBody {
    #[serde(alias = "username")]
    email: Option<String>,
}

/// Always the same answer, whether or not the address is a user's.
pub async fn reset_password(
    State(core): State<AppState>,
    NoApiKey(_): NoApiKey,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<ResetBody>,
) -> ApiResult<Json<Value>> {
    let email = body
        .email
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| Error::BadRequest("email is required".into()))?;
    core.users.reset_password(&email, addr).await?;
    Ok(Json(json!({
        "message": "If the address belongs to an active user, a reset code has been sent to it."
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    #[serde(alias = "id")]
    user_id: Option<i64>,
    status: Option<String>,
    enabled: Option<bool>,
}

pub async fn user_status(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<StatusBody>,
) -> ApiResult<Json<Value>> {
    let id = body
        .user_id
        .ok_or_else(|| Error::BadRequest("userId is required".into()))?;
    let enabled = match (
        body.enabled,
        body.status.as_deref().map(str::to_ascii_lowercase),
    ) {
        (Some(e), None) => e,
        (None, Some(s)) if matches!(s.as_str(), "active" | "enabled" | "enable") => true,
        (None, Some(s)) if matches!(s.as_str(), "disabled" | "disable" | "inactive") => false,
        _ => {
            return Err(Error::BadRequest(
                "give status (\"active\" or \"disabled\") or enabled (true or false)".into(),
            )
            .into())
        }
    };
    let user = core.users.set_user_enabled(&p, id, enabled, addr).await?;
    Ok(Json(json!({"userId": user.id, "status": user.status})))
}

pub async fn locked_out(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path((account, email)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let account = int_id(&account)?;
    let s = core.users.lock_state(&p, account, &email).await?;
    Ok(Json(json!({
        "userId": s.user_id,
        "lockedOut": s.locked_until.is_some(),
        "lockedUntil": s.locked_until.map(rfc3339),
        "failedAttempts": s.failures,
    })))
}

pub async fn unlock(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path((account, email)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let account = int_id(&account)?;
    let was = core.users.unlock(&p, account, &email, addr).await?;
    Ok(Json(json!({"unlocked": true, "wasLockedOut": was})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SoftDeleteBody {
    #[serde(alias = "id")]
    user_id: Option<i64>,
    #[serde(alias = "username")]
    email: Option<String>,
}

pub async fn soft_delete(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<SoftDeleteBody>,
) -> ApiResult<Json<bool>> {
    match (body.user_id, body.email) {
        (Some(id), _) => core.users.soft_delete(&p, id, addr).await?,
        (None, Some(email)) => core.users.soft_delete_by_email(&p, &email, addr).await?,
        (None, None) => return Err(Error::BadRequest("userId or email is required".into()).into()),
    }
    Ok(Json(true))
}

// ---- usersecurity ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeBody {
    user_id: Option<i64>,
    #[serde(alias = "phrase")]
    challenge_phrase: Option<String>,
}

pub async fn set_challenge_phrase(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<ChallengeBody>,
) -> ApiResult<Json<bool>> {
    let phrase = body
        .challenge_phrase
        .ok_or_else(|| Error::BadRequest("challengePhrase is required".into()))?;
    core.users
        .set_challenge_phrase(&p, body.user_id, &phrase, addr)
        .await?;
    Ok(Json(true))
}

pub async fn challenge_phrase(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = int_id(&id)?;
    let phrase = core.users.challenge_phrase(&p, id).await?;
    Ok(Json(json!({"userId": id, "challengePhrase": phrase})))
}

fn info_json(r: &crate::store::SecurityInfoRow) -> Value {
    json!({
        "referenceKey": r.reference_key,
        "value": r.value,
        "updatedDate": rfc3339(r.updated_at.max(0) as u64),
    })
}

pub async fn security_info(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = core.users.security_info(&p, &key).await?;
    Ok(Json(info_json(&row)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoBody {
    value: Option<String>,
}

/// Stores one security-information value; `existing` demands that it was
/// there before.
async fn put_security_info(
    core: &AppState,
    p: &crate::core::Principal,
    addr: Option<String>,
    key: &str,
    body: InfoBody,
    existing: bool,
) -> ApiResult<Json<Value>> {
    let value = body
        .value
        .ok_or_else(|| Error::BadRequest("value is required".into()))?;
    let row = core
        .users
        .put_security_info(p, key, &value, existing, addr)
        .await?;
    Ok(Json(info_json(&row)))
}

pub async fn add_security_info(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<InfoBody>,
) -> ApiResult<Json<Value>> {
    put_security_info(&core, &p, addr, &key, body, false).await
}

pub async fn update_security_info(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<InfoBody>,
) -> ApiResult<Json<Value>> {
    put_security_info(&core, &p, addr, &key, body, true).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserSecurityBody {
    #[serde(default)]
    clear_second_factors: bool,
}

pub async fn user_security(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path((account, user)): Path<(String, String)>,
    ApiJson(body): ApiJson<UserSecurityBody>,
) -> ApiResult<Json<Value>> {
    let (account, user) = (int_id(&account)?, int_id(&user)?);
    let s = core
        .users
        .user_security(&p, account, user, body.clear_second_factors, addr)
        .await?;
    Ok(Json(json!({
        "userId": s.user_id,
        "accountId": account,
        "challengePhraseSet": s.challenge_phrase_set,
        "authenticatorApp": s.totp_enabled,
        "phoneVerified": s.phone_verified,
        "phoneNumber": s.phone,
        "referenceKeys": s.reference_keys,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneBody {
    #[serde(alias = "phone")]
    phone_number: Option<String>,
    #[serde(alias = "pin")]
    code: Option<String>,
}

pub async fn validate_mfa_phone(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<PhoneBody>,
) -> ApiResult<Json<Value>> {
    let phone = body
        .phone_number
        .ok_or_else(|| Error::BadRequest("phoneNumber is required".into()))?;
    match body.code {
        None => {
            let expires = core.factors.phone_start(&p, &phone).await?;
            Ok(Json(json!({
                "codeSent": true,
                "expiresAt": rfc3339(expires),
            })))
        }
        Some(code) => {
            core.factors.phone_verify(&p, &phone, &code, addr).await?;
            Ok(Json(json!({"verified": true})))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPinBody {
    #[serde(alias = "code", alias = "otp")]
    pin: Option<String>,
}

pub async fn validate_app_pin(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<AppPinBody>,
) -> ApiResult<Response> {
    match body.pin {
        None => {
            let user = core.access.caller(&p).await?;
            let e = core.factors.totp_enrol(&p, &user.email).await?;
            let body = json!({
                "secret": e.secret_base32.as_str(),
                "otpauthUri": e.otpauth_uri.as_str(),
                "enabled": false,
            });
            Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
        }
        Some(pin) => {
            let newly = core.factors.totp_validate(&p, &pin, addr).await?;
            Ok(
                Json(json!({"valid": true, "enabled": true, "newlyEnabled": newly}))
                    .into_response(),
            )
        }
    }
}
