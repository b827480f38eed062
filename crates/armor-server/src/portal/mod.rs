//! The management portal: the vendor's portal walkthrough in a browser, served by
//! `armor serve` at `/` and `/portal/...`.
//!
//! Server-rendered HTML ([`maud`]), one stylesheet and one small script
//! embedded in the binary, no inline script or style, and a strict
//! Content-Security-Policy on every answer.
//!
//! - Sessions are their own credential, not FH-AUTH tokens: signing in
//!   runs [`Sessions::authorize`] and [`Sessions::open_session`] and keeps the
//!   session in the `armor_session` cookie (HttpOnly, SameSite=Strict,
//!   `Path=/portal`, Secure behind TLS). The API refuses it in
//!   `Authorization`, and the portal refuses an FH-AUTH token as a cookie.
//! - Every form post carries a CSRF token derived from the session token
//!   ([`session::CsrfForm`]); the sign-in form uses a double-submit cookie.
//! - The API's authentication in front of the handlers skips these paths
//!   (`web::is_public`): the portal authenticates with its own cookie, and
//!   ignores an `Authorization` header.
//!
//! [`Sessions::authorize`]: crate::core::sessions::Sessions::authorize
//! [`Sessions::open_session`]: crate::core::sessions::Sessions::open_session

mod account;
mod audit;
mod keyform;
mod keypage;
mod keys;
mod layout;
mod login;
mod session;
mod usage;
mod users;

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;
use maud::Markup;

use crate::error::Error;
use crate::web::AppState;

/// Every portal answer's Content-Security-Policy: nothing inline, nothing
/// from elsewhere, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

const CSS: &str = include_str!("static/portal.css");
const JS: &str = include_str!("static/portal.js");
const LOGO: &str = include_str!("static/logo.svg");

/// The portal's routes (a `Router<AppState>`, which the front layer hands
/// what no route of the API table matches).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/portal", get(root))
        .route("/portal/login", get(login::form).post(login::submit))
        .route("/portal/logout", post(login::logout))
        .route("/portal/account", get(account::page).post(account::switch))
        .route("/portal/users", get(users::page).post(users::invite))
        .route("/portal/users/{id}/{action}", post(users::action))
        .route("/portal/keys", get(keys::page).post(keys::create))
        .route("/portal/keys/new", get(keys::new_form))
        .route("/portal/keys/{id}", get(keypage::page))
        .route("/portal/keys/{id}/roll", post(keypage::roll))
        .route(
            "/portal/keys/{id}/delete",
            get(keys::confirm_delete).post(keys::delete),
        )
        .route("/portal/audit", get(audit::page))
        .route("/portal/static/{file}", get(static_file))
        .route("/portal/{*rest}", any(not_found))
        .layer(middleware::map_response(security_headers))
}

async fn root() -> Redirect {
    // The keys page sends a visitor without a session on to sign in.
    Redirect::to("/portal/keys")
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A short digest of the embedded assets, appended to their URLs so a
/// year-long cache never serves an old stylesheet.
pub fn asset_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [CSS, JS, LOGO] {
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    })
}

async fn static_file(Path(file): Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "portal.css" => (CSS, "text/css; charset=utf-8"),
        "portal.js" => (JS, "text/javascript; charset=utf-8"),
        "logo.svg" => (LOGO, "image/svg+xml"),
        _ => return not_found().await,
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no portal page at this address.",
    )
}

/// An HTML answer.
fn html(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// A page with a title and one sentence, outside the signed-in layout.
fn message(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, layout::message(title, text))
}

/// Unix seconds as `2026-11-23 10:33 UTC`.
fn when(secs: i64) -> String {
    let text = crate::clock::rfc3339(secs.max(0) as u64);
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// An error as a page: the API's status and message, with the detail when
/// it helps (a permission's name, what was wrong with the input).
fn error_page(e: &Error) -> Response {
    let (status, _, text) = crate::web::error::classify(e);
    let detail = match e {
        Error::PermissionDenied(perm) => {
            format!("You do not have the permission {perm}: ask an account administrator to change your role.")
        }
        Error::BadRequest(d) | Error::Conflict(d) => d.clone(),
        Error::NotFound(what) => format!("The {what} was not found (it may have been deleted)."),
        Error::Internal(d) | Error::Config(d) => {
            tracing::error!(error = %d, "portal: internal error");
            text.to_owned()
        }
        _ => text.to_owned(),
    };
    message(status, text, &detail)
}
