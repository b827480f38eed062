//! Route handlers: thin, each states its policy through its extractors and
//! calls [`Core`](crate::core::Core).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Path;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{Caller, ClientAddr, PasswordCaller};
use super::error::ApiError;
use super::{ApiJson, ApiQuery, AppState};
use crate::clock::rfc3339;
use crate::core::{perm, CODE_TTL, TOKEN_IDLE_TTL};
use crate::error::Error;
use crate::store::{AccountRow, AuditFilter, Role, UserRow};

mod keys;
mod me;
mod usage;
mod users;
pub use keys::*;
pub use me::me;
pub use usage::key_usage;
pub use users::*;

type ApiResult<T> = Result<T, ApiError>;

/// Ids in paths are integers (`users/{id:int}`); anything else is not a
/// route, so 404.
fn int_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i32>()
        .map(i64::from)
        .map_err(|_| ApiError(Error::NotFound("route")))
}

pub async fn not_found() -> ApiError {
    ApiError(Error::NotFound("route"))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError(Error::MethodNotAllowed(
        "this route does not accept that method",
    ))
}

/// Answers without touching the store or any credential.
pub async fn ping() -> Json<Value> {
    Json(json!({"pong": true}))
}

pub async fn health(State(core): State<AppState>) -> Response {
    if core.access.store_ok().await {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError(Error::StoreUnavailable).into_response()
    }
}

pub async fn metrics(State(core): State<AppState>) -> Response {
    let m = &core.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    };
    counter(
        "armor_psk_accepted_total",
        "ARMOR-PSK requests accepted",
        m.psk_accepted.load(Ordering::Relaxed),
    );
    counter(
        "armor_logins_total",
        "Successful password logins",
        m.logins_ok.load(Ordering::Relaxed),
    );
    counter(
        "armor_login_failures_total",
        "Failed password logins",
        m.logins_failed.load(Ordering::Relaxed),
    );
    counter(
        "armor_keys_created_total",
        "API keys created",
        m.keys_created.load(Ordering::Relaxed),
    );
    counter(
        "armor_keys_deleted_total",
        "API keys deleted",
        m.keys_deleted.load(Ordering::Relaxed),
    );
    let _ = write!(
        out,
        "# HELP armor_psk_refused_total ARMOR-PSK requests refused, by error code\n# TYPE armor_psk_refused_total counter\n"
    );
    let mut refused: Vec<(&str, u64)> = m
        .psk_refused
        .iter()
        .map(|e| (*e.key(), *e.value()))
        .collect();
    refused.sort();
    for (code, n) in refused {
        let _ = writeln!(out, "armor_psk_refused_total{{error=\"{code}\"}} {n}");
    }
    let _ = write!(
        out,
        "# HELP armor_api_keys_cached API keys held by the verifier\n# TYPE armor_api_keys_cached gauge\narmor_api_keys_cached {}\n",
        core.verifier.cached_keys()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

// ---- password login ----

#[derive(Deserialize)]
pub struct AuthorizeBody {
    #[serde(alias = "userName", alias = "UserName", alias = "Username")]
    username: Option<String>,
    #[serde(alias = "Password")]
    password: Option<String>,
    /// The second-factor code, for a user who has one.
    #[serde(alias = "otp", alias = "MfaCode")]
    #[serde(rename = "mfaCode")]
    mfa_code: Option<String>,
}

pub async fn authorize(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<AuthorizeBody>,
) -> ApiResult<Json<Value>> {
    let (Some(user), Some(pass)) = (body.username, body.password) else {
        return Err(Error::BadRequest("username and password are required".into()).into());
    };
    let code = core
        .sessions
        .authorize(&user, &pass, body.mfa_code.as_deref(), addr)
        .await?;
    Ok(Json(json!({
        "code": code.as_str(),
        "expiresIn": CODE_TTL,
        "success": true,
        "redirect_uri": null,
    })))
}

#[derive(Deserialize)]
pub struct TokenBody {
    code: Option<String>,
    grant_type: Option<String>,
}

fn token_response(token: &str) -> Json<Value> {
    Json(json!({
        "access_token": token,
        "id_token": token,
        "token_type": "FH-AUTH",
        "expires_in": TOKEN_IDLE_TTL,
    }))
}

pub async fn token(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<Value>> {
    if let Some(g) = body.grant_type.as_deref() {
        if g != "authorization_code" {
            return Err(Error::BadRequest("grant_type must be authorization_code".into()).into());
        }
    }
    let code = body
        .code
        .ok_or_else(|| Error::BadRequest("code is required".into()))?;
    let token = core.sessions.exchange_code(&code, addr).await?;
    Ok(token_response(&token))
}

#[derive(Deserialize)]
pub struct ReissueBody {
    token: Option<String>,
}

pub async fn reissue(
    State(core): State<AppState>,
    ApiJson(body): ApiJson<ReissueBody>,
) -> ApiResult<Json<Value>> {
    let token = body
        .token
        .ok_or_else(|| Error::BadRequest("token is required".into()))?;
    let fresh = core.sessions.reissue(&token).await?;
    Ok(token_response(&fresh))
}

pub async fn logout(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
) -> ApiResult<Json<bool>> {
    core.sessions.logout(&p).await?;
    Ok(Json(true))
}

// ---- identity ----

fn user_json(u: &UserRow, role: &Role) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "username": u.email,
        "firstName": u.first_name,
        "lastName": u.last_name,
        "status": u.status,
        "role": role,
        "createdDate": rfc3339(u.created_at.max(0) as u64),
    })
}

