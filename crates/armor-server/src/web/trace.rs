//! Request tracing: one `request` span per request, outside everything
//! else, with
//!
//! - `id`: the request id, taken from `X-Request-Id` when it is well formed
//!   (1 to 64 characters of `A-Z a-z 0-9 . _ -`, one such header), else 32
//!   random hex digits; always echoed in the response's `X-Request-Id`, and
//!   handed on ([`MadeId`]) so the gateway's upstream sees the same id;
//! - `method`, `route` (the route template from [`super::ROUTES`], `/portal/*`
//!   for the portal, `*` for anything else: a 404 or the gateway's upstream);
//! - `caller` (`anonymous`, `password` or `api-key`, recorded by the front
//!   layer once the caller is known: [`record_caller`]) and `key_id` (the key
//!   id an ARMOR-PSK header names, verified or not, when it has a key id's
//!   shape; never the signature);
//! - `status`, `latency_us` (until the response head is ready) and, for a
//!   refusal, `error`: the code [`super::error`] attached as an [`ErrorCode`]
//!   response extension.
//!
//! The span is at `debug`: with `RUST_LOG=debug` (or finer) every request
//! gets it, a refusal is logged in it at `info` ("refused") and any other
//! answer at `debug` ("answered"). At the default `info` there is no span:
//! only a refusal is logged, at `info`, with the same fields but `caller`,
//! worked out only for it. At `warn` (as the benchmarks run) nothing here
//! formats or allocates beyond the request id itself.

use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use tracing::field::{display, Empty};
use tracing::Instrument as _;

use crate::core::Via;
use crate::web::auth::Auth;

/// The request id's header, read from the request and set on the response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client.
pub const MAX_REQUEST_ID: usize = 64;

/// The stable `error` code of a refused request, put in the response's
/// extensions by [`super::error::ApiError`]'s `IntoResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// A request id made here: 32 hex digits, not in the request's headers
/// (the gateway adds it to what it forwards).
#[derive(Clone, Copy)]
pub struct MadeId([u8; 32]);

