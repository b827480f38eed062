//! The gateway's HTTP/1.1 client: one request out on a pooled connection
//! and its answer back, all inside the request's own task (no connection
//! task, no channel: the answer's body reads the socket itself).
//!
//! - `write`: the request head from the header map, then the body: in one
//!   write with a `Content-Length` when it is already in memory, else
//!   streamed (`Content-Length` when known, else chunked).
//! - `head`: the answer head (`httparse`, bounded), interim answers
//!   skipped, and how its body is framed (RFC 9112 §6.3).
//! - `body`: the answer body, decoded from the socket as it is polled;
//!   the connection goes back to the pool when it ends cleanly.
//! - `chunked`: the strict chunked decoder.
//! - `early`: while a write waits, an upstream's early refusal ends it.
//!
//! Retry: a request that failed on a reused connection before any byte of
//! an answer arrived is sent once more on a new connection, if its body
//! was in memory (so it can be sent again) and either nothing of it had
//! been written or its method is idempotent (the upstream may have acted
//! on a POST it never answered). Never once answer bytes arrived.

use std::io;
use std::sync::Arc;

use axum::http::header::HeaderMap;
use axum::http::{uri, Method, Response};

use super::headers::Added;
use super::pool::{Conn, Pool};

mod body;
mod chunked;
mod early;
mod head;
mod write;

pub(super) use body::Answer;

/// The request target as written on the request line.
pub(super) enum Target {
    /// `/path?query`.
    Origin(uri::PathAndQuery),
    /// `host:port`, for CONNECT.
    Authority(uri::Authority),
}

impl Target {
    fn as_str(&self) -> &str {
        match self {
            Target::Origin(pq) => pq.as_str(),
            Target::Authority(a) => a.as_str(),
        }
    }
}

/// A request for the upstream: its header map goes out as it is, but the
/// names the scrub left for the writer to skip (the framing among them:
/// the body's own is added here), then the lines the gateway added.
pub(super) struct Outgoing {
    pub(super) method: Method,
    pub(super) target: Target,
    pub(super) headers: HeaderMap,
    pub(super) added: Added,
    pub(super) body: axum::body::Body,
}

/// Why the upstream gave no answer head.
#[derive(Debug)]
pub(super) enum UpstreamError {
    /// No TCP connection.
    Connect(io::Error),
    /// Writing the request or reading the answer failed.
    Io(io::Error),
    /// The upstream closed the connection before a whole answer head.
    Closed,
    /// An answer head that cannot be relayed safely.
    Malformed(&'static str),
    /// The request's own body failed (too large, too slow, broken off).
    Body(axum::Error),
}

impl UpstreamError {
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    pub(super) fn is_malformed(&self) -> bool {
        matches!(self, UpstreamError::Malformed(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("client error (Connect)"),
            UpstreamError::Io(_) => f.write_str("client error (SendRequest)"),
            UpstreamError::Closed => {
                f.write_str("the upstream closed the connection before answering")
            }
            UpstreamError::Malformed(why) => write!(f, "invalid answer from the upstream: {why}"),
            UpstreamError::Body(_) => f.write_str("the request body failed"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) | UpstreamError::Io(e) => Some(e),
            UpstreamError::Body(e) => Some(e),
            UpstreamError::Closed | UpstreamError::Malformed(_) => None,
        }
    }
}

/// A failed exchange, and how far it got.
struct Failure {
    error: UpstreamError,
    /// Some of the request had been written.
    written: bool,
    /// Some of an answer had arrived.
    answered: bool,
}

impl Failure {
    /// Whether sending the request again on a new connection is safe.
    fn may_retry(&self, method: &Method) -> bool {
        matches!(self.error, UpstreamError::Io(_) | UpstreamError::Closed)
            && !self.answered
            && (!self.written || idempotent(method))
    }
}

/// How long an answer is waited for after the upstream stopped taking the
/// request (it answers at once or not at all: it has closed).
const EARLY_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// RFC 9110 §9.2.2.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends `req` and reads the answer head; the answer's body reads the
/// rest from the connection (see [`Answer`]).
pub(super) async fn send(
    pool: &Arc<Pool>,
    req: Outgoing,
) -> Result<Response<Answer>, UpstreamError> {
    let Outgoing {
        method,
        target,
        headers,
        added,
        body,
    } = req;
    let headers = write::Headers {
        map: &headers,
        added: added.as_bytes(),
    };
    let mut payload = write::Payload::new(body, &method).await?;
    let (mut conn, mut reused) = match pool.checkout() {
        Some(conn) => (conn, true),
        None => (pool.connect().await.map_err(UpstreamError::Connect)?, false),
    };
    loop {
        match exchange(&mut conn, &method, &target, headers, &mut payload).await {
            Ok(head) => return Ok(body::answer(conn, head, Arc::clone(pool))),
            Err(f) if reused && payload.replayable() && f.may_retry(&method) => {
                tracing::debug!(error = %f.error, "reused upstream connection failed, sending again on a new one");
                conn = pool.connect().await.map_err(UpstreamError::Connect)?;
                reused = false;
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// One request written, one answer head read.
async fn exchange(
    conn: &mut Conn,
    method: &Method,
    target: &Target,
    headers: write::Headers<'_>,
    payload: &mut write::Payload,
) -> Result<head::Head, Failure> {
    let mut written = false;
    let sent = write::request(
        conn,
        method,
        target.as_str(),
        headers,
        payload,
        &mut written,
    )
    .await;
    if let Err(mut error) = sent {
        // An upstream may answer before it has read the whole request (an
        // early 413) and then close, or refuse and stop reading (the write
        // ends, see `early`): its answer is waiting here. It is relayed,
        // and the connection not reused. Bytes read while writing mean an
        // answer began, whatever becomes of it.
        let mut answered = !conn.rbuf.is_empty();
        if (written || answered) && matches!(error, UpstreamError::Io(_)) {
            match tokio::time::timeout(EARLY_ANSWER_WAIT, head::read(conn, method)).await {
                Ok(Ok(mut head)) => {
                    head.reuse = false;
                    return Ok(head);
                }
                // An answer began but cannot be relayed: its error is
                // the one to report.
                Ok(Err((e, true))) => {
                    error = e;
                    answered = true;
                }
                Ok(Err((_, false))) => {}
                // A second without a whole head, and what came of it (an
                // interim answer, say) may have been dropped: as answered,
                // so the request is not sent again.
                Err(_) => answered = true,
            }
        }
        return Err(Failure {
            error,
            written,
            answered,
        });
    }
    head::read(conn, method)
        .await
        .map_err(|(error, answered)| Failure {
            error,
            written: true,
            answered,
        })
}
