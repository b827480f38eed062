//! The gateway: ARMOR-PSK (or a password token) in front of any HTTP
//! service. Requests that match none of armor's own routes are verified in
//! front of the router like any other, then forwarded to the upstream with
//! the caller's identity in `X-Armor-*` headers; configured public paths are
//! forwarded without authentication.
//!
//! - Target: the path and query exactly as received (not the case-folded
//!   form the router matches), appended to the upstream's base path.
//! - Body: a signed body had to be read in full to be verified, so the
//!   upstream receives exactly the verified bytes. Other bodies (password
//!   callers, public paths) stream, under the same size limit.
//! - Response: streamed back as it arrives, hop-by-hop headers removed.
//! - Failures: upstream unreachable → 502 `upstream_unavailable`, no answer
//!   head within the timeout → 504 `upstream_timeout`, both problem+json.
//! - Rate limits: a token bucket per API key (default, per role, per key).
//! - Connections: HTTP/1.1 keep-alive, reused while idle for up to 30 s
//!   (see `Pool`); the request's own header map is scrubbed in place and
//!   sent on, so a forwarded request copies no more than it adds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::{uri, Method, Uri, Version};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower::Service as _;

mod headers;

pub use headers::strip_hop_by_hop;
pub use ipnet::IpNet;

use crate::core::{Core, Principal, Via};
use crate::error::Error;
use crate::web::error::ApiError;

/// Header carrying the caller's user id to the upstream.
pub const USER_ID: &str = "x-armor-user-id";
/// The account the request acts in.
pub const ACCOUNT_ID: &str = "x-armor-account-id";
/// The API key that signed the request (absent for password callers).
pub const KEY_ID: &str = "x-armor-key-id";
/// The caller's permission names in that account, comma-separated.
pub const PERMISSIONS: &str = "x-armor-permissions";
/// `ARMOR-PSK` or `FH-AUTH`.
pub const AUTH_METHOD: &str = "x-armor-auth";

/// Requests per second and burst of one token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `RPS:BURST`, e.g. `10:20` or `0.5:1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rps, burst) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected RPS:BURST, e.g. 10:20"))?;
        let per_second: f64 = rps
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: RPS must be a number"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: BURST must be a whole number"))?;
        if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
            return Err(format!("{s:?}: RPS must be above 0 and BURST at least 1"));
        }
        Ok(Rate { per_second, burst })
    }
}

/// `NAME=RPS:BURST` (a role name or a key id, then a [`Rate`]).
pub fn parse_named_rate(s: &str) -> Result<(String, Rate), String> {
    let (name, rate) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=RPS:BURST"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?}: the name is empty"));
    }
    Ok((name.to_owned(), rate.parse()?))
}

/// An address (`192.0.2.7`, a host) or a network (`10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?}: expected an IP address or CIDR, e.g. 10.0.0.0/8"))
}

/// What `armor serve --upstream ...` configures.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `http://host:port` with an optional base path.
    pub upstream: String,
    /// Longest wait for the upstream's answer head (and for connecting).
    pub timeout: Duration,
    /// Path prefixes forwarded without authentication.
    pub public_paths: Vec<String>,
    /// Default bucket for API keys; none: no limit.
    pub rate_limit: Option<Rate>,
    /// Per role name (in the account the request acts in).
    pub role_rate_limits: HashMap<String, Rate>,
    /// Per key id; wins over the role's and the default.
    pub key_rate_limits: HashMap<String, Rate>,
    /// Peers whose `Forwarded` and `X-Forwarded-*` headers are kept (and
    /// appended to); from any other peer they are replaced.
    pub trusted_proxies: Vec<IpNet>,
}

