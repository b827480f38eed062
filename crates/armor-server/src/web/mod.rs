//! HTTP: the router, the front layer (canonical target, body limit,
//! authentication, case-insensitive routing) and the handlers.
//!
//! Each route's policy is in its handler's signature ([`auth::Caller`],
//! [`auth::PasswordCaller`], [`auth::NoApiKey`]); [`ROUTES`] lists them all
//! for `/openapi.json` and for the tests that walk it.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod limit;
pub mod openapi;
pub mod path;

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::core::Core;
use crate::error::Error;
use crate::gateway::{self, Gateway};
use error::ApiError;

/// Shared state of every handler.
pub type AppState = Arc<Core>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No credential needed.
    Public,
    /// Any credential: FH-AUTH, Bearer or ARMOR-PSK.
    Caller,
    /// FH-AUTH or Bearer only; API keys get 403 `api_key_not_allowed`.
    PasswordOnly,
    /// Anonymous or password; API keys get 403.
    NoApiKey,
}

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    /// The vendor's spelling; matching ignores case and a trailing slash.
    pub path: &'static str,
    pub policy: Policy,
    pub summary: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    policy: Policy,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        policy,
        summary,
    }
}

use Policy::{Caller as C, NoApiKey as N, PasswordOnly as P, Public as O};

/// Every route the server answers.
pub const ROUTES: &[RouteDoc] = &[
    r(
        "GET",
        "/health",
        O,
        "200 once the store answers, 503 otherwise",
    ),
    r(
        "GET",
        "/ping",
        O,
        "A fixed answer, touching nothing: liveness, and the benchmarks' baseline",
    ),
    r("GET", "/metrics", O, "Prometheus text metrics"),
    r("GET", "/openapi.json", O, "This description"),
    r("GET", "/docs", O, "The API reference, rendered"),
    r(
        "POST",
        "/auth/authorize",
        O,
        "Password login step 1: a single-use code",
    ),
    r(
        "POST",
        "/auth/token",
        O,
        "Password login step 2: an FH-AUTH token",
    ),
    r(
        "POST",
        "/auth/token/reissue",
        O,
        "A fresh token for a valid one, which is revoked; same absolute expiry",
    ),
    r("POST", "/auth/logout", P, "Revoke the caller's token"),
    r(
        "GET",
        "/auth/whoami",
        C,
        "Who the server takes the caller to be, and what it verified",
    ),
    r(
        "POST",
        "/auth/whoami",
        C,
        "As GET, for a request with a body: its length and SHA-256",
    ),
    r(
        "GET",
        "/me",
        C,
        "The caller, their accounts and permissions",
    ),
    r(
        "GET",
        "/permissions",
        C,
        "The caller's permissions in the account",
    ),
    r("GET", "/accounts", C, "Accounts the caller belongs to"),
    r(
        "GET",
        "/accounts/{id}",
        C,
        "One account the caller belongs to",
    ),
    r("GET", "/users", C, "Users of the account (Users Read)"),
    r(
        "GET",
        "/users/{id}",
        C,
        "One user of the account (self, or Users Read)",
    ),
    r(
        "GET",
        "/users/{id}/keys",
        P,
        "List API keys (never the secret)",
    ),
    r(
        "POST",
        "/users/{id}/keys",
        P,
        "Create an API key: the only time the secret is shown",
    ),
    r("PUT", "/users/{id}/keys", P, "Rename an API key"),
    r(
        "DELETE",
        "/users/{id}/keys/{key}",
        P,
        "Delete an API key; it stops working at once",
    ),
    r(
        "GET",
        "/users/{id}/ActivationCode",
        P,
        "A fresh activation code of an invited user, to read out (Users Manage)",
    ),
    r(
        "POST",
        "/users/resetpassword",
        N,
        "Start a password reset by email (same answer for any address)",
    ),
    r(
        "POST",
        "/users/setpassword",
        N,
        "Set a password with an activation or reset code (single-use)",
    ),
    r(
        "PUT",
        "/users/{id}",
        P,
        "Edit a user's names, email and role (Users Manage; names: self)",
    ),
    r(
        "POST",
        "/users/status",
        P,
        "Enable or disable a user (Users Manage)",
    ),
    r(
        "POST",
        "/users/",
        P,
        "Create a user, invited, and send the invitation (Users Manage)",
    ),
    r(
        "POST",
        "/users/{id}/invite",
        P,
        "(Re)send an invitation with a fresh code (Users Manage)",
    ),
    r(
        "GET",
        "/users/LockedOut/{accountId}/{email}",
        P,
        "Whether a login is locked out, and until when (Users Read)",
    ),
    r(
        "POST",
        "/users/unlock/{accountId}/{email}",
        P,
        "Unlock a login (Users Manage)",
    ),
    r(
        "DELETE",
        "/users/softDelete",
        P,
        "Soft-delete a user: keys deleted, tokens revoked (Users Manage)",
    ),
    r(
        "PUT",
        "/usersecurity/challengephrase",
        P,
        "Set one's challenge phrase (another's: Users Manage)",
    ),
    r(
        "GET",
        "/usersecurity/challengephrase/{userId}",
        P,
        "Read a challenge phrase (self, or Users Manage)",
    ),
    r(
        "GET",
        "/usersecurity/securityinformation/{referencekey}",
        P,
        "Read one's security information under a reference key",
    ),
    r(
        "POST",
        "/usersecurity/securityinformation/{referencekey}",
        P,
        "Add security information under a new reference key",
    ),
    r(
        "POST",
        "/usersecurity/securityinformation/existing/{referencekey}",
        P,
        "Update existing security information",
    ),
    r(
        "POST",
        "/usersecurity/securityinformation/{accountId}/{userId}",
        P,
        "A user's security settings; clearSecondFactors resets MFA (Users Manage)",
    ),
    r(
        "POST",
        "/usersecurity/validatemfaphone",
        P,
        "Send a code to a phone number, or verify it: the phone becomes a second factor",
    ),
    r(
        "POST",
        "/usersecurity/validatephoneapppin",
        P,
        "Enrol an authenticator app (TOTP, otpauth URI), or verify its code",
    ),
    r(
        "GET",
        "/auditlog",
        P,
        "The account's audit log, filtered by user, event, since, until; paged by before (Audit Log Read)",
    ),
];

