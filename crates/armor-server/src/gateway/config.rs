//! What `armor serve --upstream ...` configures, and the parsers of its
//! command-line values.

use std::collections::HashMap;
use std::time::Duration;

pub use crate::limit::Rate;
pub use ipnet::IpNet;

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
