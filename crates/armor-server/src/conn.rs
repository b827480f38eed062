//! Connections: a listener whose streams watch the HTTP/1 request heads
//! go by, so that a request with both `Content-Length` and
//! `Transfer-Encoding`, or with more than one `Content-Length`, is refused
//! (400, connection closed) instead of being quietly reframed.
//!
//! hyper already refuses differing lengths and non-chunked transfer codings,
//! but it resolves `Content-Length` + `Transfer-Encoding: chunked` in favour
//! of chunked and merges equal duplicate lengths, dropping the evidence
//! before a handler sees the request. Such a request is how a desync with
//! some other hop is attempted, so the gateway refuses it outright. The
//! inspection follows the framing of each request (length, chunked) to find
//! the next head; it copies nothing and stops looking once a connection is
//! flagged or upgraded.
//!
//! Two more refusals live here, where the bytes are seen:
//! - a request head with a bare LF line ending (hyper reads it, but other
//!   hops may not, and the inspection would not see where it ends): flagged
//!   like a conflicting framing, 400 and closed;
//! - a request head that has started but is not complete within the header
//!   timeout (slowloris): `408 Request Timeout` is written and the
//!   connection closed. A connection that has sent nothing of a new head is
//!   left alone (a response may still be in progress on it).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;
use crate::web::error::ApiError;

/// Longest request head (or chunk-size line, or trailer block) inspected;
/// past it the inspection stops and hyper's own limits apply.
const MAX_HEAD: usize = 64 * 1024;
/// Header lines parsed per head.
const MAX_HEADERS: usize = 256;

/// What a slow head gets, before the connection is closed.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 82\r\nconnection: close\r\n\r\n{\"error\":\"request_timeout\",\"error_description\":\"the request head came too slowly\"}";

/// A [`TcpListener`] whose connections are inspected.
pub struct InspectingListener {
    listener: TcpListener,
    header_timeout: Duration,
}

impl InspectingListener {
    /// `header_timeout`: the longest a request head may take once its
    /// first byte has arrived.
    pub fn new(listener: TcpListener, header_timeout: Duration) -> Self {
        InspectingListener {
            listener,
            header_timeout,
        }
    }
}

/// The peer of one connection, and whether an ambiguous framing was seen.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub ambiguous_framing: Arc<AtomicBool>,
}

