//! Connections: a listener whose streams watch the HTTP/1 request heads
//! go by, bound the time each part of a request may take, and cap the
//! connections one address may hold.
//!
//! **Framing.** hyper already refuses differing lengths and non-chunked
//! transfer codings, but it resolves `Content-Length` + `Transfer-Encoding:
//! chunked` in favour of chunked and merges equal duplicate lengths,
//! dropping the evidence before a handler sees the request. Such a request
//! is how a desync with some other hop is attempted, so it is refused
//! outright (400, connection closed). The [`inspect`] module follows the
//! framing of each request (length, chunked) to find the next head; it
//! copies nothing. What it cannot follow (a head over 64 KiB, an
//! unreadable length or chunk size, a bare LF line ending, `CONNECT`)
//! flags the connection: that request and every later one on it is refused
//! and the connection closed. Inspection never stops while requests are
//! still served.
//!
//! **Time.** Each connection is in one of four phases, each with its own
//! limit:
//! - a request head has started and is not complete: `--header-timeout`
//!   (slowloris), then `408 Request Timeout` is written and the connection
//!   closed;
//! - a request body is still to come: `--body-timeout` for the whole body,
//!   then reading fails, the request is answered 408 `request_timeout`
//!   where a handler is reading it, and the connection is closed;
//! - no request is in progress and nothing is being written:
//!   `--idle-timeout`, then the connection is closed quietly (bytes that
//!   start no request, such as empty lines, do not restart it);
//! - a request is being handled, or the gateway is streaming its answer:
//!   no limit here (the gateway has its upstream timeout for the answer's
//!   head).
//!
//! Apart from the phases, a write that cannot go on for `--idle-timeout`
//! (a client that stops reading its answers, however many requests it
//! queued) fails, and the connection is closed. A flagged connection gets
//! the head's limit for whatever it still sends.
//!
//! **Addresses.** At most `--max-connections-per-ip` open connections per
//! client address (an IPv6 /64 counts as one); one more is answered
//! `503 too_many_connections` and closed at once. A `--trusted-proxy` is
//! not counted: it carries many clients' connections. Which address a
//! request is from, behind trusted proxies, is [`client`]'s.

pub mod client;
mod inspect;
mod serve;

pub use serve::serve;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::error::Error;
use crate::web::error::ApiError;
use inspect::{Inspector, Refusal};

/// What a slow head gets, before the connection is closed.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 82\r\nconnection: close\r\n\r\n{\"error\":\"request_timeout\",\"error_description\":\"the request head came too slowly\"}";

/// What a connection over the per-address cap gets, before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 97\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"too_many_connections\",\"error_description\":\"this address has too many connections open\"}";

/// The time and connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest a request head may take once its first byte has arrived.
    pub header_timeout: Duration,
    /// The longest a request body may take, from the end of its head.
    pub body_timeout: Duration,
    /// The longest a connection may stay open with no request in progress
    /// and nothing written.
    pub idle_timeout: Duration,
    /// Open connections allowed per client address.
    pub max_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_per_ip: 1024,
        }
    }
}

/// A [`TcpListener`] whose connections are inspected and bounded.
pub struct InspectingListener {
    listener: TcpListener,
    limits: Limits,
    open: Arc<OpenPerIp>,
    /// Peers the per-address cap does not count (trusted proxies, which
    /// carry many clients' connections).
    uncapped: client::TrustedProxies,
}

impl InspectingListener {
    pub fn new(listener: TcpListener, limits: Limits) -> Self {
        InspectingListener {
            listener,
            limits,
            open: Arc::new(OpenPerIp {
                counts: Mutex::new(HashMap::new()),
                max: limits.max_per_ip,
            }),
            uncapped: client::TrustedProxies::default(),
        }
    }

    /// Connections from `proxies` are not counted against the per-address
    /// cap (each client behind them is, in the limiters, by its own
    /// address); the time limits still apply.
    pub fn uncapped(mut self, proxies: client::TrustedProxies) -> Self {
        self.uncapped = proxies;
        self
    }
}

