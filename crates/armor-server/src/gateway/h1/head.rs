//! Reading the answer head, and how its body is framed.
//!
//! The head is parsed with `httparse` as it arrives, within
//! [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields (beyond: the answer is
//! refused). Header values are slices of the received bytes, not copies.
//! Interim answers (`1xx`) are read and dropped, except `101`: the gateway
//! never asks to switch protocols, so one is an error.
//!
//! Framing (RFC 9112 §6.3), where a mistake lets one answer's bytes be
//! read as the next client's answer on the same connection:
//! - to HEAD, and `204`/`304`: no body, whatever the headers say;
//! - `Transfer-Encoding` ending in `chunked`: the chunked decoder; with a
//!   `Content-Length` too, or in an HTTP/1.0 answer, the connection is not
//!   reused after it;
//! - `Transfer-Encoding` not ending in `chunked`: read until the close;
//! - `Content-Length`: a decimal number, or a list of the same number;
//!   anything else (several different numbers, a sign, an empty element)
//!   refuses the answer;
//! - neither: read until the close.
//!
//! A connection is reused only when the answer allows it (HTTP/1.1
//! without `Connection: close`, HTTP/1.0 with `Connection: keep-alive`),
//! its body is framed by length or chunks, and nothing follows it.

use std::mem::MaybeUninit;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{response, Method, Response, StatusCode, Version};
use bytes::Buf as _;
use bytes::BytesMut;

use super::UpstreamError;
use crate::gateway::pool::Conn;

/// Longest answer head (interim answers included).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in an answer head.
pub(super) const MAX_HEADERS: usize = 100;

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// An answer head, its body's framing, and whether the connection may
/// serve another request after it.
pub(super) struct Head {
    pub(super) parts: response::Parts,
    pub(super) framing: Framing,
    pub(super) reuse: bool,
}

/// Reads the answer head to a request made with `method`. On failure,
/// also whether any byte of an answer had arrived.
pub(super) async fn read(conn: &mut Conn, method: &Method) -> Result<Head, (UpstreamError, bool)> {
    // Bytes of interim answers already read and dropped.
    let mut interim = 0usize;
    loop {
        if !conn.rbuf.is_empty() {
            match parse(&mut conn.rbuf, method) {
                Err(e) => return Err((e, true)),
                Ok(Parsed::Final(head)) => return Ok(head),
                Ok(Parsed::Interim(n)) => {
                    interim += n;
                    if interim >= MAX_HEAD {
                        return Err((UpstreamError::Malformed("answer head too large"), true));
                    }
                    continue;
                }
                Ok(Parsed::Partial) => {}
            }
            if interim + conn.rbuf.len() >= MAX_HEAD {
                return Err((UpstreamError::Malformed("answer head too large"), true));
            }
        }
        let answered = interim > 0 || !conn.rbuf.is_empty();
        match std::future::poll_fn(|cx| conn.poll_fill(cx, 0)).await {
            Ok(0) => return Err((UpstreamError::Closed, answered)),
            Ok(_) => {}
            Err(e) => return Err((UpstreamError::Io(e), answered)),
        }
    }
}

enum Parsed {
    Partial,
    /// An interim answer of that many bytes, dropped from the buffer.
    Interim(usize),
    Final(Head),
}

/// Offsets of one field's name and value in the head.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Fields whose offsets are kept on the stack; more go in a vector.
const INLINE_SPANS: usize = 24;

fn parse(buf: &mut BytesMut, method: &Method) -> Result<Parsed, UpstreamError> {
    let malformed = UpstreamError::Malformed;
    // Left uninitialised (httparse's own way): zeroing 100 slots on every
    // answer cost more than parsing it.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut inline = [Span::default(); INLINE_SPANS];
    let mut more: Vec<Span> = Vec::new();
    let (len, code, version, count) = {
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &buf[..],
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(malformed("more than 100 header fields"))
            }
            Err(_) => return Err(malformed("unparseable answer head")),
        };
        // Offsets fit in u32: the buffer is parsed only while under
        // MAX_HEAD plus one read.
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        for (i, h) in resp.headers.iter().enumerate() {
            let (name, value) = (offset(h.name.as_bytes()), offset(h.value));
            let span = Span {
                name: (name, name + h.name.len() as u32),
                value: (value, value + h.value.len() as u32),
            };
            match inline.get_mut(i) {
                Some(slot) => *slot = span,
                None => more.push(span),
            }
        }
        (len, resp.code, resp.version, resp.headers.len())
    };
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(malformed("bad status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(malformed(
                "101 Switching Protocols, which was never asked for",
            ));
        }
        buf.advance(len);
        return Ok(Parsed::Interim(len));
    }
    let version = if version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let at = |(start, end): (u32, u32)| start as usize..end as usize;
    for span in inline[..count.min(INLINE_SPANS)].iter().chain(&more) {
        let name = HeaderName::from_bytes(&head[at(span.name)])
            .map_err(|_| malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(at(span.value)))
            .map_err(|_| malformed("bad header value"))?;
        headers.append(name, value);
    }
    let (framing, reuse) = framing(method, status, version, &mut headers)?;
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Parsed::Final(Head {
        parts,
        framing,
        reuse,
    }))
}