/// The router, with the front layer; testable with `oneshot`.
/// `with_metrics`: serve `/metrics` here (else it answers 404, being
/// served by [`metrics_app`] on a listener of its own).
pub fn app(core: AppState, with_metrics: bool) -> Router {
    use handlers as h;
    let metrics = if with_metrics {
        get(h::metrics)
    } else {
        get(h::not_found)
    };
    let routes = Router::new()
        .route("/health", get(h::health))
        .route("/ping", get(h::ping))
        .route("/metrics", metrics)
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::docs))
        .route("/auth/authorize", post(h::authorize))
        .route("/auth/token", post(h::token))
        .route("/auth/token/reissue", post(h::reissue))
        .route("/auth/logout", post(h::logout))
        .route("/auth/whoami", get(h::whoami).post(h::whoami))
        .route("/me", get(h::me))
        .route("/permissions", get(h::permissions))
        .route("/accounts", get(h::accounts))
        .route("/accounts/{id}", get(h::account))
        .route("/users", get(h::users).post(h::create_user))
        .route("/users/{id}", get(h::user).put(h::update_user))
        .route(
            "/users/{id}/keys",
            get(h::list_keys).post(h::create_key).put(h::rename_key),
        )
        .route("/users/{id}/keys/{key}", delete(h::delete_key))
        .route("/users/{id}/activationcode", get(h::activation_code))
        .route("/users/resetpassword", post(h::reset_password))
        .route("/users/setpassword", post(h::set_password))
        .route("/users/status", post(h::user_status))
        .route("/users/{id}/invite", post(h::invite_user))
        .route("/users/lockedout/{account}/{email}", get(h::locked_out))
        .route("/users/unlock/{account}/{email}", post(h::unlock))
        .route("/users/softdelete", delete(h::soft_delete))
        .route(
            "/usersecurity/challengephrase",
            put(h::set_challenge_phrase),
        )
        .route(
            "/usersecurity/challengephrase/{user}",
            get(h::challenge_phrase),
        )
        .route(
            "/usersecurity/securityinformation/{a}",
            get(h::security_info).post(h::add_security_info),
        )
        .route(
            "/usersecurity/securityinformation/existing/{a}",
            post(h::update_security_info),
        )
        .route(
            "/usersecurity/securityinformation/{a}/{b}",
            post(h::user_security),
        )
        .route(
            "/usersecurity/validatemfaphone",
            post(h::validate_mfa_phone),
        )
        .route(
            "/usersecurity/validatephoneapppin",
            post(h::validate_app_pin),
        )
        .route("/auditlog", get(h::audit_log))
        .merge(crate::portal::router())
        .fallback(fallback)
        .method_not_allowed_fallback(h::method_not_allowed)
        .with_state(core.clone());
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(core, front))
}