/// A JSON answer already written out. Its `Content-Type` is set directly:
/// `Vec<u8>`'s own `IntoResponse` would set `application/octet-stream`,
/// only for it to be replaced.
fn json_answer(body: Vec<u8>) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    let json = axum::http::HeaderValue::from_static("application/json");
    resp.headers_mut().insert(header::CONTENT_TYPE, json);
    resp
}

/// An account as the API shows it.
struct AccountJson<'a>(&'a AccountRow);

impl Serialize for AccountJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let a = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("id", &a.id)?;
        m.serialize_entry("name", &a.name)?;
        m.serialize_entry("status", &a.status)?;
        m.serialize_entry("parent", &a.parent_id)?;
        m.serialize_entry("type", "account")?;
        m.end()
    }
}

/// Echoes the authenticated identity and a digest of the body: lets a
/// client check its signing of any method and body.
pub async fn whoami(
    State(core): State<AppState>,
    Caller(p): Caller,
    method: axum::http::Method,
    body: axum::body::Body,
) -> ApiResult<WhoAmI> {
    use sha2::Digest as _;
    let bytes = super::auth::read_body(body, core.config.max_body).await?;
    let credential = p.via.scheme();
    let key_id = match p.via {
        crate::core::Via::ApiKey { key_id, .. } => Some(key_id),
        crate::core::Via::Password { .. } => None,
    };
    let mut hex = [0u8; 64];
    if bytes.is_empty() {
        hex.copy_from_slice(EMPTY_SHA256.as_bytes());
    } else {
        let digest = sha2::Sha256::digest(&bytes);
        for (pair, b) in hex.chunks_exact_mut(2).zip(digest.iter()) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
    }
    Ok(WhoAmI {
        user_id: p.user_id,
        account_id: p.account_id,
        credential,
        key_id,
        method,
        body_length: bytes.len(),
        body_sha256: hex,
    })
}

/// The SHA-256 of no bytes, in hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The body of `/auth/whoami`, written as JSON straight into a buffer of
/// its size: its strings are an id (escaped), a method token and hex
/// digits (neither needs escaping).
pub struct WhoAmI {
    user_id: i64,
    account_id: i64,
    credential: &'static str,
    key_id: Option<crate::core::KeyId>,
    method: axum::http::Method,
    body_length: usize,
    body_sha256: [u8; 64],
}