/// Open connections per client address.
struct OpenPerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl OpenPerIp {
    /// Counts one more connection from `ip`, unless it is at the cap.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: self.clone(),
            ip,
        })
    }
}

/// One counted connection; uncounted when dropped.
struct Slot {
    open: Arc<OpenPerIp>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What a connection's stream and its requests share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// A [`Refusal`] as `u8`; 0 while the connection is clean.
    refusal: Arc<AtomicU8>,
    /// Requests being handled (between [`screen`] and the handler's answer).
    in_flight: AtomicUsize,
}

/// The peer of one connection, and its shared state.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub conn: Arc<ConnState>,
}

impl axum::serve::Listener for InspectingListener {
    type Io = Inspected<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.listener).await;
            // IPv6 clients count per /64, as in the limiters; a trusted
            // proxy is not counted.
            let slot = if self.uncapped.trusts(addr.ip()) {
                None
            } else if let Some(slot) = self.open.enter(crate::limit::client_key(addr.ip())) {
                Some(slot)
            } else {
                // Best effort into a fresh socket's send buffer, then closed.
                let _ = io.try_write(TOO_MANY_CONNECTIONS);
                tracing::info!(peer = %addr.ip(), error = "too_many_connections", "connection refused");
                continue;
            };
            let conn = Arc::new(ConnState::default());
            let io = Inspected {
                io,
                inspector: Inspector::new(conn.refusal.clone()),
                limits: self.limits,
                conn: conn.clone(),
                timer: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
                deadline: Instant::now() + self.limits.idle_timeout,
                write_stall: None,
                phase: Phase::Idle,
                heads: 0,
                ended: false,
                _slot: slot,
            };
            return (io, PeerInfo { addr, conn });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(PeerInfo {
            addr: self.listener.local_addr()?,
            conn: Arc::default(),
        })
    }
}

/// Marks a request as being handled while it lives: the connection is not
/// idle meanwhile.
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Marks a request on `peer`'s connection.
    fn on(peer: &PeerInfo) -> Self {
        peer.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(peer.conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who sent a request ([`client::Client`]) and the mark that keeps its
/// connection busy while it is handled: what the gateway is handed with a
/// request it forwards (empty for a request made in process).
#[derive(Default)]
pub struct Sender {
    pub client: Option<client::Client>,
    pub in_flight: Option<InFlight>,
}

/// In front of everything: marks a request from `peer` in flight, and
/// refuses any request on a connection that was flagged, closing it. (Who
/// sent the request is [`client::Client`], which the front works out.)
pub fn screen(peer: Option<&PeerInfo>) -> Result<Option<InFlight>, Box<Response>> {
    let Some(peer) = peer else {
        return Ok(None);
    };
    let refused = match Refusal::from_u8(peer.conn.refusal.load(Ordering::Acquire)) {
        None => return Ok(Some(InFlight::on(peer))),
        Some(Refusal::AmbiguousFraming) => Error::BadRequest(
            "ambiguous framing: a request may not carry both Content-Length and Transfer-Encoding, nor more than one Content-Length, nor end a header line with a bare LF".into(),
        ),
        Some(Refusal::Uninspectable) => Error::BadRequest(
            "the connection carried a request head, length, chunk size or trailer block that is too large or unreadable; open a new connection".into(),
        ),
        Some(Refusal::Tunnel) => Error::MethodNotAllowed("CONNECT: armor is not a forward proxy"),
    };
    let mut resp = ApiError(refused).into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Err(Box::new(resp))
}

/// The error a read gets once the body deadline has passed.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body came too slowly")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether an error (from reading a body) is the body deadline's, and not
/// some other time-out (an upstream's connect, say).
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>()
            || err
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<BodyTimeout>())
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Where a connection stands, for its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is being handled.
    Busy,
    /// Nothing in progress.
    Idle,
    /// A request head has started.
    Head,
    /// A request body is still to come.
    Body,
}

