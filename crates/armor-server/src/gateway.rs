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

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{uri, Uri, Version};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

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
        }
    }
}

/// The original request target, stashed before the router case-folds it.
#[derive(Debug, Clone)]
pub struct OriginalTarget(pub Uri);

/// The running gateway: client, settings and rate-limit buckets.
pub struct Gateway {
    scheme: uri::Scheme,
    authority: uri::Authority,
    base_path: String,
    host: HeaderValue,
    config: GatewayConfig,
    client: Client<HttpConnector, Body>,
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
    /// Checks the configuration and builds the client.
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Gateway {
            scheme,
            authority,
            base_path,
            host,
            config,
            client,
            buckets: DashMap::new(),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether `path` (as received) is under a public prefix and not one of
    /// armor's own routes.
    pub fn is_public(&self, path: &str) -> bool {
        self.config.public_paths.iter().any(|p| under(path, p)) && !is_armor_route(path)
    }

    /// Forwards an authenticated request: 401 for anonymous callers, then
    /// the rate limit, then the upstream.
    pub async fn handle(&self, core: &Core, req: Request) -> Response {
        let principal = match req.extensions().get::<crate::web::auth::Auth>() {
            Some(crate::web::auth::Auth::Principal(p)) => p.clone(),
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
            if let Some(role) = core.store.role_in(p.user_id, p.account_id).await? {
                rate = self.config.role_rate_limits.get(&role).copied();
            }
        }
        let Some(rate) = rate.or(self.config.rate_limit) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut bucket = self
            .buckets
            .entry(key_id.clone())
            .or_insert_with(|| Bucket {
                tokens: f64::from(rate.burst),
                last: now,
            });
        bucket.take(rate, now).map_err(|wait| Error::RateLimited {
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
        let (parts, body) = req.into_parts();
        let original = parts
            .extensions
            .get::<OriginalTarget>()
            .map(|t| t.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let pq = original
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let target = uri::PathAndQuery::try_from(format!("{}{pq}", self.base_path))
            .map_err(|_| Error::MalformedTarget("unparseable path"))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|e| Error::Internal(format!("upstream URI: {e}")))?;

        let mut headers = parts.headers;
        let original_host = headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut headers);
        for name in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ] {
            headers.remove(name);
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-armor-"))
            .cloned()
            .collect();
        for k in spoofed {
            headers.remove(k);
        }
        headers.insert(header::HOST, self.host.clone());
        if let Some(h) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), h);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>()
        {
            let xff = HeaderName::from_static("x-forwarded-for");
            let prior = headers
                .get(&xff)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{v}, "))
                .unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&format!("{prior}{}", addr.ip())) {
                headers.insert(xff, v);
            }
        }
        if let Some(p) = principal {
            identity_headers(&mut headers, p);
        }

        let mut out =
            axum::http::Request::new(Body::new(http_body_util::Limited::new(body, max_body)));
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;

        let resp = match tokio::time::timeout(self.config.timeout, self.client.request(out)).await {
            Err(_) => return Err(Error::UpstreamTimeout(self.config.timeout.as_secs())),
            Ok(Err(e)) => {
                if source_is::<http_body_util::LengthLimitError>(&e) {
                    return Err(Error::BodyTooLarge(max_body));
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
        Ok(Response::from_parts(rparts, Body::new(rbody)))
    }
}

/// `X-Armor-*` headers naming the verified caller.
fn identity_headers(headers: &mut HeaderMap, p: &Principal) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put(USER_ID, p.user_id.to_string());
    put(ACCOUNT_ID, p.account_id.to_string());
    match &p.via {
        Via::ApiKey { key_id } => {
            put(KEY_ID, key_id.clone());
            put(AUTH_METHOD, "ARMOR-PSK".into());
        }
        Via::Password { .. } => put(AUTH_METHOD, "FH-AUTH".into()),
    }
    put(PERMISSIONS, p.permissions.join(","));
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
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

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }
}