impl MadeId {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The tracing layer: outermost, around the front layer (`next`), which
/// is handed the id made for the request when it had none of its own.
///
/// Every request's future holds this one, so `next`'s future is held in
/// place once: an instrumented second copy is boxed.
pub async fn layer<F, Fut>(mut req: Request, next: F) -> Response
where
    F: FnOnce(Request, Option<MadeId>) -> Fut,
    Fut: Future<Output = Response>,
{
    let (id, made) = request_id(&mut req);
    let span = tracing::debug_span!(
        "request",
        id = Empty,
        method = Empty,
        route = Empty,
        caller = Empty,
        key_id = Empty,
        status = Empty,
        latency_us = Empty,
        error = Empty,
    );
    // Below `debug` (the default `info`, or `warn`) there is no span: a
    // refusal is still logged at `info` with the span's fields, worked
    // out only then from shared handles on the received bytes (no copy).
    // The clock is read only for a line that may be written.
    let log = if !span.is_disabled() {
        span.record("id", display(id.to_str().unwrap_or("-")));
        span.record("method", display(req.method().as_str()));
        span.record("route", display(route_of(req.method(), req.uri().path())));
        if let Some(key_id) = claimed_key_id(&req) {
            span.record("key_id", display(key_id));
        }
        Log::Span(Instant::now())
    } else if tracing::enabled!(tracing::Level::INFO) {
        Log::Refusals(Kept {
            method: req.method().clone(),
            uri: req.uri().clone(),
            auth: req.headers().get(header::AUTHORIZATION).cloned(),
            start: Instant::now(),
        })
    } else {
        Log::Off
    };
    let mut resp = if let Log::Span(_) = log {
        // Boxed: the instrumented copy then takes 8 bytes of the state
        // beside the plain one, and it costs an allocation only at `debug`.
        Box::pin(next(req, made).instrument(span.clone())).await
    } else {
        next(req, made).await
    };
    let refused = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    match log {
        Log::Span(start) => {
            span.record("status", resp.status().as_u16());
            span.record("latency_us", micros_since(start));
            if let Some(code) = refused {
                span.record("error", display(code));
            }
            span.in_scope(|| match refused {
                Some(_) => tracing::info!("refused"),
                None => tracing::debug!("answered"),
            });
        }
        Log::Refusals(k) => {
            if let Some(code) = refused {
                tracing::info!(
                    id = %id.to_str().unwrap_or("-"),
                    method = %k.method,
                    route = %route_of(&k.method, k.uri.path()),
                    key_id = %k.auth.as_ref().and_then(key_id_of).unwrap_or("-"),
                    status = resp.status().as_u16(),
                    latency_us = micros_since(k.start),
                    error = %code,
                    "refused"
                );
            }
        }
        Log::Off => {}
    }
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

/// What the layer writes of a request: its span (from `start`), only its
/// refusal, or nothing.
enum Log {
    Span(Instant),
    Refusals(Kept),
    Off,
}

/// What a refusal's log line needs of its request when there is no span.
struct Kept {
    method: Method,
    uri: axum::http::Uri,
    auth: Option<HeaderValue>,
    start: Instant,
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Records the caller's kind on the current request span (a no-op when it
/// is disabled). Called by the front layer once the caller is known.
pub fn record_caller(caller: &Auth) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let kind = match caller {
        Auth::Principal(p) => match p.via {
            Via::Password { .. } => "password",
            Via::ApiKey { .. } => "api-key",
        },
        _ => "anonymous",
    };
    span.record("caller", display(kind));
}

/// Whether a client's request id is accepted as it is.
pub fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's id: its own when there is exactly one well-formed
/// `X-Request-Id`, else a fresh one ([`MadeId`]), which replaces whatever
/// was sent: that is taken out of the request's headers.
fn request_id(req: &mut Request) -> (HeaderValue, Option<MadeId>) {
    let mut sent = req.headers().get_all(&X_REQUEST_ID).iter();
    match (sent.next(), sent.next()) {
        (Some(v), None) if well_formed(v.as_bytes()) => return (v.clone(), None),
        (None, _) => {}
        _ => {
            req.headers_mut().remove(X_REQUEST_ID);
        }
    }
    let made = generate();
    let id = HeaderValue::from_bytes(made.as_bytes()).unwrap_or(HeaderValue::from_static("-"));
    (id, Some(made))
}

/// 128 random bits as 32 lowercase hex digits.
fn generate() -> MadeId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    MadeId(buf)
}

/// The key id an `ARMOR-PSK keyId:signature:nonce:timestamp` header names,
/// if it looks like one (armor's are UUIDs: hex digits and dashes, at most
/// 64 here): only the part before the first colon is read. Anything else is
/// left out of the log, so a Secret Key sent in the key id's place (its
/// `apsk_` prefix is not hex) is never logged.
fn claimed_key_id(req: &Request) -> Option<&str> {
    key_id_of(req.headers().get(header::AUTHORIZATION)?)
}

/// The key id an `Authorization: ARMOR-PSK` value names, when it has a key
/// id's shape (so a secret sent in its place is never logged).
fn key_id_of(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("ARMOR-PSK") {
        return None;
    }
    let (key_id, _) = rest.trim_start().split_once(':')?;
    let looks_like_one = (1..=MAX_REQUEST_ID).contains(&key_id.len())
        && key_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    looks_like_one.then_some(key_id)
}

/// The route template a request is for, matched as the front layer
/// dispatches (ignoring case and a trailing slash; `HEAD` as `GET`).
fn route_of(method: &Method, path: &str) -> &'static str {
    let mut buf = [0u8; 128];
    let routed = super::path::routing_form_in(path, &mut buf);
    if routed == "/" {
        return "/";
    }
    if super::is_portal(&routed) {
        return "/portal/*";
    }
    match super::routes::find(method, &routed) {
        super::routes::Found::Route(route, _) => route.path,
        _ => "*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_accepted_and_refused() {
        assert!(well_formed(b"abc-123_X.y"));
        assert!(well_formed(&[b'a'; 64]));
        assert!(!well_formed(&[b'a'; 65]));
        for bad in [&b""[..], b"a b", b"a\"b", b"a\\b", b"x:y", "é".as_bytes()] {
            assert!(!well_formed(bad), "{bad:?}");
        }
        let g = generate();
        assert_eq!(g.as_bytes().len(), 32);
        assert!(well_formed(g.as_bytes()));
        assert_ne!(g.as_bytes(), generate().as_bytes());
        // A client's id is kept when it is one well-formed header; any
        // other is taken out of the request and replaced by a made one.
        let req = |ids: &[&str]| {
            let mut b = Request::builder();
            for id in ids {
                b = b.header(X_REQUEST_ID, *id);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        let mut r = req(&["abc-1"]);
        let (id, made) = request_id(&mut r);
        assert_eq!((id.as_bytes(), made.is_none()), (&b"abc-1"[..], true));
        assert_eq!(r.headers()[X_REQUEST_ID], "abc-1");
        for ids in [&[][..], &["a b"], &["a", "b"]] {
            let mut r = req(ids);
            let (id, made) = request_id(&mut r);
            assert_eq!(id.as_bytes(), made.unwrap().as_bytes(), "{ids:?}");
            assert!(!r.headers().contains_key(X_REQUEST_ID), "{ids:?}");
        }
    }

    #[test]
    fn routes_are_named_by_their_template() {
        let get = Method::GET;
        assert_eq!(route_of(&get, "/auth/whoami"), "/auth/whoami");
        assert_eq!(route_of(&get, "/AUTH/WhoAmI/"), "/auth/whoami");
        assert_eq!(route_of(&Method::HEAD, "/ping"), "/ping");
        assert_eq!(route_of(&get, "/users/7/keys"), "/users/{id}/keys");
        assert_eq!(
            route_of(&Method::DELETE, "/users/7/keys/abc"),
            "/users/{id}/keys/{key}"
        );
        assert_eq!(route_of(&Method::POST, "/users/"), "/users/");
        assert_eq!(route_of(&get, "/portal"), "/portal/*");
        assert_eq!(route_of(&get, "/portal/keys"), "/portal/*");
        assert_eq!(route_of(&get, "/portalx"), "*");
        assert_eq!(route_of(&get, "/"), "/");
        assert_eq!(route_of(&get, "/nothing/here"), "*");
        assert_eq!(route_of(&get, "/users//keys"), "*");
        assert_eq!(route_of(&get, "/me//"), "*");
        // The route dispatched, not another of the same shape.
        assert_eq!(route_of(&Method::PUT, "/users/status"), "*");
        assert_eq!(route_of(&Method::PUT, "/users/7"), "/users/{id}");
    }

    #[test]
    fn only_the_key_id_of_an_armor_psk_header_is_read() {
        let req = |auth: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, auth)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let id = "0f8e2c1a-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
        let r = req(&format!("ARMOR-PSK {id}:c2lnbmF0dXJl:nonce:1700000000"));
        assert_eq!(claimed_key_id(&r), Some(id));
        let r = req(&format!("armor-psk  {id}:sig:n:1"));
        assert_eq!(claimed_key_id(&r), Some(id));
        assert_eq!(claimed_key_id(&req("FH-AUTH token")), None);
        assert_eq!(claimed_key_id(&req(&format!("ARMOR-PSK {id}"))), None);
        assert_eq!(claimed_key_id(&req("ARMOR-PSK a b:sig:n:1")), None);
        // A secret in the key id's place is not taken for one.
        let r = req("ARMOR-PSK apsk_Zm9vYmFyYmF6cXV4:sig:n:1");
        assert_eq!(claimed_key_id(&r), None);
    }
}
