//! Writing a request: the head serialised straight from the header map
//! into the connection's write buffer, then the body.
//!
//! - Nothing to send (`is_end_stream`): no framing header at all.
//! - Already in memory (a verified ARMOR-PSK body, a small body that had
//!   fully arrived): `Content-Length`, head and body in one (vectored)
//!   write, and the bytes kept in case the request is sent again.
//! - Streaming (password callers, public paths): `Content-Length` when
//!   the body's size is known exactly (checked as it goes), else
//!   `Transfer-Encoding: chunked`. Frames ready together go out together;
//!   what is buffered is written before waiting for the next frame.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use axum::body::{Body, HttpBody as _};
use axum::http::header::HeaderMap;
use axum::http::Method;
use bytes::Bytes;
use http_body::Frame;

use super::early::Watch;
use super::UpstreamError;
use crate::gateway::headers::sent_as_is;
use crate::gateway::pool::Conn;

/// Body parts up to this size are copied into the write buffer; larger
/// ones are written from where they are.
const COPY_MAX: usize = 8 * 1024;
/// The write buffer is written out once it holds this much.
const FLUSH_AT: usize = 16 * 1024;

/// The request body, as far as it is known before anything is written.
pub(super) enum Payload {
    Empty,
    Full(Bytes),
    Stream {
        body: Body,
        /// The exact size, when the body knows it.
        len: Option<u64>,
        /// A part already taken from `body`.
        first: Option<Bytes>,
    },
    /// A stream that was sent (or started to be): it cannot be sent again.
    Spent,
}

type Polled = Option<Result<Frame<Bytes>, axum::Error>>;

/// The body's next frame if it is ready now; `None` if not.
async fn frame_now(body: &mut Body) -> Option<Polled> {
    std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

impl Payload {
    /// Looks at the body: ended, whole in memory, or to be streamed. A
    /// GET, HEAD or CONNECT body of unknown length is not sent at all (as
    /// hyper's client did): chunked framing on those methods is where an
    /// upstream that ignores their bodies would read a second request,
    /// one whose headers armor never scrubbed.
    pub(super) async fn new(mut body: Body, method: &Method) -> Result<Payload, UpstreamError> {
        if body.is_end_stream() {
            return Ok(Payload::Empty);
        }
        let len = body.size_hint().exact();
        if len.is_none() && matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
            return Ok(Payload::Empty);
        }
        let first = match frame_now(&mut body).await {
            None => None,
            Some(None) => return Ok(Payload::Empty),
            Some(Some(Err(e))) => return Err(UpstreamError::Body(e)),
            Some(Some(Ok(frame))) => frame.into_data().ok(),
        };
        Ok(match first {
            Some(data) if body.is_end_stream() => Payload::Full(data),
            None if body.is_end_stream() => Payload::Empty,
            first => Payload::Stream { body, len, first },
        })
    }

    /// Whether it can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, Payload::Empty | Payload::Full(_))
    }
}

/// A request's headers: the map's, then lines already written out.
#[derive(Clone, Copy)]
pub(super) struct Headers<'a> {
    pub(super) map: &'a HeaderMap,
    pub(super) added: &'a [u8],
}

/// Writes the request: head, then body.
pub(super) async fn request(
    conn: &mut Conn,
    method: &Method,
    target: &str,
    headers: Headers<'_>,
    payload: &mut Payload,
    written: &mut bool,
) -> Result<(), UpstreamError> {
    let framing = match payload {
        Payload::Empty => Framing::None,
        Payload::Full(data) => Framing::Length(data.len() as u64),
        Payload::Stream { len: Some(n), .. } => Framing::Length(*n),
        Payload::Stream { len: None, .. } => Framing::Chunked,
        Payload::Spent => {
            return Err(UpstreamError::Io(io::Error::other(
                "the request body was already sent",
            )))
        }
    };
    head(&mut conn.wbuf, method, target, headers, framing);
    let sent = &mut Sent {
        written,
        watch: Watch::default(),
    };
    match std::mem::replace(payload, Payload::Spent) {
        Payload::Full(data) => {
            let wrote = write_all(conn, &data, sent).await;
            *payload = Payload::Full(data);
            wrote
        }
        Payload::Stream { body, len, first } => stream(conn, body, len, first, sent).await,
        other => {
            *payload = other;
            write_all(conn, &[], sent).await
        }
    }
}

