//! HTTP: the front layer (canonical target, body limit, authentication,
//! case-insensitive routing) and the handlers.
//!
//! [`ROUTES`] is the route table: the front layer dispatches every API
//! request on it, it declares each route's policy (which the handler's
//! extractors, [`auth::Caller`], [`auth::PasswordCaller`],
//! [`auth::NoApiKey`], enforce), and it generates `/openapi.json`. The
//! portal's pages are an axum router of their own, behind it.

pub mod auth;
pub mod error;
pub mod front;
pub mod handlers;
pub mod openapi;
pub mod path;
pub mod routes;
pub mod schema;
pub mod trace;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;

use crate::conn::client::Client;
use crate::conn::{PeerInfo, Sender};
use crate::core::Core;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::limit::AuthFailureLimiter;
use error::ApiError;
use routes::Found;
pub use routes::{is_armor_route, Path, Policy, Reply, Route, ROUTES};

/// The shared state: the portal's and the metrics listener's handlers'
/// state, and the core of a route handler's ([`auth::RouteState`]).
pub type AppState = Arc<Core>;

/// What the front layer hands a request none of [`ROUTES`] takes: the
/// portal's pages, and 404 for the rest.
fn portal_router(core: AppState) -> Router {
    crate::portal::router()
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(core)
}

