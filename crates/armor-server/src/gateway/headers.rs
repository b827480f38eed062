//! What the gateway changes in the headers it forwards, both ways.
//!
//! Toward the upstream, the request's own header map is scrubbed in place,
//! and what stays in it but must not go is skipped as the head is written
//! ([`sent_as_is`]):
//! - hop-by-hop headers, the framing, the credentials and `Host` are
//!   skipped (taking them out of the map cost more than the writer's
//!   check), and the names `Connection` lists are taken out;
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
//! What the gateway adds (`Host`, a request id armor made, the forwarding
//! and the identity headers) is not put in the map: it is written as
//! header lines into one buffer ([`Added`]) that goes out after the map's
//! own, which spares a map insert and an allocation per header on every
//! forwarded request.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{ACCOUNT_ID, AUTH_METHOD, KEY_ID, PERMISSIONS, USER_ID};
use crate::core::{Principal, Via};

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
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

/// Removes every header whose name matches.
fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| matches(k)).cloned().collect();
    for k in names {
        headers.remove(k);
    }
}

/// Names never sent upstream as the client sent them: hop-by-hop ones
/// (RFC 9110 §7.6.1), the framing (the gateway sets its own), the
/// credentials and `Host` (the upstream's own goes instead).
const DROPPED: [HeaderName; 12] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::HOST,
];

/// The first [`DROPPED`] names: the hop-by-hop ones.
const HOP_BY_HOP: usize = 8;

/// Whether a header left in a map [`scrub_request`] has scrubbed goes
/// upstream as it is: not a [`DROPPED`] name, which the scrub leaves in
/// the map for the request's writer to skip.
pub(super) fn sent_as_is(name: &HeaderName) -> bool {
    !DROPPED.contains(name)
}

/// Scrubs the request's own headers before they go upstream (see the
/// module's notes): the names `Connection` lists, the spoofable names,
/// armor's cookies and, from a peer that is not a `trusted` proxy, every
/// header claiming to describe the client. One pass over the headers
/// finds what is there; only that is removed. The [`DROPPED`] names stay
/// (see [`sent_as_is`]); the client's `Host` is returned.
pub(super) fn scrub_request(headers: &mut HeaderMap, trusted: bool) -> Option<HeaderValue> {
    // Neither a caller's spoofed names nor, from an untrusted peer, its
    // claims about the client go on.
    let unsent = |k: &HeaderName| spoofable(k) || (!trusted && claims_forwarding(k));
    let (mut connection, mut others, mut cookie, mut host) = (false, false, false, None);
    for (k, v) in headers.iter() {
        if DROPPED.contains(k) {
            if *k == header::HOST {
                host.get_or_insert(v);
            }
            connection |= *k == header::CONNECTION;
        } else if *k == header::COOKIE {
            cookie = true;
        } else {
            others |= unsent(k);
        }
    }
    let host = host.cloned();
    if connection {
        remove_connection_named(headers);
    }
    if others {
        remove_where(headers, unsent);
    }
    if cookie {
        remove_armor_cookies(headers);
    }
    host
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
fn remove_armor_cookies(headers: &mut HeaderMap) {
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

/// Scrubs an upstream's answer before it goes to the client: its
/// hop-by-hop headers (RFC 9110 §7.6.1) and those its `Connection` names,
/// and any `Set-Cookie` for one of armor's cookies.
pub(super) fn scrub_answer(headers: &mut HeaderMap) {
    let (mut present, mut sets) = (0u16, false);
    for k in headers.keys() {
        match DROPPED[..HOP_BY_HOP].iter().position(|h| h == k) {
            Some(i) => present |= 1 << i,
            None => sets |= k == header::SET_COOKIE,
        }
    }
    remove_present(headers, present);
    if sets {
        remove_armor_set_cookies(headers);
    }
}

/// Drops an upstream's `Set-Cookie` for any of armor's cookies.
fn remove_armor_set_cookies(headers: &mut HeaderMap) {
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
    /// Room for the usual lines (`Host`, a request id, four forwarding,
    /// five identity with a few permissions).
    pub(super) fn new() -> Self {
        Added(Vec::with_capacity(512))
    }

    /// The lines, each ending in CRLF.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `name: value` without its line end, `value` writing the value's
    /// bytes; where the value starts.
    fn name_and_value(&mut self, name: &HeaderName, value: impl FnOnce(&mut Vec<u8>)) -> usize {
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        let from = self.0.len();
        value(&mut self.0);
        from
    }

    /// One line `name: value`; a value that could not be a header value
    /// (a control character) leaves no line, as building a `HeaderValue`
    /// from it would have failed.
    fn line(&mut self, name: &HeaderName, value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.0.len();
        let from = self.name_and_value(name, value);
        if field_value(&self.0[from..]) {
            self.0.extend_from_slice(b"\r\n");
        } else {
            self.0.truncate(start);
        }
    }

    /// One line whose value is made only of header values' bytes and
    /// visible ASCII, so is one by construction: not checked again (in
    /// release builds).
    fn valid_line(&mut self, name: &HeaderName, value: impl FnOnce(&mut Vec<u8>)) {
        let from = self.name_and_value(name, value);
        debug_assert!(field_value(&self.0[from..]), "{name}");
        self.0.extend_from_slice(b"\r\n");
    }

    pub(super) fn host(&mut self, host: &HeaderValue) {
        self.valid_line(&header::HOST, |v| v.extend_from_slice(host.as_bytes()));
    }

    /// `X-Request-Id`, for a request whose id armor made.
    pub(super) fn request_id(&mut self, id: &[u8]) {
        self.line(&X_REQUEST_ID, |v| v.extend_from_slice(id));
    }
}

/// Whether every byte may be in a header value: the bytes `HeaderValue`
/// accepts (visible, space, tab, and any byte from 0x80). Without an early
/// exit, so the loop runs on whole vectors: values are short and almost
/// always clean.
fn field_value(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & (((b >= 32) & (b != 127)) | (b == b'\t'))
    })
}

