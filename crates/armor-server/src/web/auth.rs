//! Authentication in front of the handlers, and the extractors that state
//! each route's policy in its handler's signature:
//! [`Caller`] (any credential), [`PasswordCaller`] (FH-AUTH or Bearer only:
//! an API-key caller cannot produce one) and [`NoApiKey`] (anonymous or
//! password).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Uri};
use http_body_util::{BodyExt as _, Limited};

use crate::conn::client::Client;
use crate::core::{Core, Principal, Via};
use crate::error::Error;
use crate::limit::AuthFailureLimiter;
use crate::web::error::ApiError;

/// Who is calling, as decided in front of the handlers.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Principal(Principal),
}

impl Auth {
    /// The caller's principal (`None` for an anonymous one).
    pub fn into_principal(self) -> Option<Principal> {
        match self {
            Auth::Principal(p) => Some(p),
            Auth::Anonymous => None,
        }
    }
}

/// The client's address, for the audit log (an extractor).
#[derive(Debug, Clone, Default)]
pub struct ClientAddr(pub Option<String>);

/// A refused request, with its body if it was not read yet.
pub struct Refusal {
    pub error: Error,
    pub body: Option<Body>,
}

/// Largest unread body drained before answering a refusal, so the client
/// reads the answer rather than a connection reset.
const DRAIN_LIMIT: usize = 64 * 1024;

impl Refusal {
    pub async fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        if let Some(body) = self.body {
            let drain = Limited::new(body, DRAIN_LIMIT).collect();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
        }
        ApiError(self.error).into_response()
    }
}

/// The client address as text: the peer's, or the one a trusted proxy
/// names (see [`crate::conn::client`]).
fn client_addr(client: Option<Client>) -> ClientAddr {
    ClientAddr(client.map(|c| c.ip.to_string()))
}

/// The state a route's handler is called with: the shared core, and what
/// the front layer found out about this request: the caller, who sent
/// it, and where the route's `{x}` segments are in its path. (The
/// portal's pages, behind an axum router, find the sender in the
/// request's extensions.) Handed over here, none of it needs the
/// request's extensions, which build a map for their first value.
pub struct RouteState {
    pub(super) core: super::AppState,
    pub(super) caller: Auth,
    pub(super) client: Option<Client>,
    pub(super) params: super::routes::Params,
}

impl FromRef<RouteState> for super::AppState {
    fn from_ref(state: &RouteState) -> Self {
        state.core.clone()
    }
}

/// Authenticates `req`: who is calling (for ARMOR-PSK, the body has been
/// read, verified and put back). With a `limiter`, refused ARMOR-PSK
/// attempts are counted per key and address, and too many refused.
///
/// The request is borrowed, not moved: this future sits inside every
/// request's own, and a request held by value would be stored in it twice.
pub async fn authenticate(
    core: &Arc<Core>,
    limiter: Option<&AuthFailureLimiter>,
    client: Option<IpAddr>,
    req: &mut Request,
) -> Result<Auth, Refusal> {
    let mut body = Some(std::mem::take(req.body_mut()));
    let head = Head {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        client,
    };
    match authenticate_head(core, limiter, head, &mut body).await {
        Ok(auth) => {
            *req.body_mut() = body.unwrap_or_default();
            Ok(auth)
        }
        Err(error) => Err(Refusal { error, body }),
    }
}

/// What authentication reads of a request, borrowed (a body is not `Sync`,
/// so the request itself cannot be).
struct Head<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    /// The client's address (see [`crate::conn::client`]).
    client: Option<IpAddr>,
}

/// Decides who is calling (the request's body is in `body`). For
/// ARMOR-PSK the body is taken out of `body`, read (only once the header
/// is plausible), verified and put back.
async fn authenticate_head(
    core: &Arc<Core>,
    limiter: Option<&AuthFailureLimiter>,
    req: Head<'_>,
    body: &mut Option<Body>,
) -> Result<Auth, Error> {
    let header = match req.headers.get(header::AUTHORIZATION) {
        None => return Ok(Auth::Anonymous),
        Some(v) => visible_text(v.as_bytes()).ok_or_else(|| {
            Error::from(armor_psk::Error::Parse(armor_psk::ParseError::Malformed(
                "the Authorization header must be visible ASCII",
            )))
        })?,
    };
    let context = account_context(req.headers)?;
    let principal = match token_of(header) {
        Some(token) => {
            let t = core.sessions.authenticate_token(token).await?;
            core.access
                .principal(
                    t.user_id,
                    t.account_id,
                    context.as_deref(),
                    Via::Password { token_hash: t.hash },
                )
                .await?
        }
        None => {
            let begun = core.verifier.psk_begin(header)?;
            let (creds, key) = (begun.creds(), begun.key());
            let client = req.client;
            // Too many refusals for this key from this address: 429, unread.
            let limiter = limiter.zip(client);
            if let Some((l, ip)) = &limiter {
                if let Err(e) = l.check(*ip, creds.key_id()) {
                    core.verifier
                        .count_refused(key, crate::web::error::classify(&e).1);
                    return Err(e);
                }
            }
            let bytes = read_body(body.take().unwrap_or_default(), core.config.max_body).await?;
            let psk_req = armor_psk::Request {
                method: req.method.as_str(),
                path: req.uri.path(),
                query: req.uri.query(),
                body: &bytes,
            };
            let origin = crate::core::restrictions::Origin {
                peer: client,
                armor_route: super::is_armor_route,
            };
            let id = match core.verifier.psk_finish(&begun, &psk_req, &origin).await {
                Ok(id) => id,
                Err(e) => {
                    if let (Some((l, ip)), Error::Psk { err, .. }) = (&limiter, &e) {
                        if *err == armor_psk::Error::InvalidSignature {
                            l.failed_everywhere(*ip, creds.key_id()).await;
                        }
                    }
                    return Err(e);
                }
            };
            *body = Some(if bytes.is_empty() {
                Body::empty()
            } else {
                Body::from(bytes.clone())
            });
            core.access
                .principal(
                    id.user_id,
                    id.account_id,
                    context.as_deref(),
                    Via::ApiKey {
                        key_id: id.key_id,
                        key_permissions: id.permissions,
                    },
                )
                .await?
                .narrowed()
        }
    };
    Ok(Auth::Principal(principal))
}