#[derive(Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The request head, into `buf` (cleared first): the map's headers but
/// those the scrub left for the writer to skip. Every part was checked
/// when it was built (method, target, header names and values cannot hold
/// a line break), so nothing is escaped.
fn head(buf: &mut Vec<u8>, method: &Method, target: &str, headers: Headers<'_>, framing: Framing) {
    buf.clear();
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.map {
        if !sent_as_is(name) {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(headers.added);
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            crate::decimal::push_decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

/// A streaming body after the head (still in the write buffer).
async fn stream(
    conn: &mut Conn,
    mut body: Body,
    len: Option<u64>,
    mut first: Option<Bytes>,
    sent: &mut Sent<'_>,
) -> Result<(), UpstreamError> {
    let mut taken: u64 = 0;
    loop {
        let data = match first.take() {
            Some(data) => data,
            None => match next_data(conn, &mut body, sent).await? {
                Some(data) => data,
                None => break,
            },
        };
        if data.is_empty() {
            continue;
        }
        taken += data.len() as u64;
        if len.is_some_and(|n| taken > n) {
            return Err(body_error("the request body is longer than its length"));
        }
        if len.is_none() {
            chunk_size(&mut conn.wbuf, data.len());
        }
        if data.len() <= COPY_MAX {
            conn.wbuf.extend_from_slice(&data);
        } else {
            write_all(conn, &data, sent).await?;
            conn.wbuf.clear();
        }
        if len.is_none() {
            conn.wbuf.extend_from_slice(b"\r\n");
        }
        if conn.wbuf.len() >= FLUSH_AT {
            flush(conn, sent).await?;
        }
    }
    match len {
        Some(n) if taken != n => {
            return Err(body_error("the request body is shorter than its length"))
        }
        Some(_) => {}
        None => conn.wbuf.extend_from_slice(b"0\r\n\r\n"),
    }
    flush(conn, sent).await
}

/// The body's next data; what the write buffer holds is written out
/// before waiting for it. Trailers are not forwarded.
async fn next_data(
    conn: &mut Conn,
    body: &mut Body,
    sent: &mut Sent<'_>,
) -> Result<Option<Bytes>, UpstreamError> {
    loop {
        let frame = match frame_now(body).await {
            Some(frame) => frame,
            None => {
                flush(conn, sent).await?;
                std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(UpstreamError::Body(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

fn body_error(why: &'static str) -> UpstreamError {
    UpstreamError::Body(axum::Error::new(io::Error::new(
        io::ErrorKind::InvalidData,
        why,
    )))
}

/// `{size in hex}\r\n`.
fn chunk_size(buf: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
    buf.extend_from_slice(b"\r\n");
}

async fn flush(conn: &mut Conn, sent: &mut Sent<'_>) -> Result<(), UpstreamError> {
    if conn.wbuf.is_empty() {
        return Ok(());
    }
    write_all(conn, &[], sent).await?;
    conn.wbuf.clear();
    Ok(())
}

/// How far the request's writing got: whether a byte of it was written,
/// and what was seen of an answer meanwhile.
struct Sent<'a> {
    written: &'a mut bool,
    watch: Watch,
}

/// Writes the connection's write buffer then `b`, together when both are
/// there (one system call when the socket takes them). `written` turns
/// true with the first byte. While the socket takes nothing, an answer
/// the upstream sends is read into the read buffer: a refusal ends the
/// writing (see [`super::early`]).
async fn write_all(
    conn: &mut Conn,
    mut b: &[u8],
    sent: &mut Sent<'_>,
) -> Result<(), UpstreamError> {
    let Conn { stream, rbuf, wbuf } = conn;
    let mut a = &wbuf[..];
    while !a.is_empty() || !b.is_empty() {
        let watch = &mut sent.watch;
        let n = std::future::poll_fn(|cx| super::early::poll_write(stream, rbuf, watch, cx, a, b))
            .await
            .map_err(UpstreamError::Io)?;
        if n == 0 {
            return Err(UpstreamError::Io(io::ErrorKind::WriteZero.into()));
        }
        *sent.written = true;
        let k = n.min(a.len());
        a = &a[k..];
        b = &b[n - k..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_chunk_sizes_are_written_plainly() {
        let mut h = HeaderMap::new();
        // What the scrub leaves for the writer to skip is skipped.
        h.insert("host", "client.example".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("authorization", "ARMOR-PSK k:s:n:1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("content-length", "5".parse().unwrap());
        let mut buf = Vec::new();
        let headers = Headers {
            map: &h,
            added: b"host: up:1\r\nx-b: 3\r\n",
        };
        head(
            &mut buf,
            &Method::POST,
            "/p?q",
            headers,
            Framing::Length(1234),
        );
        assert_eq!(
            buf,
            b"POST /p?q HTTP/1.1\r\nx-a: 1\r\nx-a: 2\r\nhost: up:1\r\nx-b: 3\r\ncontent-length: 1234\r\n\r\n"
        );
        let none = Headers {
            map: &HeaderMap::new(),
            added: b"",
        };
        head(&mut buf, &Method::GET, "/", none, Framing::Chunked);
        assert_eq!(buf, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        for (n, text) in [(0, "0"), (1, "1"), (255, "ff"), (4096, "1000")] {
            let mut buf = Vec::new();
            chunk_size(&mut buf, n);
            assert_eq!(buf, format!("{text}\r\n").as_bytes());
        }
    }
}