impl axum::serve::Listener for InspectingListener {
    type Io = Inspected<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        let flag = Arc::new(AtomicBool::new(false));
        let io = Inspected {
            io,
            inspector: Inspector::new(flag.clone()),
            header_timeout: self.header_timeout,
            deadline: None,
            timed_out: false,
        };
        (
            io,
            PeerInfo {
                addr,
                ambiguous_framing: flag,
            },
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(PeerInfo {
            addr: self.listener.local_addr()?,
            ambiguous_framing: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, InspectingListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, InspectingListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// In front of everything: exposes the peer as `ConnectInfo<SocketAddr>`
/// and refuses any request on a connection that sent an ambiguous framing,
/// closing it.
pub fn screen(req: &mut Request) -> Option<Response> {
    let ConnectInfo(peer) = req.extensions().get::<ConnectInfo<PeerInfo>>().cloned()?;
    req.extensions_mut().insert(ConnectInfo(peer.addr));
    if peer.ambiguous_framing.load(Ordering::Acquire) {
        let mut resp = ApiError(Error::BadRequest(
            "ambiguous framing: a request may not carry both Content-Length and Transfer-Encoding, nor more than one Content-Length, nor end a header line with a bare LF".into(),
        ))
        .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(resp);
    }
    None
}

/// A stream whose incoming bytes go through an [`Inspector`].
pub struct Inspected<T> {
    io: T,
    inspector: Inspector,
    header_timeout: Duration,
    /// Running while a head is incomplete.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The 408 is written: reads end.
    timed_out: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Inspected<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::future::Future as _;
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        if this.inspector.head_in_progress() {
            let timeout = this.header_timeout;
            let deadline = this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if deadline.as_mut().poll(cx).is_ready() {
                // Best effort, into an idle socket's send buffer; then end
                // of input, so hyper drops the half head and closes.
                this.timed_out = true;
                let _ = Pin::new(&mut this.io).poll_write(cx, REQUEST_TIMEOUT);
                let _ = Pin::new(&mut this.io).poll_flush(cx);
                tracing::debug!("request head not complete in time: 408");
                return Poll::Ready(Ok(()));
            }
        } else {
            this.deadline = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.inspector.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inspected<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line (or the CRLF that ends a chunk's data).
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Reading the trailer section after the last chunk.
    Trailers,
    /// Not looking any more (flagged, upgraded, or beyond the limits).
    Off,
}

/// Follows the request framing on one connection. Work is linear in the
/// bytes read: each byte is searched once, and the buffer holds at most one
/// unfinished head plus one read.
struct Inspector {
    state: State,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the current element's end.
    scanned: usize,
    flag: Arc<AtomicBool>,
}

impl Inspector {
    fn new(flag: Arc<AtomicBool>) -> Self {
        Inspector {
            state: State::Head,
            buf: Vec::new(),
            scanned: 0,
            flag,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if self.state == State::Off {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut cur = 0;
        loop {
            if self.state == State::Off {
                // `off` has dropped the buffer.
                return;
            }
            let avail = self.buf.len() - cur;
            match self.state {
                State::Off => return,
                State::Body(n) | State::ChunkData(n) => {
                    if avail == 0 {
                        break;
                    }
                    let take = n.min(avail as u64);
                    cur += take as usize;
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkSize,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    if self.state == State::Head {
                        // Empty lines before a request line are allowed.
                        while cur < self.buf.len() && matches!(self.buf[cur], b'\r' | b'\n') {
                            cur += 1;
                            self.scanned = 0;
                        }
                    }
                    match self.element(cur) {
                        Some(end) => {
                            cur = end;
                            self.scanned = 0;
                        }
                        None => {
                            if self.state == State::Off {
                                // Flagged: `off` has dropped the buffer.
                                return;
                            }
                            if self.buf.len() - cur >= MAX_HEAD {
                                return self.off();
                            }
                            self.scanned = self.buf.len() - cur;
                            break;
                        }
                    }
                }
            }
        }
        self.buf.drain(..cur);
    }

    /// Whether part of a request head has arrived, and not its end.
    fn head_in_progress(&self) -> bool {
        self.state == State::Head && !self.buf.is_empty()
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Tries to complete the current line-based element starting at `cur`;
    /// returns where it ends.
    fn element(&mut self, cur: usize) -> Option<usize> {
        let from = cur + self.scanned.saturating_sub(3);
        match self.state {
            State::Head => {
                // A bare LF: hyper would end a line there, other hops may
                // not, and "\r\n\r\n" would never show where it ends.
                // Only the head is searched: body bytes that arrived in the
                // same read are the body's business.
                let end = find(&self.buf, b"\r\n\r\n", from).map(|p| p + 4);
                let limit = end.unwrap_or(self.buf.len());
                let fresh = (cur + self.scanned).max(cur + 1);
                if (fresh..limit).any(|i| self.buf[i] == b'\n' && self.buf[i - 1] != b'\r') {
                    self.flag.store(true, Ordering::Release);
                    self.off();
                    return None;
                }
                let end = end?;
                let head = self.buf[cur..end].to_vec();
                self.head(&head);
                Some(end)
            }
            State::ChunkSize => {
                let eol = find(&self.buf, b"\r\n", from)?;
                let line = &self.buf[cur..eol];
                if line.is_empty() {
                    // The CRLF that closes a chunk's data.
                    return Some(eol + 2);
                }
                let size = std::str::from_utf8(line)
                    .ok()
                    .and_then(|t| t.split(';').next())
                    .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
                match size {
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                    None => self.off(),
                }
                Some(eol + 2)
            }
            State::Trailers => {
                let end = if self.buf[cur..].starts_with(b"\r\n") {
                    cur + 2
                } else {
                    find(&self.buf, b"\r\n\r\n", from)? + 4
                };
                self.state = State::Head;
                Some(end)
            }
            _ => None,
        }
    }

    /// Looks at one complete request head and sets the next state.
    fn head(&mut self, bytes: &[u8]) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            // hyper refuses it, or it is beyond what is inspected.
            _ => return self.off(),
        }
        let mut lengths = 0usize;
        let mut length = None;
        let mut te = None;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                // `Content-Length: 5, 5` is two lengths too.
                lengths += h.value.split(|b| *b == b',').count();
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value.to_vec());
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if (te.is_some() && lengths > 0) || lengths > 1 {
            self.flag.store(true, Ordering::Release);
            return self.off();
        }
        if upgrade {
            return self.off();
        }
        self.state = match (te, length) {
            (Some(te), _) => {
                let last = te.split(|b| *b == b',').next_back();
                if last.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked")) {
                    State::ChunkSize
                } else {
                    // hyper refuses it.
                    State::Off
                }
            }
            (None, _) if lengths == 0 => State::Head,
            (None, Some(0)) => State::Head,
            (None, Some(n)) => State::Body(n),
            // An unreadable length: hyper refuses it.
            (None, None) => State::Off,
        };
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (bool, State) {
        let flag = Arc::new(AtomicBool::new(false));
        let mut i = Inspector::new(flag.clone());
        for c in chunks {
            i.feed(c);
        }
        (flag.load(Ordering::Acquire), i.state)
    }

    #[test]
    fn conflicts_are_flagged() {
        let cases: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 4\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ];
        for c in cases {
            assert!(run(&[c]).0, "{}", String::from_utf8_lossy(c));
            // Byte by byte too.
            let bytes: Vec<&[u8]> = c.chunks(1).collect();
            assert!(run(&bytes).0, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn bare_lf_heads_are_flagged() {
        let c: &[u8] =
            b"POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n";
        assert_eq!(run(&[c]), (true, State::Off));
        let bytes: Vec<&[u8]> = c.chunks(1).collect();
        assert_eq!(run(&bytes), (true, State::Off));
        let d: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n";
        assert_eq!(run(&[d]), (true, State::Off));
        // A body arriving in the same read as its head may hold any byte.
        let f: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\na\nb\nc\n";
        assert_eq!(run(&[f]), (false, State::Head));
        let g: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\n\r\nx\ny";
        assert_eq!(run(&[g]), (false, State::Body(597)));
        // Leading empty lines are still allowed, CRLF or not.
        let e: &[u8] = b"\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(run(&[e]), (false, State::Head));
    }

    #[test]
    fn framing_is_followed_across_reads_and_requests() {
        // Header-like text inside a length-delimited body is just data.
        let inner: &[u8] =
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut a = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        )
        .into_bytes();
        a.extend_from_slice(inner);
        assert_eq!(run(&[&a]), (false, State::Head));
        let (f, s) = run(&[&a[..a.len() - 5]]);
        assert_eq!((f, s), (false, State::Body(5)));

        // A chunked request with a trailer, then a bare GET, byte by byte.
        let b: &[u8] = b"\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(run(&[&a, b]), (false, State::Head));
        let mut all = a.clone();
        all.extend_from_slice(b);
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(run(&bytes), (false, State::Head));

        // A conflicting head after them, split across reads.
        let (f, s) = run(&[
            &a,
            b,
            b"GET /d HTTP/1.1\r\nContent-Len",
            b"gth: 0\r\nTransfer-Enc",
            b"oding: chunked\r\n\r\n",
        ]);
        assert_eq!((f, s), (true, State::Off));
        // Chunk data that looks like a conflicting head is data.
        let c: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nGET / HTTP/1.1\r\nContent-Le\r\n0\r\n\r\n";
        assert_eq!(run(&[c]), (false, State::Head));
    }
}