/// A stream whose incoming bytes go through an [`Inspector`], with one
/// timer for the phase it is in.
pub struct Inspected<T> {
    io: T,
    inspector: Inspector,
    limits: Limits,
    conn: Arc<ConnState>,
    /// One per connection. It may run later than `deadline` only while
    /// `deadline` is not due: when it fires early it is set again (so a
    /// later deadline, the common case, costs no timer update).
    timer: Pin<Box<Sleep>>,
    /// When the current phase's limit is reached.
    deadline: Instant,
    /// While a write cannot go on (the client reads nothing): the timer at
    /// whose end the connection is given up.
    write_stall: Option<Pin<Box<Sleep>>>,
    phase: Phase,
    /// [`Inspector::heads`] when the timer was last set.
    heads: u64,
    /// A limit passed: reads end.
    ended: bool,
    _slot: Option<Slot>,
}

impl<T> Inspected<T> {
    fn phase_now(&self) -> Phase {
        // A flagged connection serves nothing more: it gets the head's limit
        // whatever it still sends.
        if self.inspector.head_in_progress() || self.inspector.flagged() {
            Phase::Head
        } else if self.inspector.body_in_progress() {
            Phase::Body
        } else if self.conn.in_flight.load(Ordering::Acquire) == 0 {
            Phase::Idle
        } else {
            Phase::Busy
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Inspected<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        // The timer restarts when the phase changes and with each new
        // request (a request's head and body each get their whole limit).
        let phase = this.phase_now();
        let heads = this.inspector.heads();
        if phase != this.phase || heads != this.heads {
            this.phase = phase;
            this.heads = heads;
            let limit = match phase {
                Phase::Head => Some(this.limits.header_timeout),
                Phase::Body => Some(this.limits.body_timeout),
                Phase::Idle => Some(this.limits.idle_timeout),
                Phase::Busy => None,
            };
            if let Some(limit) = limit {
                this.set_deadline(Instant::now() + limit);
            }
        }
        if phase != Phase::Busy && this.due(cx) {
            this.ended = true;
            match phase {
                Phase::Head => {
                    // Best effort, into an idle socket's send buffer; then
                    // end of input, so hyper drops the half head and closes.
                    let _ = Pin::new(&mut this.io).poll_write(cx, REQUEST_TIMEOUT);
                    let _ = Pin::new(&mut this.io).poll_flush(cx);
                    tracing::info!(
                        error = "request_timeout",
                        "request head not complete in time: 408"
                    );
                }
                Phase::Body => {
                    tracing::info!(
                        error = "request_timeout",
                        "request body not complete in time"
                    );
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, BodyTimeout)));
                }
                _ => tracing::debug!("idle connection closed"),
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            // Bytes alone restart no limit (empty lines dripped between
            // requests do not keep a connection open): a head that starts
            // is timed as a head, a completed one starts a new request.
            this.inspector.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<T> Inspected<T> {
    /// Moves the deadline; the timer only when it would fire too late.
    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Whether the deadline has passed; otherwise the timer is armed to
    /// wake this task at or before it.
    fn due(&mut self, cx: &mut Context<'_>) -> bool {
        use std::future::Future as _;
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= self.deadline {
                return true;
            }
            // Fired early (the deadline moved later): wait for the rest.
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
    }

    /// After a write or flush: progress keeps the connection from being
    /// idle; a write that cannot go on for the idle limit (a client that
    /// stopped reading, however many requests it queued) fails, and hyper
    /// closes the connection.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<R>>,
        wrote: bool,
    ) -> Poll<io::Result<R>> {
        use std::future::Future as _;
        if res.is_ready() {
            self.write_stall = None;
            // Bytes written (not a flush of nothing) are activity.
            if wrote && self.phase == Phase::Idle {
                self.deadline = Instant::now() + self.limits.idle_timeout;
            }
            return res;
        }
        let limit = self.limits.idle_timeout;
        let timer = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.ended = true;
            tracing::info!(
                error = "request_timeout",
                "the client read nothing for the idle limit: closed"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inspected<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        let wrote = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        this.after_write(cx, res, wrote)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_flush(cx);
        this.after_write(cx, res, false)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let wrote = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        this.after_write(cx, res, wrote)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_declare_their_length() {
        for raw in [REQUEST_TIMEOUT, TOO_MANY_CONNECTIONS] {
            let text = std::str::from_utf8(raw).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(declared, body.len(), "{head}");
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
    }
}
