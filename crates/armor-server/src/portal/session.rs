//! Portal sessions (a credential of their own, in a cookie scoped to the
//! portal's path), the CSRF token of each session, and the extractor every
//! form post goes through.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use crate::core::principals::SessionView;
use crate::core::Principal;
use crate::error::Error;
use crate::store::{AccountRow, Role, UserRow};
use crate::web::AppState;

/// The session cookie: a portal session (see `core::sessions`), which is
/// not an FH-AUTH token and is refused in `Authorization`.
pub const SESSION_COOKIE: &str = "armor_session";
/// The account the portal acts in, for users of several accounts.
pub const ACCOUNT_COOKIE: &str = "armor_account";
/// The sign-in form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "armor_login_csrf";
/// The path of the session and account cookies: every portal page is
/// under it, with or without an upstream, so the browser sends them to
/// nothing else on the origin.
pub const PORTAL_PATH: &str = "/portal";
/// The hidden field every form carries.
pub const CSRF_FIELD: &str = "_csrf";

/// A signed-in user, acting in one account.
pub struct Session {
    pub p: Principal,
    pub user: UserRow,
    /// `None`: no role in this account.
    pub role: Option<Role>,
    pub account: AccountRow,
    pub accounts: Vec<AccountRow>,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The SHA-256 of the session, which sign-out ends.
    pub session_hash: [u8; 32],
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached us over TLS (through a proxy that says so):
/// cookies are then marked `Secure`.
pub fn is_tls(headers: &HeaderMap) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    header("x-forwarded-proto").is_some_and(|v| v.split(',').next().map(str::trim) == Some("https"))
        || header("forwarded").is_some_and(|v| v.contains("proto=https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, and Secure over TLS.
pub fn set_cookie(name: &str, value: &str, path: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str, path: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text = format!("{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token of a session: a one-way function of the session token,
/// which a cross-site page can neither read nor guess. Nothing to store,
/// and it ends with the session.
pub fn csrf_for(token: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"armor portal csrf v1\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Constant-time comparison of a sent token with the expected one.
pub fn same(sent: Option<&str>, expected: &str) -> bool {
    sent.is_some_and(|s| !s.is_empty() && bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
}

/// To the sign-in page, dropping a stale session cookie.
fn to_login(parts: &Parts) -> Response {
    let mut resp = Redirect::to("/portal/login").into_response();
    if cookie(&parts.headers, SESSION_COOKIE).is_some() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            clear_cookie(SESSION_COOKIE, PORTAL_PATH, is_tls(&parts.headers)),
        );
    }
    resp
}

impl Session {
    /// Resolves the session cookie's value: it must be a live portal
    /// session (an FH-AUTH token is not one), the user active, and the
    /// account one they belong to.
    pub async fn resolve(
        core: &AppState,
        token: &str,
        account: Option<&str>,
    ) -> Result<Session, Error> {
        let (user_id, session_hash) = core.sessions.authenticate_session(token).await?;
        let SessionView {
            p,
            user,
            role,
            account,
            accounts,
        } = core
            .access
            .session_view(user_id, session_hash, account)
            .await?;
        Ok(Session {
            p,
            user,
            role,
            account,
            accounts,
            csrf: csrf_for(token),
            session_hash,
        })
    }

    /// Whether a form's CSRF field matches this session.
    pub fn csrf_ok(&self, sent: Option<&str>) -> bool {
        same(sent, &self.csrf)
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, core: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        let account = cookie(&parts.headers, ACCOUNT_COOKIE);
        match Session::resolve(core, &token, account.as_deref()).await {
            Ok(s) => Ok(s),
            Err(Error::InvalidToken | Error::InvalidAccountContext) => Err(to_login(parts)),
            Err(e) => Err(super::error_page(&e)),
        }
    }
}

/// A form post from a signed-in user whose CSRF field matches the session;
/// anything else is refused with 403 before the handler runs.
pub struct CsrfForm<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;
    async fn from_request(req: Request, core: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, core).await?;
        let bytes = crate::web::auth::read_body(body, core.config.max_body)
            .await
            .map_err(|e| super::error_page(&e))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let sent = pairs
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.as_str());
        if !session.csrf_ok(sent) {
            return Err(csrf_refused());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            super::message(
                StatusCode::BAD_REQUEST,
                "Invalid form",
                &format!("The form could not be read: {e}."),
            )
        })?;
        Ok(CsrfForm { session, form })
    }
}

/// 403 for a form post without the right CSRF token.
pub fn csrf_refused() -> Response {
    super::message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form was not sent from the portal page it belongs to (its security token is missing or wrong). Go back, reload the page and try again.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; armor_session=tok"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "armor"), None);
    }

    #[test]
    fn cookie_flags() {
        let plain = set_cookie(SESSION_COOKIE, "t", "/", false);
        assert_eq!(plain, "armor_session=t; Path=/; HttpOnly; SameSite=Strict");
        let tls = set_cookie(SESSION_COOKIE, "t", "/", true);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(is_tls(&h));
        assert!(!is_tls(&HeaderMap::new()));
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_whole() {
        let a = csrf_for("token-a");
        assert_ne!(a, csrf_for("token-b"));
        assert_ne!(a, hex::encode(crate::crypto::token_hash("token-a")));
        assert!(same(Some(&a), &a));
        assert!(!same(Some(&a[..10]), &a));
        assert!(!same(Some(""), ""));
        assert!(!same(None, &a));
    }
}