impl GatewayConfig {
    pub fn new(upstream: impl Into<String>) -> Self {
        GatewayConfig {
            upstream: upstream.into(),
            timeout: Duration::from_secs(30),
            public_paths: Vec::new(),
            rate_limit: None,
            role_rate_limits: HashMap::new(),
            key_rate_limits: HashMap::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The original request target, stashed before the router case-folds it.
#[derive(Debug, Clone)]
pub struct OriginalTarget(pub Uri);

/// The running gateway: connection pool, settings and rate-limit buckets.
pub struct Gateway {
    authority: uri::Authority,
    base_path: String,
    host: HeaderValue,
    config: GatewayConfig,
    pool: Arc<Pool>,
    buckets: DashMap<String, Bucket>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.config.upstream)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks the configuration and sets up the connection pool.
    pub fn new(config: GatewayConfig) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("--upstream {}: {why}", config.upstream));
        let uri: Uri = config
            .upstream
            .parse()
            .map_err(|_| bad("not a valid URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("needs http://"))?;
        if scheme != uri::Scheme::HTTP {
            return Err(bad(
                "only http:// upstreams are supported (put TLS in front, or run the upstream on loopback)",
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("needs a host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
        for p in &config.public_paths {
            if !p.starts_with('/') {
                return Err(Error::Config(format!(
                    "--public-path {p:?}: must start with '/'"
                )));
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let mut dst = uri::Parts::default();
        dst.scheme = Some(scheme.clone());
        dst.authority = Some(authority.clone());
        dst.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        let pool = Arc::new(Pool {
            connector,
            dst: Uri::from_parts(dst).map_err(|_| bad("not a valid URL"))?,
            idle: Mutex::new(Vec::new()),
        });
        Ok(Gateway {
            authority,
            base_path,
            host,
            config,
            pool,
            buckets: DashMap::new(),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.config.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Whether `path` (as received) is under a public prefix and not one of
    /// armor's own routes.
    pub fn is_public(&self, path: &str) -> bool {
        self.config.public_paths.iter().any(|p| under(path, p)) && !is_armor_route(path)
    }

    /// Forwards an authenticated request: 401 for anonymous callers, then
    /// the rate limit, then the upstream.
    pub async fn handle(&self, core: &Core, mut req: Request) -> Response {
        // Taken out, not copied: the upstream request carries no extensions.
        let principal = match req.extensions_mut().remove::<crate::web::auth::Auth>() {
            Some(crate::web::auth::Auth::Principal(p)) => p,
            _ => {
                return ApiError(armor_psk::Error::MissingAuthorization.into()).into_response();
            }
        };
        if let Err(e) = self.rate_limit(core, &principal).await {
            return ApiError(e).into_response();
        }
        self.forward(req, Some(&principal), core.config.max_body)
            .await
    }

    /// Takes one token from the caller's bucket (API keys only).
    async fn rate_limit(&self, core: &Core, p: &Principal) -> Result<(), Error> {
        let Via::ApiKey { key_id } = &p.via else {
            return Ok(());
        };
        let mut rate = self.config.key_rate_limits.get(key_id).copied();
        if rate.is_none() && !self.config.role_rate_limits.is_empty() {
            if let Some(role) = core.access.role(p).await? {
                rate = self.config.role_rate_limits.get(role.as_str()).copied();
            }
        }
        let Some(rate) = rate.or(self.config.rate_limit) else {
            return Ok(());
        };
        let now = Instant::now();
        let taken = match self.buckets.get_mut(key_id) {
            Some(mut bucket) => bucket.take(rate, now),
            None => self
                .buckets
                .entry(key_id.clone())
                .or_insert_with(|| Bucket {
                    tokens: f64::from(rate.burst),
                    last: now,
                })
                .take(rate, now),
        };
        taken.map_err(|wait| Error::RateLimited {
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
        })
    }

    /// Sends the request upstream and streams the answer back.
    pub async fn forward(
        &self,
        req: Request,
        principal: Option<&Principal>,
        max_body: usize,
    ) -> Response {
        match self.try_forward(req, principal, max_body).await {
            Ok(resp) => resp,
            Err(e) => ApiError(e).into_response(),
        }
    }

    async fn try_forward(
        &self,
        req: Request,
        principal: Option<&Principal>,
        max_body: usize,
    ) -> Result<Response, Error> {
        let (mut parts, body) = req.into_parts();
        // The request's own head is reused: its header map is scrubbed in
        // place, its target (as received) moved into the upstream URI.
        let original = match parts.extensions.remove::<OriginalTarget>() {
            Some(OriginalTarget(uri)) => uri,
            None => std::mem::take(&mut parts.uri),
        };
        let pq = original.into_parts().path_and_query;
        let target = if self.base_path.is_empty() {
            pq.unwrap_or_else(|| uri::PathAndQuery::from_static("/"))
        } else {
            let pq = pq.as_ref().map(|pq| pq.as_str()).unwrap_or("/");
            uri::PathAndQuery::try_from(format!("{}{pq}", self.base_path))
                .map_err(|_| Error::MalformedTarget("unparseable path"))?
        };
        // The request line: origin-form, or (CONNECT) the upstream's
        // authority, as hyper's pooled client wrote them.
        let uri = if parts.method == Method::CONNECT {
            let mut up = uri::Parts::default();
            up.authority = Some(self.authority.clone());
            Uri::from_parts(up).map_err(|e| Error::Internal(format!("upstream URI: {e}")))?
        } else {
            Uri::from(target)
        };

        let mut headers = parts.headers;
        let original_host = headers.remove(header::HOST);
        strip_hop_by_hop(&mut headers);
        for name in [
            header::CONTENT_LENGTH,
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ] {
            headers.remove(name);
        }
        headers::remove_spoofable(&mut headers);
        headers::remove_armor_cookies(&mut headers);
        headers.insert(header::HOST, self.host.clone());
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trusted = peer.is_some_and(|ip| self.trusts(ip));
        headers::set_forwarding(&mut headers, peer, trusted, original_host);
        // The connection stays busy until the answer has streamed out.
        let busy = crate::conn::busy(&parts.extensions);
        if let Some(p) = principal {
            headers::identity_headers(&mut headers, p);
        }

        // A body of known length within the limit (a verified body, a
        // length the front has checked, none at all) goes as it is; any
        // other is counted as it streams.
        let body = if body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= max_body as u64)
        {
            body
        } else {
            Body::new(http_body_util::Limited::new(body, max_body))
        };
        let mut out = axum::http::Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;

        let resp = match tokio::time::timeout(self.config.timeout, self.pool.send(out)).await {
            Err(_) => return Err(Error::UpstreamTimeout(self.config.timeout.as_secs())),
            Ok(Err(e)) => {
                if source_is::<http_body_util::LengthLimitError>(&e) {
                    return Err(Error::BodyTooLarge(max_body));
                }
                if crate::conn::is_body_timeout(&e) {
                    return Err(Error::RequestTimeout(
                        "the whole body must arrive within the body timeout",
                    ));
                }
                // The client's own body broke off or was malformed (a bad
                // chunk): its fault, not the upstream's.
                if source_is::<axum::Error>(&e) {
                    return Err(Error::BadRequest(
                        "the request body could not be read".into(),
                    ));
                }
                tracing::warn!(error = %chain(&e), connect = e.is_connect(), "upstream request failed");
                return Err(Error::UpstreamUnavailable(
                    "the upstream could not be reached or closed the connection".into(),
                ));
            }
            Ok(Ok(resp)) => resp,
        };
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        headers::remove_armor_set_cookies(&mut rparts.headers);
        let body = Streamed {
            body: rbody,
            _busy: busy,
        };
        Ok(Response::from_parts(rparts, Body::new(body)))
    }
}

/// An upstream's answer body, holding its connection's in-flight mark
/// until it ends or is dropped (boxed once, as the bare body was).
struct Streamed {
    body: Incoming,
    _busy: Option<crate::conn::InFlight>,
}

impl axum::body::HttpBody for Streamed {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Keep-alive HTTP/1.1 connections to the upstream, most recently used
/// last (taken first). What hyper-util's pooled client did for one
/// destination, without its per-request bookkeeping (pool key, checkout
/// race, connection info in every response).
///
/// - A connection is reused only when idle and open; one idle for longer
///   than [`POOL_IDLE_TIMEOUT`] is dropped when found.
/// - A request that a reused connection refused before sending any of it
///   (closed meanwhile by the upstream) is sent again on a new one.
/// - A connection goes back once its answer has been read to the end.
struct Pool {
    connector: HttpConnector,
    /// `http://authority/`, what the connector resolves.
    dst: Uri,
    idle: Mutex<Vec<Idle>>,
}

/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most idle connections kept; past it the oldest is closed, so a burst
/// does not leave its connections open for good.
const POOL_MAX_IDLE: usize = 256;

struct Idle {
    tx: SendRequest<Body>,
    since: std::time::Instant,
}

/// Why the upstream gave no answer head.
#[derive(Debug)]
enum UpstreamError {
    /// No TCP connection.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP exchange failed (handshake, request, answer head).
    Send(hyper::Error),
}

impl UpstreamError {
    fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("client error (Connect)"),
            UpstreamError::Send(_) => f.write_str("client error (SendRequest)"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(&**e),
            UpstreamError::Send(e) => Some(e),
        }
    }
}

impl Pool {
    /// Sends `req` and waits for the answer head.
    async fn send(
        self: &Arc<Self>,
        mut req: axum::http::Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    self.release(tx);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the reused connection had been closed.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Send(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if conn.tx.is_ready() && conn.since.elapsed() <= POOL_IDLE_TIMEOUT {
                return Some(conn.tx);
            }
        }
        None
    }

    /// Back into the pool once idle: now, or when the answer's body has
    /// been read.
    fn release(self: &Arc<Self>, mut tx: SendRequest<Body>) {
        if tx.is_ready() {
            self.put(tx);
        } else if !tx.is_closed() {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.put(tx);
                }
            });
        }
    }

    fn put(&self, tx: SendRequest<Body>) {
        let conn = Idle {
            tx,
            since: std::time::Instant::now(),
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest are at the front: drop those expired, and one past
        // the cap.
        let expired = idle
            .iter()
            .take_while(|c| c.since.elapsed() > POOL_IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() >= POOL_MAX_IDLE {
            idle.remove(0);
        }
        idle.push(conn);
    }

    /// A new connection, ready for a request.
    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(self.dst.clone())
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Send)?;
        let (err_tx, err_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection error: {e:?}");
                let _ = err_tx.send(e);
            }
        });
        match tx.ready().await {
            Ok(()) => Ok(tx),
            // Closed before it was ready: the connection's own error says why.
            Err(e) if e.is_closed() => Err(UpstreamError::Send(err_rx.await.unwrap_or(e))),
            Err(e) => Err(UpstreamError::Send(e)),
        }
    }
}

/// `path` is `prefix` or below it (segment-wise; a prefix ending in `/`
/// matches anything under it).
fn under(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix) || path == prefix.trim_end_matches('/');
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether the router would take `path` as one of armor's own routes
/// (case-insensitive, trailing slash ignored, `{x}` any one segment).
pub fn is_armor_route(path: &str) -> bool {
    let routed = crate::web::path::routing_form(path);
    let segs: Vec<&str> = routed.split('/').collect();
    crate::web::ROUTES.iter().any(|r| {
        let pattern = crate::web::path::routing_form(r.path);
        let pat: Vec<&str> = pattern.split('/').collect();
        pat.len() == segs.len()
            && pat
                .iter()
                .zip(&segs)
                .all(|(p, s)| (p.starts_with('{') && p.ends_with('}') && !s.is_empty()) || p == s)
    })
}

/// One key's token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }
}

fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "10:20".parse::<Rate>(),
            Ok(Rate {
                per_second: 10.0,
                burst: 20
            })
        );
        assert!("0.5:1".parse::<Rate>().is_ok());
        for bad in ["10", "0:1", "1:0", "x:1", "-1:2", "inf:1"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_named_rate("Account Owner=1:2").unwrap().0,
            "Account Owner"
        );
        assert!(parse_named_rate("=1:2").is_err());
    }

    #[test]
    fn buckets_refill() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            last: t0,
        };
        for _ in 0..3 {
            assert!(b.take(rate, t0).is_ok());
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(b.take(rate, t0 + Duration::from_millis(500)).is_ok());
        // Never more than the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.take(rate, later).is_ok());
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn public_prefixes_and_armor_routes() {
        assert!(under("/public", "/public"));
        assert!(under("/public/x", "/public"));
        assert!(!under("/publicity", "/public"));
        assert!(under("/static/a.css", "/static/"));
        assert!(is_armor_route("/me"));
        assert!(is_armor_route("/USERS/12/keys/"));
        assert!(is_armor_route("/users/12/ActivationCode"));
        assert!(!is_armor_route("/users/12/orders"));
        assert!(!is_armor_route("/api/me"));
    }

    /// A raw upstream answering `ok` to each request head; with `close`,
    /// it closes every connection after one answer (still claiming
    /// keep-alive). Returns its URL and the count of connections.
    async fn raw_upstream(close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(k) = s.read(&mut chunk).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn get_ok(gw: &Gateway) {
        use http_body_util::BodyExt;
        let req = axum::http::Request::builder()
            .uri("/x?y")
            .header("host", "a")
            .body(Body::empty())
            .unwrap();
        let resp = gw.forward(req, None, 1024).await;
        assert_eq!(resp.status(), 200);
        assert!(!resp.headers().contains_key("connection"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn upstream_connections_are_kept_and_closed_ones_replaced() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = raw_upstream(false).await;
        let gw = Gateway::new(GatewayConfig::new(url)).unwrap();
        for _ in 0..5 {
            get_ok(&gw).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Closed by the upstream after each answer: not reused.
        let (url, accepted) = raw_upstream(true).await;
        let gw = Gateway::new(GatewayConfig::new(url)).unwrap();
        for _ in 0..5 {
            get_ok(&gw).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }
}
