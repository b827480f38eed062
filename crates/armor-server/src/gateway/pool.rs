//! The upstream's connections: making new ones, keeping idle ones.
//!
//! A connection ([`Conn`]) is a TCP stream (Nagle off) with its read
//! buffer and a write buffer kept from one request to the next; what is
//! said on it is `h1`'s business. No task runs per connection: an idle one
//! sits in the pool, a busy one is owned by the request using it.
//!
//! - Idle connections are taken most recently used first; one idle for
//!   longer than [`POOL_IDLE_TIMEOUT`] is dropped when found, and past
//!   [`POOL_MAX_IDLE`] the oldest is closed.
//! - Before reuse, a connection must read as open and silent: closed by
//!   the upstream meanwhile, or holding bytes nobody asked for, it is
//!   closed instead.
//! - Only a connection whose answer was read to its end, with nothing
//!   after it, comes back (`h1::Answer` decides).

use std::future::Future as _;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::uri;
use bytes::BytesMut;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most idle connections kept; past it the oldest is closed, so a burst
/// does not leave its connections open for good.
const POOL_MAX_IDLE: usize = 256;

/// A write buffer grown past this (a long head, many small chunks) is not
/// kept for the next request.
const WBUF_KEEP: usize = 16 * 1024;

/// Smallest and largest read into the read buffer.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// [`Conn::poll_fill`] on a connection's parts, for callers that hold its
/// write buffer meanwhile.
pub(super) fn poll_fill(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<io::Result<usize>> {
    rbuf.reserve(want.clamp(MIN_READ, MAX_READ));
    let read = stream.read_buf(rbuf);
    std::pin::pin!(read).as_mut().poll(cx)
}

/// One connection to the upstream.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet handed on; empty between requests.
    pub(super) rbuf: BytesMut,
    /// The request head (and small body parts) before they are written.
    pub(super) wbuf: Vec<u8>,
}

impl Conn {
    /// Reads what the socket has into the read buffer, with room for
    /// about `want` bytes (within [`MIN_READ`]..[`MAX_READ`]); `Ok(0)` at
    /// the end of the stream.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.rbuf, cx, want)
    }

    /// Still open, and nothing waiting to be read: asked of the socket
    /// itself (one `recv(MSG_PEEK)`), not of the runtime's readiness,
    /// which may not have seen bytes or a close that arrived after the
    /// last answer ended (a HEAD answer followed by a body, say): those
    /// must never be read as the next caller's answer.
    fn usable(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(
            socket2::SockRef::from(&self.stream).peek(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Keep-alive HTTP/1.1 connections to one upstream, most recently used
/// last (taken first).
pub(super) struct Pool {
    /// The upstream's host (an IPv6 address without its brackets).
    host: String,
    port: u16,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// No connection yet: they are made on demand, to `authority`.
    pub(super) fn new(authority: &uri::Authority) -> Self {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Pool {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently used idle connection that is still usable.
    pub(super) fn checkout(&self) -> Option<Conn> {
        loop {
            // The lock is held for the pop only, not the socket check.
            let c = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if c.since.elapsed() <= POOL_IDLE_TIMEOUT && c.conn.usable() {
                return Some(c.conn);
            }
        }
    }

    /// A new connection (the host name resolved anew, each address tried
    /// in turn).
    pub(super) async fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
        })
    }

    /// Back into the pool: a connection whose answer was read to its end
    /// and whose read buffer is empty.
    pub(super) fn put(&self, mut conn: Conn) {
        if !conn.rbuf.is_empty() {
            return;
        }
        if conn.wbuf.capacity() > WBUF_KEEP {
            conn.wbuf = Vec::new();
        }
        // A long body read leaves a large buffer behind: not kept idle.
        if conn.rbuf.capacity() > 2 * MIN_READ {
            conn.rbuf = BytesMut::new();
        }
        let conn = Idle {
            conn,
            since: Instant::now(),
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest are at the front: drop those expired, and one past
        // the cap.
        let expired = idle
            .iter()
            .take_while(|c| c.since.elapsed() > POOL_IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() >= POOL_MAX_IDLE {
            idle.remove(0);
        }
        idle.push(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_taken_from_the_authority() {
        for (authority, host, port) in [
            ("127.0.0.1:9000", "127.0.0.1", 9000),
            ("[::1]:8080", "::1", 8080),
            ("app.internal", "app.internal", 80),
        ] {
            let pool = Pool::new(&authority.parse().unwrap());
            assert_eq!((pool.host.as_str(), pool.port), (host, port), "{authority}");
        }
    }
}