/// Sets `Forwarded`, `X-Forwarded-For`, `-Host` and `-Proto` for the
/// upstream, on a map [`scrub_request`] has scrubbed: from an untrusted
/// peer, whatever the client sent of these is gone; from a trusted proxy,
/// its values are kept and the peer is appended. The new values go to
/// `out`.
pub(super) fn set_forwarding(
    headers: &mut HeaderMap,
    out: &mut Added,
    peer: Option<IpAddr>,
    trusted: bool,
    host: Option<HeaderValue>,
) {
    // The map can hold these names only from a trusted peer: for any
    // other, the scrub took them out, so the map is not asked. A list
    // sent on several lines is one list (RFC 9110, 5.3): every line is
    // kept, in order, not just the first.
    let prior = |name| trusted.then(|| headers.get_all(name)).into_iter().flatten();
    let mut buf = [0u8; 64];
    let peer = peer.and_then(|ip| Some((ip, ip_text(ip, &mut buf)?)));
    if let Some((_, text)) = peer {
        forwarded_for(out, prior(X_FORWARDED_FOR), text);
    }
    forwarded(out, prior(FORWARDED), peer, host.as_ref());
    if trusted {
        headers.remove(X_FORWARDED_FOR);
        headers.remove(FORWARDED);
    }
    let kept = |name| trusted && headers.contains_key(name);
    if let Some(h) = host {
        if !kept(X_FORWARDED_HOST) {
            out.valid_line(&X_FORWARDED_HOST, |v| v.extend_from_slice(h.as_bytes()));
        }
    }
    if !kept(X_FORWARDED_PROTO) {
        out.valid_line(&X_FORWARDED_PROTO, |v| v.extend_from_slice(b"http"));
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

/// A trusted proxy's prior lines of a list header, as received (bytes
/// from 0x80 included, as the client address reads them), each followed
/// by the separator before the next element.
fn push_prior<'a>(v: &mut Vec<u8>, prior: impl IntoIterator<Item = &'a HeaderValue>) {
    for line in prior {
        v.extend_from_slice(line.as_bytes());
        v.extend_from_slice(b", ");
    }
}

/// `X-Forwarded-For`: the prior lines, then the peer's address
/// (as text).
fn forwarded_for<'a>(out: &mut Added, prior: impl IntoIterator<Item = &'a HeaderValue>, ip: &[u8]) {
    out.valid_line(&X_FORWARDED_FOR, |v| {
        push_prior(v, prior);
        v.extend_from_slice(ip);
    });
}

/// `Forwarded` (RFC 7239): the prior lines, then
/// `for=…;host="…";proto=http` for this hop (the peer with its address as
/// text).
fn forwarded<'a>(
    out: &mut Added,
    prior: impl IntoIterator<Item = &'a HeaderValue>,
    peer: Option<(IpAddr, &[u8])>,
    host: Option<&HeaderValue>,
) {
    out.valid_line(&FORWARDED, |v| {
        push_prior(v, prior);
        match peer {
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
    out.valid_line(&USER_ID_HEADER, |v| push_number(v, p.user_id));
    out.valid_line(&ACCOUNT_ID_HEADER, |v| push_number(v, p.account_id));
    if let Via::ApiKey { key_id, .. } = &p.via {
        out.line(&KEY_ID_HEADER, |v| v.extend_from_slice(key_id.as_bytes()));
    }
    out.valid_line(&AUTH_METHOD_HEADER, |v| {
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

/// Removes the hop-by-hop names whose bits are set in `present` (an
/// answer's: see [`scrub_answer`]) and, if `Connection` is among them,
/// the names it lists.
fn remove_present(headers: &mut HeaderMap, present: u16) {
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        remove_connection_named(headers);
    }
    for (i, n) in DROPPED[..HOP_BY_HOP].iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
}

/// Removes the names the `Connection` header(s) list, but the hop-by-hop
/// ones, which go anyway.
fn remove_connection_named(headers: &mut HeaderMap) {
    let hop = |n: &[u8]| {
        DROPPED[..HOP_BY_HOP]
            .iter()
            .any(|h| n.eq_ignore_ascii_case(h.as_str().as_bytes()))
    };
    // Values that are not text name nothing. Most lists name hop-by-hop
    // tokens only (`keep-alive`): nothing is collected, nor allocated.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter(|v| v.to_str().is_ok())
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|n| !hop(n))
        .filter_map(|n| HeaderName::from_bytes(n).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests;
