//! The gateway: ARMOR-PSK (or a password token) in front of any HTTP
//! service. Requests that match none of armor's own routes are verified in
//! front of the handlers like any other, then forwarded to the upstream with
//! the caller's identity in `X-Armor-*` headers; configured public paths are
//! forwarded without authentication.
//!
//! - Target: the path and query exactly as received (not the case-folded
//!   form the route table matches), appended to the upstream's base path.
//! - Body: a signed body had to be read in full to be verified, so the
//!   upstream receives exactly the verified bytes. Other bodies (password
//!   callers, public paths) stream, under the same size limit.
//! - Response: streamed back as it arrives, hop-by-hop headers removed.
//! - Failures: upstream unreachable → 502 `upstream_unavailable`, no answer
//!   head within the timeout → 504 `upstream_timeout`, both problem+json.
//! - Rate limits: a token bucket per API key (default, per role, per key).
//! - Connections: HTTP/1.1 keep-alive, reused while idle for up to 30 s
//!   (see `Pool`); the request's own header map is scrubbed in place and
//!   written out from there, so a forwarded request copies no more than it
//!   adds.
//!
//! Modules: `config` (what the command line sets), `forward` (one request
//! out and its answer back), `headers` (what is scrubbed and added, both
//! ways), `pool` (upstream connections), `h1` (the HTTP/1.1 client on
//! them), `limits` (token buckets per API key, on [`crate::limit`]). The gateway knows nothing of the web layer:
//! the front hands it the caller's principal, and which paths are armor's
//! own routes is a predicate given at start-up; refusals become responses
//! through one function (`refusal`).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::HeaderValue;
use axum::http::{uri, Uri};
use axum::response::{IntoResponse, Response};

mod config;
mod forward;
mod h1;
mod headers;
mod limits;
mod pool;

pub use config::{parse_named_rate, parse_net, GatewayConfig, IpNet, Rate};

use crate::conn::Sender;
use crate::core::{Core, Principal};
use crate::error::Error;
use crate::limit::RateLimiter;
use pool::Pool;

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

/// The running gateway: connection pool, settings and rate-limit buckets.
pub struct Gateway {
    authority: uri::Authority,
    base_path: String,
    host: HeaderValue,
    config: GatewayConfig,
    pool: Arc<Pool>,
    buckets: RateLimiter<String>,
    /// Whether a path (as received) is one of armor's own routes.
    own_route: fn(&str) -> bool,
    /// Counters shared by every node (Redis), for rate limits that hold
    /// across them (`gateway/limits.rs`); `None` on one node.
    counters: Option<Arc<dyn crate::ports::Counters>>,
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
    /// `own_route` tells armor's own routes (never public, never
    /// forwarded) from the upstream's.
    pub fn new(config: GatewayConfig, own_route: fn(&str) -> bool) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("--upstream {}: {why}", config.upstream));
        let uri: Uri = config
            .upstream
            .parse()
            .map_err(|_| bad("not a valid URL"))?;
        let scheme = uri.scheme().ok_or_else(|| bad("needs http://"))?;
        if *scheme != uri::Scheme::HTTP {
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
        let pool = Arc::new(Pool::new(&authority));
        Ok(Gateway {
            authority,
            base_path,
            host,
            config,
            pool,
            buckets: RateLimiter::default(),
            own_route,
            counters: None,
        })
    }

    /// Rate limits also count in `counters`, shared by every node.
    pub fn with_counters(mut self, counters: Option<Arc<dyn crate::ports::Counters>>) -> Self {
        self.counters = counters;
        self
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether `path` (as received) is under a public prefix and not one of
    /// armor's own routes.
    pub fn is_public(&self, path: &str) -> bool {
        self.config.public_paths.iter().any(|p| under(path, p)) && !(self.own_route)(path)
    }

    /// Forwards an authenticated request: 401 for anonymous callers
    /// (`principal` is `None`), then the rate limit, then the upstream.
    /// `made_id`: see [`Gateway::forward`].
    pub async fn handle(
        &self,
        core: &Core,
        principal: Option<Principal>,
        sender: Sender,
        made_id: Option<&[u8]>,
        req: Request,
    ) -> Response {
        let Some(principal) = principal else {
            return refusal(armor_psk::Error::MissingAuthorization.into());
        };
        if let Err(e) = self.rate_limit(core, &principal).await {
            return refusal(e);
        }
        self.forward(req, Some(&principal), sender, made_id, core.config.max_body)
            .await
    }
}

/// The gateway's refusals as responses (the API's error body; problem+json
/// for the upstream's failures): the one way it uses the web layer.
fn refusal(e: Error) -> Response {
    crate::web::error::ApiError(e).into_response()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;

    use super::*;

    #[test]
    fn named_rates_parse() {
        assert_eq!(
            parse_named_rate("Account Owner=1:2").unwrap().0,
            "Account Owner"
        );
        assert!(parse_named_rate("=1:2").is_err());
    }

    #[test]
    fn public_prefixes() {
        assert!(under("/public", "/public"));
        assert!(under("/public/x", "/public"));
        assert!(!under("/publicity", "/public"));
        assert!(under("/static/a.css", "/static/"));
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
        let resp = gw.forward(req, None, Sender::default(), None, 1024).await;
        assert_eq!(resp.status(), 200);
        assert!(!resp.headers().contains_key("connection"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn upstream_connections_are_kept_and_closed_ones_replaced() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = raw_upstream(false).await;
        let gw = Gateway::new(GatewayConfig::new(url), |_| false).unwrap();
        for _ in 0..5 {
            get_ok(&gw).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Closed by the upstream after each answer: not reused.
        let (url, accepted) = raw_upstream(true).await;
        let gw = Gateway::new(GatewayConfig::new(url), |_| false).unwrap();
        for _ in 0..5 {
            get_ok(&gw).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }
}