impl WhoAmI {
    fn to_json(&self) -> Vec<u8> {
        // Writes to a Vec cannot fail; numbers and the id go through
        // serde_json (no `fmt` machinery), the rest is copied.
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"userId":"#);
        let _ = serde_json::to_writer(&mut out, &self.user_id);
        out.extend_from_slice(br#","accountId":"#);
        let _ = serde_json::to_writer(&mut out, &self.account_id);
        out.extend_from_slice(br#","credential":""#);
        out.extend_from_slice(self.credential.as_bytes());
        out.extend_from_slice(br#"","keyId":"#);
        let _ = serde_json::to_writer(&mut out, &self.key_id.as_deref());
        // A method is a token: no quote, backslash or control character.
        out.extend_from_slice(br#","method":""#);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(br#"","bodyLength":"#);
        let _ = serde_json::to_writer(&mut out, &self.body_length);
        out.extend_from_slice(br#","bodySha256":""#);
        out.extend_from_slice(&self.body_sha256);
        out.extend_from_slice(b"\"}");
        out
    }
}

impl axum::response::IntoResponse for WhoAmI {
    fn into_response(self) -> Response {
        json_answer(self.to_json())
    }
}

pub async fn permissions(Caller(p): Caller) -> Json<Value> {
    Json(json!({
        "accountId": p.account_id,
        "permissions": p.permissions,
        "available": perm::ALL,
    }))
}

pub async fn accounts(State(core): State<AppState>, Caller(p): Caller) -> ApiResult<Response> {
    let accounts = core.access.accounts(&p).await?;
    Ok(Json(accounts.iter().map(AccountJson).collect::<Vec<_>>()).into_response())
}

pub async fn account(
    State(core): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id(&id)?;
    let accounts = core.access.accounts(&p).await?;
    let a = accounts
        .iter()
        .find(|a| a.id == id)
        .ok_or(Error::NotFound("account"))?;
    Ok(Json(AccountJson(a)).into_response())
}

pub async fn users(State(core): State<AppState>, Caller(p): Caller) -> ApiResult<Json<Vec<Value>>> {
    let users = core.access.users(&p).await?;
    Ok(Json(users.iter().map(|(u, r)| user_json(u, r)).collect()))
}

pub async fn user(
    State(core): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = int_id(&id)?;
    let (u, role) = core.access.user(&p, id).await?;
    Ok(Json(user_json(&u, &role)))
}

// ---- audit ----

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
    /// Rows this user acted in or was the target of.
    #[serde(alias = "userId")]
    user: Option<i64>,
    event: Option<String>,
    /// Unix seconds, inclusive.
    since: Option<i64>,
    until: Option<i64>,
    /// The cursor of the next page: rows with a smaller id.
    before: Option<i64>,
}

/// Newest first; when more rows match, `X-Next-Before` holds the `before`
/// of the next page.
pub async fn audit_log(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut rows = core
        .audit
        .query(
            &p,
            AuditFilter {
                account_id: p.account_id,
                user_id: q.user,
                event: q.event.filter(|e| !e.is_empty()),
                since: q.since,
                until: q.until,
                before: q.before,
                limit: limit + 1,
            },
        )
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    let body = Json(json!(rows
        .into_iter()
        .map(|r| {
            let mut v = json!(r);
            v["atDate"] = json!(rfc3339(r.at.max(0) as u64));
            v
        })
        .collect::<Vec<_>>()));
    let mut resp = body.into_response();
    if let Some(n) = next {
        if let Ok(v) = header::HeaderValue::from_str(&n.to_string()) {
            resp.headers_mut().insert("x-next-before", v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::WhoAmI;

    #[test]
    fn whoami_is_json_with_every_field() {
        let w = WhoAmI {
            user_id: -3,
            account_id: 42,
            credential: "ARMOR-PSK",
            key_id: Some("k\"\\\u{1}é".into()),
            method: axum::http::Method::from_bytes(b"PURGE").unwrap(),
            body_length: 7,
            body_sha256: [b'a'; 64],
        };
        let v: serde_json::Value = serde_json::from_slice(&w.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "userId": -3,
                "accountId": 42,
                "credential": "ARMOR-PSK",
                "keyId": "k\"\\\u{1}é",
                "method": "PURGE",
                "bodyLength": 7,
                "bodySha256": "a".repeat(64),
            })
        );
        let none = WhoAmI { key_id: None, ..w };
        let v: serde_json::Value = serde_json::from_slice(&none.to_json()).unwrap();
        assert_eq!(v["keyId"], serde_json::Value::Null);
    }

    #[test]
    fn the_empty_digest_is_sha256_of_nothing() {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(b"");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, super::EMPTY_SHA256);
    }
}
