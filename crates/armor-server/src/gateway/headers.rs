//! What the gateway changes in the headers it forwards, both ways.
//!
//! Toward the upstream, the request's own header map is scrubbed in place:
//! - hop-by-hop headers and those `Connection` names go;
//! - every header whose name holds an `_` goes (as nginx drops them by
//!   default): a CGI/WSGI upstream reads `X_Armor_User_Id` and
//!   `X-Armor-User-Id` alike as `HTTP_X_ARMOR_USER_ID`, so an underscore
//!   spelling could pass for one of the headers below;
//! - every `X-Armor-*` header the caller sent goes, then the verified
//!   caller's are added;
//! - armor's own cookies (`armor_*`) are taken out of `Cookie`;
//! - `Forwarded`, `X-Forwarded-*` and `X-Real-IP` are replaced by what the
//!   gateway saw, unless the peer is a trusted proxy, whose values are kept
//!   and appended to.
//!
//! Toward the client, an upstream's `Set-Cookie` for one of armor's cookies
//! is dropped, so an upstream cannot plant a portal session.
//!
//! What the gateway adds (`Host`, the forwarding and the identity headers)
//! is not put in the map: it is written as header lines into one buffer
//! ([`Added`]) that goes out after the map's own, which spares a map insert
//! and an allocation per header on every forwarded request.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{ACCOUNT_ID, AUTH_METHOD, KEY_ID, PERMISSIONS, USER_ID};
use crate::core::{Principal, Via};

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const USER_ID_HEADER: HeaderName = HeaderName::from_static(USER_ID);
const ACCOUNT_ID_HEADER: HeaderName = HeaderName::from_static(ACCOUNT_ID);
const KEY_ID_HEADER: HeaderName = HeaderName::from_static(KEY_ID);
const PERMISSIONS_HEADER: HeaderName = HeaderName::from_static(PERMISSIONS);
const AUTH_METHOD_HEADER: HeaderName = HeaderName::from_static(AUTH_METHOD);

/// Whether a caller may not send this header on: an `X-Armor-*` name, or
/// any name with an underscore. Names are lowercase in a [`HeaderMap`].
fn spoofable(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    n.contains(&b'_') || n.starts_with(b"x-armor-")
}

/// Removes the headers a caller may not send on (see [`spoofable`]).
pub(super) fn remove_spoofable(headers: &mut HeaderMap) {
    if !headers.keys().any(spoofable) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| spoofable(k)).cloned().collect();
    for k in names {
        headers.remove(k);
    }
}

/// Whether a cookie name is one of armor's (`armor_*`, with or without a
/// `__Host-`/`__Secure-` prefix, in any case). Bytes, not text: a cookie
/// value need not be ASCII.
fn armor_cookie(name: &[u8]) -> bool {
    let name = name.trim_ascii();
    let name = [&b"__Host-"[..], b"__Secure-"]
        .iter()
        .find_map(|p| name.strip_prefix(*p))
        .unwrap_or(name);
    name.get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"armor_"))
}

/// The name of a `name=value` pair.
fn cookie_name(pair: &[u8]) -> &[u8] {
    pair.split(|b| *b == b'=').next().unwrap_or(pair)
}