/// `FH-AUTH <token>` or `Bearer <token>` (scheme case-insensitive).
fn token_of(header: &str) -> Option<&str> {
    // By bytes: a `char` searcher's set-up costs more than this search.
    let at = header.bytes().position(|b| b == b' ')?;
    let (scheme, rest) = (&header[..at], &header[at + 1..]);
    (scheme.eq_ignore_ascii_case("FH-AUTH") || scheme.eq_ignore_ascii_case("Bearer"))
        .then(|| rest.trim())
}

/// A header value as text if it is visible ASCII, spaces and tabs (what
/// `HeaderValue::to_str` accepts), checked without an early exit so that
/// the check vectorises.
fn visible_text(value: &[u8]) -> Option<&str> {
    let visible = value.iter().fold(true, |ok, &b| {
        ok & ((0x20..0x7f).contains(&b) | (b == b'\t'))
    });
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

const ACCOUNT_CONTEXT: header::HeaderName = header::HeaderName::from_static("x-account-context");

fn account_context(headers: &HeaderMap) -> Result<Option<String>, Error> {
    match headers.get(ACCOUNT_CONTEXT) {
        None => Ok(None),
        // An empty header is the same as none (some clients always send it).
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
            .map_err(|_| Error::InvalidAccountContext),
    }
}

/// Reads a body up to `max` bytes: refused as soon as the declared length
/// or the bytes received pass the limit.
pub async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, Error> {
    use axum::body::HttpBody as _;
    // No body (most GETs): nothing to collect.
    if body.is_end_stream() {
        return Ok(bytes::Bytes::new());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge(max)),
        Err(e) if crate::conn::is_body_timeout(&*e) => Err(Error::RequestTimeout(
            "the whole body must arrive within the body timeout",
        )),
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

impl FromRequestParts<RouteState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(_: &mut Parts, s: &RouteState) -> Result<Self, Self::Rejection> {
        // A copy of the principal: reference counts, no strings.
        match &s.caller {
            Auth::Principal(p) => Ok(Caller(p.clone())),
            Auth::Anonymous => Err(armor_psk::Error::MissingAuthorization.into()),
        }
        .map_err(|e: Error| ApiError(e))
    }
}

impl FromRequestParts<RouteState> for PasswordCaller {
    type Rejection = ApiError;
    async fn from_request_parts(_: &mut Parts, s: &RouteState) -> Result<Self, Self::Rejection> {
        match &s.caller {
            Auth::Principal(p) if p.is_api_key() => Err(ApiError(Error::ApiKeyNotAllowed)),
            Auth::Principal(p) => Ok(PasswordCaller(p.clone())),
            Auth::Anonymous => Err(ApiError(armor_psk::Error::MissingAuthorization.into())),
        }
    }
}

impl FromRequestParts<RouteState> for NoApiKey {
    type Rejection = ApiError;
    async fn from_request_parts(_: &mut Parts, s: &RouteState) -> Result<Self, Self::Rejection> {
        match &s.caller {
            Auth::Principal(p) if p.is_api_key() => Err(ApiError(Error::ApiKeyNotAllowed)),
            Auth::Principal(p) => Ok(NoApiKey(Some(p.clone()))),
            Auth::Anonymous => Ok(NoApiKey(None)),
        }
    }
}

// Both formatted only for the handlers that record the address.
impl FromRequestParts<RouteState> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(_: &mut Parts, s: &RouteState) -> Result<Self, Self::Rejection> {
        Ok(client_addr(s.client))
    }
}

/// The portal's pages: the front layer puts the sender in the request's
/// extensions.
impl FromRequestParts<super::AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        _: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(client_addr(parts.extensions.get::<Client>().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::visible_text;
    use axum::http::HeaderValue;

    /// `visible_text` takes exactly what `HeaderValue::to_str` takes, byte
    /// by byte and in a longer value.
    #[test]
    fn visible_text_accepts_what_to_str_accepts() {
        for b in 0..=255u8 {
            let value = [b'a', b, b'z'];
            let Ok(header) = HeaderValue::from_bytes(&value) else {
                continue;
            };
            assert_eq!(visible_text(&value), header.to_str().ok(), "byte {b:#x}");
        }
        let long = "ARMOR-PSK k:".repeat(20);
        assert_eq!(visible_text(long.as_bytes()), Some(long.as_str()));
    }
}