/// `/metrics` alone, for a listener of its own (`--metrics-listen`).
pub fn metrics_app(core: AppState) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .with_state(core)
}

/// In front of routing: refuse a non-canonical target (400) or an
/// oversized declared body (413) before anything else, authenticate, then
/// route on the case-folded path.
async fn front(State(core): State<AppState>, mut req: Request, next: Next) -> Response {
    // Held until the answer is ready: the connection is busy, not idle.
    let _in_flight = match crate::conn::screen(&mut req) {
        Ok(guard) => guard,
        Err(resp) => return *resp,
    };
    if let Err(e) = path::check(req.uri().path()) {
        return ApiError(e).into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > core.config.max_body as u64) {
        return ApiError(Error::BodyTooLarge(core.config.max_body)).into_response();
    }
    // The gateway forwards the target exactly as received.
    let gateway = req.extensions().get::<Arc<Gateway>>().cloned();
    if gateway.is_some() {
        let original = gateway::OriginalTarget(req.uri().clone());
        req.extensions_mut().insert(original);
    }
    if let Some(gw) = gateway.as_ref().filter(|g| g.is_public(req.uri().path())) {
        return gw.forward(req, None, core.config.max_body).await;
    }
    let routed = path::routing_form(req.uri().path());
    // With an upstream, `/` is the upstream's; the portal stays at /portal.
    let upstream_root = gateway.as_ref().filter(|_| routed == "/");
    let mut req = if upstream_root.is_none() && is_public(req.method().as_str(), &routed) {
        // Public routes ignore credentials: clients log in again with a
        // stale `Authorization` still on their session.
        auth::anonymous(req)
    } else {
        match auth::authenticate(&core, req).await {
            Ok(req) => req,
            Err(refusal) => return refusal.into_response().await,
        }
    };
    if let Some(gw) = upstream_root {
        return gw.handle(&core, req).await;
    }
    // A declared body on a method whose handlers do not read one (a GET
    // with `Content-Length: 2` and `{}`, as some clients send) is read
    // here: answered before its body had arrived, hyper would close the
    // connection, and the client's next request on it could be lost.
    let unread = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    );
    if unread && declared.is_some_and(|n| n > 0) {
        let (parts, body) = req.into_parts();
        match auth::read_body(body, core.config.max_body).await {
            Ok(bytes) => req = Request::from_parts(parts, axum::body::Body::from(bytes)),
            Err(e) => return ApiError(e).into_response(),
        }
    }
    if routed != req.uri().path() {
        let pq = match req.uri().query() {
            Some(q) => format!("{routed}?{q}"),
            None => routed,
        };
        match pq.parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return ApiError(Error::MalformedTarget("unparseable path")).into_response(),
        }
    }
    next.run(req).await
}

/// Whether `ROUTES` marks this method and routing-form path as public.
fn is_public(method: &str, routed: &str) -> bool {
    // The portal signs its users in with its own session cookie.
    if routed == "/" || routed == "/portal" || routed.starts_with("/portal/") {
        return true;
    }
    ROUTES.iter().any(|r| {
        r.policy == Policy::Public && r.method == method && r.path.eq_ignore_ascii_case(routed)
    })
}

/// Requests that match none of armor's routes: forwarded when a gateway is
/// configured (see [`crate::gateway`]), else 404.
async fn fallback(State(core): State<AppState>, req: Request) -> Response {
    match req.extensions().get::<Arc<Gateway>>().cloned() {
        Some(gw) => gw.handle(&core, req).await,
        None => handlers::not_found().await.into_response(),
    }
}

/// JSON body extractor whose refusals use the API's error body. A
/// form-encoded body (`application/x-www-form-urlencoded`) is read too, as
/// the vendor's ASP.NET service did.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let bytes = auth::read_body(req.into_body(), state.config.max_body).await?;
        if form {
            return serde_urlencoded::from_bytes(&bytes)
                .map(ApiJson)
                .map_err(|e| ApiError(Error::BadRequest(format!("invalid form body: {e}"))));
        }
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError(Error::BadRequest(format!("invalid JSON body: {e}"))))
    }
}
