//! The answer's body: owns the connection and decodes frames straight from
//! the socket as the server polls it (no task, no channel).
//!
//! Read to its end with the connection reusable and nothing after it, the
//! connection goes back to the pool at once. Dropped before its end (the
//! client went away), failed, or delimited by the close, the connection is
//! closed. A body cut short by the upstream ends the stream with an error.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::http::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::chunked::{Decoder, Step};
use super::head::{Framing, Head};
use crate::gateway::pool::{Conn, Pool};

/// Reads for a chunked or close-delimited body ask for this much room.
const READ: usize = 16 * 1024;

enum Kind {
    Length(u64),
    Chunked(Decoder),
    Close,
    Done,
}

/// An upstream answer's body.
pub(in crate::gateway) struct Answer {
    /// `None` once the body has ended (or failed).
    conn: Option<Conn>,
    pool: Arc<Pool>,
    kind: Kind,
    /// The answer allows the connection to be reused after it.
    reuse: bool,
}

/// The answer, its body reading on from `conn`.
pub(super) fn answer(conn: Conn, head: Head, pool: Arc<Pool>) -> Response<Answer> {
    let kind = match head.framing {
        Framing::Empty | Framing::Length(0) => Kind::Done,
        Framing::Length(n) => Kind::Length(n),
        Framing::Chunked => Kind::Chunked(Decoder::new()),
        Framing::Close => Kind::Close,
    };
    let mut body = Answer {
        conn: Some(conn),
        pool,
        reuse: head.reuse,
        kind,
    };
    if matches!(body.kind, Kind::Done) {
        body.finish();
    }
    Response::from_parts(head.parts, body)
}

impl Answer {
    /// The end: the connection back to the pool if it may serve another
    /// request (the pool keeps it only with nothing left over), else
    /// closed.
    fn finish(&mut self) {
        self.kind = Kind::Done;
        if let Some(conn) = self.conn.take() {
            if self.reuse {
                self.pool.put(conn);
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.kind = Kind::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the upstream closed the connection before the end of the answer",
    )
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.kind {
                Kind::Done => return Poll::Ready(None),
                Kind::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*left).min(conn.rbuf.len() as u64);
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = usize::try_from(*left).unwrap_or(usize::MAX);
                    match ready!(conn.poll_fill(cx, want)) {
                        Ok(0) => return this.fail(cut_short()),
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    }
                }
                Kind::Chunked(decoder) => match decoder.step(&mut conn.rbuf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => match ready!(conn.poll_fill(cx, READ)) {
                        Ok(0) => return this.fail(cut_short()),
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    },
                    Err(e) => return this.fail(e),
                },
                Kind::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, READ)) {
                        Ok(0) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Done => SizeHint::with_exact(0),
            Kind::Chunked(_) | Kind::Close => SizeHint::default(),
        }
    }
}