/// The body's framing, and whether the connection may be reused after it.
/// A `Content-Length` that does not frame the body is removed; a list of
/// equal lengths becomes one.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), UpstreamError> {
    let keep_alive = keep_alive(version, headers);
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if *method == Method::CONNECT && status.is_success() {
        // A tunnel, which the gateway does not open: nothing more is read.
        return Ok((Framing::Empty, false));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let had_length = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(if chunked_last(headers) {
            let reuse = keep_alive && !had_length && version == Version::HTTP_11;
            (Framing::Chunked, reuse)
        } else {
            (Framing::Close, false)
        });
    }
    match content_length(headers)? {
        Some(n) => Ok((Framing::Length(n), keep_alive)),
        None => Ok((Framing::Close, false)),
    }
}

/// The comma-separated elements of every value of `name`, trimmed.
fn elements<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let (mut close, mut keep) = (false, false);
    for token in elements(headers, &header::CONNECTION) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// Whether the last transfer coding is `chunked`.
fn chunked_last(headers: &HeaderMap) -> bool {
    elements(headers, &header::TRANSFER_ENCODING)
        .filter(|e| !e.is_empty())
        .last()
        .is_some_and(|e| e.eq_ignore_ascii_case(b"chunked"))
}

/// The `Content-Length`, if any: every element of every value must be the
/// same decimal number.
fn content_length(headers: &mut HeaderMap) -> Result<Option<u64>, UpstreamError> {
    let bad = UpstreamError::Malformed("invalid Content-Length");
    let mut length: Option<u64> = None;
    let mut elements_seen = 0usize;
    for e in elements(headers, &header::CONTENT_LENGTH) {
        elements_seen += 1;
        if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let n = e.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        let Some(n) = n else { return Err(bad) };
        if length.is_some_and(|l| l != n) {
            return Err(UpstreamError::Malformed(
                "conflicting Content-Length values",
            ));
        }
        length = Some(n);
    }
    if let Some(n) = length {
        if elements_seen > 1 {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Parsed, UpstreamError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, &method)
    }

    fn final_head(raw: &str, method: Method) -> Head {
        match head(raw, method) {
            Ok(Parsed::Final(h)) => h,
            Ok(_) => panic!("not a final head: {raw:?}"),
            Err(e) => panic!("{e}: {raw:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: [(&str, Method, Framing, bool); 12] = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
                Method::GET,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::HEAD,
                Framing::Empty,
                true,
            ),
        ];
        for (raw, method, framing, reuse) in cases {
            let h = final_head(raw, method);
            assert_eq!((h.framing, h.reuse), (framing, reuse), "{raw:?}");
        }
        for status in [204, 304] {
            let h = final_head(
                &format!("HTTP/1.1 {status} X\r\ncontent-length: 7\r\n\r\n"),
                Method::GET,
            );
            assert_eq!((h.framing, h.reuse), (Framing::Empty, true));
        }
        // Chunked framing: no length is passed on; equal lengths become one.
        let h = final_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
        );
        assert!(!h.parts.headers.contains_key("content-length"));
        let h = final_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.parts.headers["content-length"], "5");
    }

    #[test]
    fn bad_lengths_and_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5,\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "HTTP/1.1 099 X\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(head(raw, Method::GET).is_err(), "{raw:?}");
        }
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).is_err());
    }

    #[test]
    fn interim_answers_are_dropped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(matches!(
            parse(&mut buf, &Method::GET),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(
            parse(&mut buf, &Method::GET),
            Ok(Parsed::Final(_))
        ));
        assert!(buf.is_empty());
    }
}