/// Takes armor's cookies out of the `Cookie` header(s) sent upstream;
/// other cookies pass byte for byte.
pub(super) fn remove_armor_cookies(headers: &mut HeaderMap) {
    let has = |v: &HeaderValue| {
        v.as_bytes()
            .split(|b| *b == b';')
            .any(|c| armor_cookie(cookie_name(c)))
    };
    if !headers.get_all(header::COOKIE).iter().any(has) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for c in v.as_bytes().split(|b| *b == b';') {
            let c = c.trim_ascii();
            if c.is_empty() || armor_cookie(cookie_name(c)) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(c);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Drops an upstream's `Set-Cookie` for any of armor's cookies.
pub(super) fn remove_armor_set_cookies(headers: &mut HeaderMap) {
    let sets = |v: &HeaderValue| armor_cookie(cookie_name(v.as_bytes()));
    if !headers.get_all(header::SET_COOKIE).iter().any(sets) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Headers by which a proxy tells the next hop about the client: only a
/// trusted proxy may send them.
fn claims_forwarding(name: &HeaderName) -> bool {
    const ALIASES: [&str; 8] = [
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "front-end-https",
    ];
    let n = name.as_str();
    n.starts_with("x-forwarded-") || n.starts_with("x-original-") || ALIASES.contains(&n)
}

/// Header lines the gateway adds to a request, as they go on the wire.
pub(super) struct Added(Vec<u8>);

impl Added {
    /// Room for the usual lines (`Host`, four forwarding, five identity).
    pub(super) fn new() -> Self {
        Added(Vec::with_capacity(384))
    }

    /// The lines, each ending in CRLF.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// One line `name: value`, `value` writing the value's bytes; a value
    /// that could not be a header value (a control character) leaves no
    /// line, as building a `HeaderValue` from it would have failed.
    fn line(&mut self, name: &HeaderName, value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.0.len();
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        let from = self.0.len();
        value(&mut self.0);
        if self.0[from..]
            .iter()
            .all(|&b| (b >= 32 && b != 127) || b == b'\t')
        {
            self.0.extend_from_slice(b"\r\n");
        } else {
            self.0.truncate(start);
        }
    }

    pub(super) fn host(&mut self, host: &HeaderValue) {
        self.line(&header::HOST, |v| v.extend_from_slice(host.as_bytes()));
    }
}

/// Sets `Forwarded`, `X-Forwarded-For`, `-Host` and `-Proto` for the
/// upstream. From an untrusted peer, whatever the client sent of these and
/// of every other header claiming to describe the client (see
/// [`claims_forwarding`]) goes first; from a trusted proxy, its values are
/// kept and the peer is appended. The new values go to `out`.
pub(super) fn set_forwarding(
    headers: &mut HeaderMap,
    out: &mut Added,
    peer: Option<IpAddr>,
    trusted: bool,
    host: Option<HeaderValue>,
) {
    if !trusted && headers.keys().any(claims_forwarding) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| claims_forwarding(k))
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
    }
    // From here on the map can hold these names only from a trusted peer:
    // for any other, the pass above took them out, so the map is not asked.
    let mut prior = |name| if trusted { headers.remove(name) } else { None };
    let (prior_for, prior_forwarded) = (prior(X_FORWARDED_FOR), prior(FORWARDED));
    if let Some(ip) = peer {
        forwarded_for(out, prior_for.as_ref(), ip);
    }
    forwarded(out, prior_forwarded.as_ref(), peer, host.as_ref());
    let kept = |name| trusted && headers.contains_key(name);
    if let Some(h) = host {
        if !kept(X_FORWARDED_HOST) {
            out.line(&X_FORWARDED_HOST, |v| v.extend_from_slice(h.as_bytes()));
        }
    }
    if !kept(X_FORWARDED_PROTO) {
        out.line(&X_FORWARDED_PROTO, |v| v.extend_from_slice(b"http"));
    }
}

/// An address as text, without allocating (IPv4 by hand: formatting
/// through `fmt` cost more than the rest of the forwarding headers).
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> Option<&[u8]> {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            n += crate::decimal::decimal(u64::from(octet), &mut buf[n..])?;
        }
        return Some(&buf[..n]);
    }
    let mut w = &mut buf[..];
    write!(w, "{ip}").ok()?;
    let left = w.len();
    Some(&buf[..buf.len() - left])
}

