//! Authentication in front of the router, and the extractors that state
//! each route's policy in its handler's signature:
//! [`Caller`] (any credential), [`PasswordCaller`] (FH-AUTH or Bearer only:
//! an API-key caller cannot produce one) and [`NoApiKey`] (anonymous or
//! password).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt as _, Limited};

use crate::core::{Core, Principal, Via};
use crate::error::Error;
use crate::web::error::ApiError;

/// Who is calling, as decided in front of the router.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Principal(Principal),
}

/// The client's address, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr(pub Option<String>);

/// Authenticates `req` in place: on success the [`Auth`] is in its
/// extensions (and, for ARMOR-PSK, the body has been read and verified).
pub async fn authenticate(core: &Arc<Core>, req: Request) -> Result<Request, Error> {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    Error::from(armor_psk::Error::Parse(armor_psk::ParseError::Malformed(
                        "the Authorization header must be visible ASCII",
                    )))
                })?
                .to_owned(),
        ),
    };
    let context = account_context(req.headers())?;
    let (auth, mut req) = match header.as_deref() {
        None => (Auth::Anonymous, req),
        Some(h) => match token_of(h) {
            Some(token) => {
                let (user_id, token_hash) = core.authenticate_token(token).await?;
                let home = core
                    .store
                    .user_by_id(user_id)
                    .await?
                    .map(|u| u.account_id)
                    .ok_or(Error::InvalidToken)?;
                let p = core
                    .principal(
                        user_id,
                        home,
                        context.as_deref(),
                        Via::Password { token_hash },
                    )
                    .await?;
                (Auth::Principal(p), req)
            }
            None => {
                let (creds, key) = core.psk_begin(h)?;
                let (parts, body) = req.into_parts();
                let bytes = read_body(body, core.config.max_body).await?;
                let psk_req = armor_psk::Request {
                    method: parts.method.as_str(),
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                    body: &bytes,
                };
                let id = core.psk_finish(&creds, key.as_deref(), &psk_req)?;
                let p = core
                    .principal(
                        id.user_id,
                        id.account_id,
                        context.as_deref(),
                        Via::ApiKey { key_id: id.key_id },
                    )
                    .await?;
                (
                    Auth::Principal(p),
                    Request::from_parts(parts, Body::from(bytes)),
                )
            }
        },
    };
    req.extensions_mut().insert(auth);
    req.extensions_mut().insert(ClientAddr(addr));
    Ok(req)
}

/// `FH-AUTH <token>` or `Bearer <token>` (scheme case-insensitive).
fn token_of(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("FH-AUTH") || scheme.eq_ignore_ascii_case("Bearer"))
        .then(|| rest.trim())
}

fn account_context(headers: &HeaderMap) -> Result<Option<String>, Error> {
    match headers.get("x-account-context") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|_| Error::InvalidAccountContext),
    }
}

/// Reads a body up to `max` bytes: refused as soon as the declared length
/// or the bytes received pass the limit.
pub async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, Error> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge(max)),
        Err(e) => Err(Error::BadRequest(format!("could not read the body: {e}"))),
    }
}

/// Any authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// A caller signed in with a password (FH-AUTH or Bearer). API-key callers
/// are refused with 403 `api_key_not_allowed`.
#[derive(Debug, Clone)]
pub struct PasswordCaller(pub Principal);

/// Anyone but an API-key caller (for the password-reset routes).
#[derive(Debug, Clone)]
pub struct NoApiKey(pub Option<Principal>);

fn auth_of(parts: &Parts) -> Auth {
    parts
        .extensions
        .get::<Auth>()
        .cloned()
        .unwrap_or(Auth::Anonymous)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match auth_of(parts) {
            Auth::Principal(p) => Ok(Caller(p)),
            Auth::Anonymous => Err(armor_psk::Error::MissingAuthorization.into()),
        }
        .map_err(|e: Error| ApiError(e))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PasswordCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match auth_of(parts) {
            Auth::Principal(p) if p.is_api_key() => Err(ApiError(Error::ApiKeyNotAllowed)),
            Auth::Principal(p) => Ok(PasswordCaller(p)),
            Auth::Anonymous => Err(ApiError(armor_psk::Error::MissingAuthorization.into())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for NoApiKey {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match auth_of(parts) {
            Auth::Principal(p) if p.is_api_key() => Err(ApiError(Error::ApiKeyNotAllowed)),
            Auth::Principal(p) => Ok(NoApiKey(Some(p))),
            Auth::Anonymous => Ok(NoApiKey(None)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .cloned()
            .unwrap_or_default())
    }
}
