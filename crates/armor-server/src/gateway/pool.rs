//! The upstream connection pool.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::Uri;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service as _;

/// Keep-alive HTTP/1.1 connections to the upstream, most recently used
/// last (taken first). What hyper-util's pooled client did for one
/// destination, without its per-request bookkeeping (pool key, checkout
/// race, connection info in every response).
///
/// - A connection is reused only when idle and open; one idle for longer
///   than [`POOL_IDLE_TIMEOUT`] is dropped when found.
/// - A request that a reused connection refused before sending any of it
///   (closed meanwhile by the upstream) is sent again on a new one.
/// - A connection goes back once its answer has been read to the end.
pub(super) struct Pool {
    connector: HttpConnector,
    /// `http://authority/`, what the connector resolves.
    dst: Uri,
    idle: Mutex<Vec<Idle>>,
}

/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most idle connections kept; past it the oldest is closed, so a burst
/// does not leave its connections open for good.
const POOL_MAX_IDLE: usize = 256;

struct Idle {
    tx: SendRequest<Body>,
    since: std::time::Instant,
}

/// Why the upstream gave no answer head.
#[derive(Debug)]
pub(super) enum UpstreamError {
    /// No TCP connection.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP exchange failed (handshake, request, answer head).
    Send(hyper::Error),
}

impl UpstreamError {
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("client error (Connect)"),
            UpstreamError::Send(_) => f.write_str("client error (SendRequest)"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(&**e),
            UpstreamError::Send(e) => Some(e),
        }
    }
}

impl Pool {
    /// Sends `req` and waits for the answer head. The connection comes
    /// back with it, to be handed to [`Pool::release`] once the answer's
    /// body has been read to the end.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: axum::http::Request<Body>,
    ) -> Result<(Response<Incoming>, SendRequest<Body>), UpstreamError> {
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, tx)),
                Err(mut e) => match e.take_message() {
                    // Not sent: the reused connection had been closed.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Send(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if conn.tx.is_ready() && conn.since.elapsed() <= POOL_IDLE_TIMEOUT {
                return Some(conn.tx);
            }
        }
        None
    }

    /// Back into the pool once idle: at once when its answer has been read
    /// to the end (the usual case: no task, no wake-up), else when the
    /// connection says it is ready.
    pub(super) fn release(self: &Arc<Self>, mut tx: SendRequest<Body>) {
        if tx.is_ready() {
            self.put(tx);
        } else if !tx.is_closed() {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.put(tx);
                }
            });
        }
    }

    fn put(&self, tx: SendRequest<Body>) {
        let conn = Idle {
            tx,
            since: std::time::Instant::now(),
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

    /// A new connection, ready for a request.
    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(self.dst.clone())
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Send)?;
        let (err_tx, err_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection error: {e:?}");
                let _ = err_tx.send(e);
            }
        });
        match tx.ready().await {
            Ok(()) => Ok(tx),
            // Closed before it was ready: the connection's own error says why.
            Err(e) if e.is_closed() => Err(UpstreamError::Send(err_rx.await.unwrap_or(e))),
            Err(e) => Err(UpstreamError::Send(e)),
        }
    }
}

impl Pool {
    /// No connection yet: they are made on demand, to `dst`
    /// (`http://authority/`).
    pub(super) fn new(connector: HttpConnector, dst: Uri) -> Self {
        Pool {
            connector,
            dst,
            idle: Mutex::new(Vec::new()),
        }
    }
}
