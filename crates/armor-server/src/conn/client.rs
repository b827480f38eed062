//! Who sent a request. The TCP peer, unless it is a trusted proxy
//! (`--trusted-proxy`): then the last address of `X-Forwarded-For` that is
//! not itself a trusted proxy, read from the right. A client can write
//! anything in that header, so only the part the trusted proxies appended
//! is believed: the address each of them saw, up to the first one they
//! did not trust either.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks of proxies in front of armor whose forwarding headers
/// are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// A request's sender, worked out by the front (which hands it to the
/// gateway, or to the handler with the caller: see `web::auth::RouteState`):
/// the TCP peer, whether it is a trusted proxy,
/// and the client address that the per-client rules use (a key's allowed
/// networks, the refused-attempt, login and reset limits, the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub ip: IpAddr,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip.to_canonical()))
    }

    /// The sender of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer_trusted = self.trusts(peer);
        let ip = if peer_trusted {
            self.forwarded_for(peer, headers)
        } else {
            peer
        };
        // An IPv4-mapped address is its IPv4 address, for every rule.
        let ip = ip.to_canonical();
        Client {
            peer,
            peer_trusted,
            ip,
        }
    }

    /// Walks `X-Forwarded-For` (all its lines, in order) from the right:
    /// each trusted address vouches for the one before it. The first
    /// address that is not trusted is the client; an entry that is not an
    /// address stops the walk at the proxy that passed it on.
    fn forwarded_for(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        let lines = headers.get_all("x-forwarded-for").iter().rev();
        for entry in lines.flat_map(|v| v.as_bytes().rsplit(|&b| b == b',')) {
            let Some(ip) = address(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, or an address and port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), an IPv6 address in brackets,
/// spaces around it allowed.
fn address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| bare?.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with_xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let c = t.client(ip("192.0.2.7"), &with_xff(&["198.51.100.1"]));
        assert_eq!(
            c,
            Client {
                peer: ip("192.0.2.7"),
                peer_trusted: false,
                ip: ip("192.0.2.7")
            }
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.1.1.1"), &with_xff(&["198.51.100.1"])).ip,
            ip("10.1.1.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_last_untrusted_address_is_the_client() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer = ip("10.0.0.2");
        // A client's own claim (203.0.113.9) sits left of what it sent from.
        let h = with_xff(&["203.0.113.9, 198.51.100.1", "10.0.0.5"]);
        let c = t.client(peer, &h);
        assert_eq!((c.ip, c.peer_trusted), (ip("198.51.100.1"), true));
        // Ports and spaces; IPv6; IPv4-mapped peers count as IPv4.
        let h = with_xff(&[" 198.51.100.1:4711 ,[2001:db8::1]:80"]);
        assert_eq!(t.client(peer, &h).ip, ip("2001:db8::1"));
        assert_eq!(t.client(ip("::ffff:10.0.0.2"), &h).ip, ip("2001:db8::1"));
        let h = with_xff(&["[2001:db8::2], ::ffff:198.51.100.3"]);
        assert_eq!(t.client(peer, &h).ip, ip("198.51.100.3"), "mapped: as IPv4");
        let h = with_xff(&["[2001:db8::2]"]);
        assert_eq!(t.client(peer, &h).ip, ip("2001:db8::2"));
        // Only trusted hops: the leftmost one.
        assert_eq!(
            t.client(peer, &with_xff(&["10.0.0.9, 10.0.0.5"])).ip,
            ip("10.0.0.9")
        );
        // No header: the proxy itself.
        assert_eq!(t.client(peer, &HeaderMap::new()).ip, peer);
        // Garbage stops the walk at the proxy that passed it on.
        let h = with_xff(&["198.51.100.1, unknown, 10.0.0.5"]);
        assert_eq!(t.client(peer, &h).ip, ip("10.0.0.5"));
        assert_eq!(t.client(peer, &with_xff(&["nonsense"])).ip, peer);
    }
}