/// `X-Forwarded-For`: the prior value (if text), then the peer's address.
fn forwarded_for(out: &mut Added, prior: Option<&HeaderValue>, ip: IpAddr) {
    let mut buf = [0u8; 64];
    let Some(ip) = ip_text(ip, &mut buf) else {
        return;
    };
    out.line(&X_FORWARDED_FOR, |v| {
        if let Some(prior) = prior.and_then(|v| v.to_str().ok()) {
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(ip);
    });
}

/// `Forwarded` (RFC 7239): the prior value (if text), then
/// `for=…;host="…";proto=http` for this hop.
fn forwarded(
    out: &mut Added,
    prior: Option<&HeaderValue>,
    peer: Option<IpAddr>,
    host: Option<&HeaderValue>,
) {
    out.line(&FORWARDED, |v| {
        if let Some(prior) = prior.and_then(|v| v.to_str().ok()) {
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
        }
        let mut buf = [0u8; 64];
        match peer.and_then(|ip| ip_text(ip, &mut buf).map(|t| (ip, t))) {
            Some((IpAddr::V6(_), t)) => {
                v.extend_from_slice(b"for=\"[");
                v.extend_from_slice(t);
                v.extend_from_slice(b"]\";");
            }
            Some((IpAddr::V4(_), t)) => {
                v.extend_from_slice(b"for=");
                v.extend_from_slice(t);
                v.push(b';');
            }
            None => v.extend_from_slice(b"for=unknown;"),
        }
        // A host that would need escaping is left out rather than escaped.
        if let Some(h) = host.filter(|h| !h.as_bytes().iter().any(|b| matches!(b, b'"' | b'\\'))) {
            v.extend_from_slice(b"host=\"");
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(b"\";");
        }
        v.extend_from_slice(b"proto=http");
    });
}

/// A decimal number, as `fmt` writes it.
fn push_number(v: &mut Vec<u8>, n: i64) {
    if n < 0 {
        v.push(b'-');
    }
    crate::decimal::push_decimal(v, n.unsigned_abs());
}

/// `X-Armor-*` headers naming the verified caller.
pub(super) fn identity_headers(out: &mut Added, p: &Principal) {
    out.line(&USER_ID_HEADER, |v| push_number(v, p.user_id));
    out.line(&ACCOUNT_ID_HEADER, |v| push_number(v, p.account_id));
    if let Via::ApiKey { key_id, .. } = &p.via {
        out.line(&KEY_ID_HEADER, |v| v.extend_from_slice(key_id.as_bytes()));
    }
    out.line(&AUTH_METHOD_HEADER, |v| {
        v.extend_from_slice(p.via.scheme().as_bytes());
    });
    // Comma-separated.
    out.line(&PERMISSIONS_HEADER, |v| {
        for (i, s) in p.permissions.iter().enumerate() {
            if i > 0 {
                v.push(b',');
            }
            v.extend_from_slice(s.as_bytes());
        }
    });
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    // Usually few or none: one pass over the names finds which are
    // there, and only those are removed.
    let mut present = 0u8;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // The names `Connection` lists go by name as text (no copies); the
    // values are cheap handles on the received bytes.
    let mut values = headers.get_all(header::CONNECTION).iter();
    let first = values.next().cloned();
    let more: Vec<HeaderValue> = values.cloned().collect();
    for v in first.iter().chain(&more) {
        let Ok(v) = v.to_str() else { continue };
        for n in v.split(',') {
            headers.remove(n.trim());
        }
    }
    for (i, n) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(name, value) in pairs {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    /// The map's headers and the added lines, as the upstream reads them.
    fn sent(h: &HeaderMap, added: &Added) -> HeaderMap {
        let mut all = h.clone();
        let text = std::str::from_utf8(added.as_bytes()).unwrap();
        assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
        for line in text.split_terminator("\r\n") {
            let (name, value) = line.split_once(": ").unwrap();
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(!h.contains_key(&name), "{name} both in the map and added");
            all.append(name, HeaderValue::from_str(value).unwrap());
        }
        all
    }

    #[test]
    fn an_added_value_with_a_control_character_leaves_no_line() {
        let mut a = Added::new();
        a.line(&KEY_ID_HEADER, |v| v.extend_from_slice(b"k\r\nx-evil: 1"));
        a.line(&AUTH_METHOD_HEADER, |v| {
            v.extend_from_slice(b"caf\xc3\xa9\tok")
        });
        assert_eq!(a.as_bytes(), b"x-armor-auth: caf\xc3\xa9\tok\r\n");
    }

    #[test]
    fn underscore_and_armor_spellings_go() {
        let mut h = map(&[
            ("x_armor_user_id", "1"),
            ("x-armor_permissions", "Users Manage"),
            ("x-armor-key-id", "k"),
            ("x_forwarded_for", "10.0.0.1"),
            ("my_header", "1"),
            ("x-armorless", "kept"),
            ("x-kept", "1"),
        ]);
        remove_spoofable(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-armorless", "x-kept"]);
    }

    #[test]
    fn armor_cookies_go_both_ways() {
        let mut h = map(&[
            ("cookie", "a=1; armor_session=tok; b=2"),
            ("cookie", "ARMOR_ACCOUNT=3; __Host-armor_x=y"),
            ("cookie", "c=3"),
        ]);
        remove_armor_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
        let mut h = map(&[("cookie", "armor_session=tok")]);
        remove_armor_cookies(&mut h);
        assert!(!h.contains_key(header::COOKIE));
        let mut h = map(&[("cookie", "a=1")]);
        remove_armor_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
        // Values that are not ASCII pass byte for byte.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"name=caf\xc3\xa9; armor_session=t").unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"other=\xc3\xa9t\xc3\xa9").unwrap(),
        );
        remove_armor_cookies(&mut h);
        assert_eq!(
            h[header::COOKIE].as_bytes(),
            b"name=caf\xc3\xa9; other=\xc3\xa9t\xc3\xa9"
        );

        let mut h = map(&[
            ("set-cookie", "armor_session=evil; Path=/"),
            ("set-cookie", "app=1; Path=/"),
            ("set-cookie", " Armor_Login_Csrf=x"),
        ]);
        remove_armor_set_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["app=1; Path=/"]);
    }

    #[test]
    fn forwarding_headers_are_the_gateways_unless_the_peer_is_trusted() {
        let sent = [
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("true-client-ip", "6.6.6.6"),
            ("front-end-https", "on"),
        ];
        let peer: IpAddr = [192, 0, 2, 1].into();
        let host = Some(HeaderValue::from_static("api.example:8080"));
        let mut h = map(&sent);
        let mut a = Added::new();
        set_forwarding(&mut h, &mut a, Some(peer), false, host.clone());
        let h = self::sent(&h, &a);
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.1;host=\"api.example:8080\";proto=http"
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example:8080");
        for gone in [
            "x-real-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "true-client-ip",
            "front-end-https",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }

        let mut h = map(&sent);
        let mut a = Added::new();
        set_forwarding(&mut h, &mut a, Some(peer), true, host);
        let h = self::sent(&h, &a);
        assert_eq!(
            h["forwarded"],
            "for=6.6.6.6;proto=https, for=192.0.2.1;host=\"api.example:8080\";proto=http"
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");

        let mut h = HeaderMap::new();
        let mut a = Added::new();
        set_forwarding(&mut h, &mut a, Some([1u16; 8].into()), false, None);
        let h = self::sent(&h, &a);
        assert_eq!(h["forwarded"], "for=\"[1:1:1:1:1:1:1:1]\";proto=http");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let cases: [&[(&'static str, &'static str)]; 2] = [
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("upgrade", "websocket"),
                ("x-kept", "1"),
            ],
            // Names in any case, any number of `Connection` values.
            &[
                ("connection", "X-One , close"),
                ("connection", "x-TWO,,"),
                ("x-one", "1"),
                ("x-two", "2"),
                ("te", "trailers"),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "1"),
            ],
        ];
        for pairs in cases {
            let mut h = HeaderMap::new();
            for &(name, value) in pairs {
                h.append(name, HeaderValue::from_static(value));
            }
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{h:?}");
            assert!(h.contains_key("x-kept"));
        }
    }

    #[test]
    fn identity_header_values() {
        let p = Principal {
            user_id: -12,
            account_id: i64::MAX,
            via: Via::ApiKey {
                key_id: "k1".into(),
                key_permissions: None,
            },
            permissions: ["A", "B c"].iter().map(|s| s.to_string()).collect(),
        };
        let mut a = Added::new();
        identity_headers(&mut a, &p);
        let h = sent(&HeaderMap::new(), &a);
        assert_eq!(h[USER_ID], "-12");
        assert_eq!(h[ACCOUNT_ID], "9223372036854775807");
        assert_eq!(h[KEY_ID], "k1");
        assert_eq!(h[AUTH_METHOD], "ARMOR-PSK");
        assert_eq!(h[PERMISSIONS], "A,B c");
        let p = Principal {
            via: Via::Password {
                token_hash: [0; 32],
            },
            permissions: std::iter::empty().collect(),
            ..p
        };
        let mut a = Added::new();
        identity_headers(&mut a, &p);
        assert_eq!(
            a.as_bytes(),
            b"x-armor-user-id: -12\r\nx-armor-account-id: 9223372036854775807\r\n\
              x-armor-auth: FH-AUTH\r\nx-armor-permissions: \r\n"
        );
        let mut a = Added::new();
        forwarded_for(
            &mut a,
            Some(&HeaderValue::from_static("1.2.3.4")),
            [1u16; 8].into(),
        );
        forwarded_for(&mut a, None, std::net::Ipv4Addr::LOCALHOST.into());
        assert_eq!(
            a.as_bytes(),
            b"x-forwarded-for: 1.2.3.4, 1:1:1:1:1:1:1:1\r\nx-forwarded-for: 127.0.0.1\r\n"
        );
    }

    #[test]
    fn numbers_and_addresses_are_written_as_fmt_writes_them() {
        for n in [0, 7, -1, 10, 99, 100, -12, i64::MAX, i64::MIN] {
            let mut v = Vec::new();
            push_number(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
        for ip in ["0.0.0.0", "255.255.255.255", "10.200.3.45", "1.0.20.100"] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(ip_text(addr, &mut buf), Some(ip.as_bytes()));
        }
        let mut buf = [0u8; 64];
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6, &mut buf), Some(&b"2001:db8::1"[..]));
    }
}