/// The whole application as one service, for calls in process
/// (`oneshot`): the front service ([`front::App`]) without a connection.
/// `with_metrics`: serve `/metrics` here (else it answers 404, being
/// served by [`metrics_app`] on a listener of its own).
/// With a gateway, requests for none of armor's routes go to its
/// upstream; with a limiter, refused ARMOR-PSK attempts are counted per key
/// and address. Without a connection, the caller puts the request's
/// sender ([`crate::conn::client::Client`]) in its extensions.
pub fn app(
    core: AppState,
    with_metrics: bool,
    gateway: Option<Arc<Gateway>>,
    limiter: Option<Arc<AuthFailureLimiter>>,
) -> front::Connection {
    front::App::new(core, with_metrics, gateway, limiter, Default::default()).service()
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
async fn front(
    app: &front::Inner,
    peer: Option<PeerInfo>,
    client: Option<Client>,
    made_id: Option<trace::MadeId>,
    mut req: Request,
) -> Response {
    let (core, gateway) = (&app.core, app.gateway.as_ref());
    // Held until the answer is ready (by the gateway, until the answer has
    // streamed out): the connection is busy, not idle.
    let in_flight = match crate::conn::screen(peer.as_ref()) {
        Ok(guard) => guard,
        Err(resp) => return *resp,
    };
    let sender = |in_flight| Sender { client, in_flight };
    // The request id the upstream is sent when the client gave none.
    let made_id = made_id.as_ref().map(trace::MadeId::as_bytes);
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
    // Until its case-folded routing form replaces it below, the request's
    // target is the one received, which the gateway forwards.
    if let Some(gw) = gateway.filter(|g| g.is_public(req.uri().path())) {
        let max = core.config.max_body;
        return Box::pin(gw.forward(req, None, sender(in_flight), made_id, max)).await;
    }
    let mut buf = [0u8; 128];
    let routed = path::routing_form_in(req.uri().path(), &mut buf);
    // With an upstream, `/` is the upstream's; the portal stays at /portal.
    let upstream_root = gateway.filter(|_| routed == "/");
    // The one match of the request against the route table.
    let found = routes::find(req.method(), &routed);
    let caller = if upstream_root.is_none() && is_public(&found, &routed) {
        // Public routes ignore credentials: clients log in again with a
        // stale `Authorization` still on their session.
        auth::Auth::Anonymous
    } else {
        let ip = client.map(|c| c.ip);
        match auth::authenticate(core, app.limiter.as_deref(), ip, &mut req).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal.into_response().await,
        }
    };
    trace::record_caller(&caller);
    if let Some(gw) = upstream_root {
        let principal = caller.into_principal();
        return Box::pin(gw.handle(core, principal, sender(in_flight), made_id, req)).await;
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
    let route = match found {
        Found::Route(route, params) => Some((route, params)),
        Found::OtherMethod(allow) => {
            let mut resp = handlers::method_not_allowed().await.into_response();
            resp.headers_mut().insert(header::ALLOW, allow.clone());
            return resp;
        }
        // The upstream's requests go to the gateway: a path that is none
        // of armor's routes and not the portal's (which takes all of
        // `/portal/...`).
        Found::Nothing => match gateway.filter(|_| !is_portal(&routed)) {
            Some(gw) => {
                let principal = caller.into_principal();
                let forward = gw.handle(core, principal, sender(in_flight), made_id, req);
                return Box::pin(forward).await;
            }
            None => None,
        },
    };
    // To the handler: its extractors read the caller, the sender and the
    // route's `{x}` segments (in the path as routed) from its state; the
    // portal's, the sender from the request's extensions.
    if routed != req.uri().path() {
        let pq = match req.uri().query() {
            Some(q) => format!("{routed}?{q}"),
            None => routed.into_owned(),
        };
        match pq.parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return ApiError(Error::MalformedTarget("unparseable path")).into_response(),
        }
    }
    let Some((route, params)) = route else {
        if let Some(client) = client {
            req.extensions_mut().insert(client);
        }
        return match tower::ServiceExt::oneshot(app.portal.clone(), req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
    };
    if !app.with_metrics && route.path == "/metrics" {
        return handlers::not_found().await.into_response();
    }
    // A `HEAD` gets the `GET` route's answer: hyper sends its head alone,
    // the body's length included.
    let state = auth::RouteState {
        core: core.clone(),
        caller,
        client,
        params,
    };
    (route.call)(req, state).await
}

/// Whether a routing-form path is `/portal` or under it.
pub(super) fn is_portal(routed: &str) -> bool {
    routed
        .strip_prefix("/portal")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a request needs no credential: a public route of `ROUTES`
/// (`found`, the table's answer for its routing-form path), or a portal
/// page, which signs its users in with its own session cookie.
fn is_public(found: &Found, routed: &str) -> bool {
    match found {
        Found::Route(route, _) => route.policy == Policy::Public,
        Found::OtherMethod(_) => false,
        Found::Nothing => routed == "/" || is_portal(routed),
    }
}

/// JSON body extractor whose refusals use the API's error body. A
/// form-encoded body (`application/x-www-form-urlencoded`) is read too, as
/// the vendor's ASP.NET service did.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<auth::RouteState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &auth::RouteState) -> Result<Self, Self::Rejection> {
        let state = &state.core;
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

/// Query-string extractor whose refusals use the API's error body (axum's
/// own answers a bad query with plain text).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(ApiQuery)
            .map_err(|e| ApiError(Error::BadRequest(format!("invalid query: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_portal, is_public};

    #[test]
    fn the_portal_keeps_everything_under_portal_from_the_gateway() {
        for p in [
            "/portal",
            "/portal/",
            "/portal/keys",
            "/portal/no/such/page",
        ] {
            assert!(is_portal(p), "{p}");
        }
        for p in ["/portalx", "/", "/api/portal", "/portal-like"] {
            assert!(!is_portal(p), "{p}");
        }
    }

    #[test]
    fn public_routes_and_the_portal_skip_api_authentication() {
        let public = |method: &str, path: &str| {
            let found = super::routes::find(&method.parse().unwrap(), path);
            is_public(&found, path)
        };
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/portal"),
            ("POST", "/portal/login"),
            ("GET", "/portal/keys/new"),
            ("POST", "/auth/token"),
            ("GET", "/openapi.json"),
            ("GET", "/health"),
            ("HEAD", "/ping"),
        ] {
            assert!(public(method, path), "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/portalx"),
            ("GET", "/me"),
            ("POST", "/health"),
            ("POST", "/users/resetpassword"),
            ("GET", "/users/1/keys"),
            ("PUT", "/ping"),
        ] {
            assert!(!public(method, path), "{method} {path}");
        }
    }
}
