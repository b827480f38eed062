//! An answer that comes while the request is still being written.
//!
//! An upstream may refuse a request from its head alone (a `413`, a
//! `401`) and then neither read the rest of the body nor close. Once the
//! socket takes no more of the request, what the upstream has sent is
//! read: a refusal (a whole final head with a status of 400 to 599) ends
//! the writing and is relayed, and the connection is not reused. Interim
//! answers (`1xx`: a `100 Continue` to a forwarded `Expect`) are looked
//! past and the writing goes on; any other answer (a `2xx` of an upstream
//! that answers while it reads, say) is left for after the request, as
//! before: the writing waits for the upstream to read. Nothing is taken
//! from the read buffer here: the answer head is read from it afterwards
//! by `head::read`, interim answers and limits included, and bytes in it
//! mean an answer began (so the request is never sent again).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWrite as _;
use tokio::net::TcpStream;

use super::head::{MAX_HEAD, MAX_HEADERS};

/// What the bytes the upstream sent so far say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Early {
    /// Nothing, or not enough to tell.
    Undecided,
    /// A whole final answer head with a status of 400 to 599: the rest of
    /// the request is not waited for.
    Refusal,
    /// Anything else: read once the request is written.
    Other,
}

/// What has been looked at of the upstream's bytes while one request is
/// written: the interim answers already looked past, and whether the
/// answer was found to be one that waits for the request.
#[derive(Default)]
pub(super) struct Watch {
    at: usize,
    other: bool,
}

impl Watch {
    /// What `buf` (the connection's read buffer, only ever appended to
    /// while the request is written) starts with, without taking anything
    /// from it: whole interim answers (not `101`) are looked past, as
    /// `head::read` drops them later, with the same parser and the same
    /// limit on their total size. Interim answers already looked past are
    /// not parsed again.
    pub(super) fn look(&mut self, buf: &[u8]) -> Early {
        debug_assert!(
            self.at <= buf.len(),
            "the read buffer shrank while a request was written"
        );
        loop {
            if self.other || self.at >= MAX_HEAD {
                self.other = true;
                return Early::Other;
            }
            if self.at == buf.len() {
                return Early::Undecided;
            }
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut answer = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut answer,
                &buf[self.at..],
                &mut fields,
            );
            match parsed {
                Ok(httparse::Status::Complete(len)) => match answer.code {
                    Some(code) if (100..200).contains(&code) && code != 101 => self.at += len,
                    Some(400..=599) => return Early::Refusal,
                    _ => self.other = true,
                },
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Early::Undecided,
                _ => self.other = true,
            }
        }
    }
}

/// Writes `a` then `b` (vectored), as far as the socket takes them;
/// while it takes nothing, reads what the upstream sends into `rbuf` and
/// fails with [`io::ErrorKind::Other`] once that is a refusal (or with
/// [`io::ErrorKind::UnexpectedEof`] once the upstream has closed). What
/// it reads stays in `rbuf`, for `head::read`.
pub(super) fn poll_write(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    watch: &mut Watch,
    cx: &mut Context<'_>,
    a: &[u8],
    b: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        let wrote = if a.is_empty() {
            Pin::new(&mut *stream).poll_write(cx, b)
        } else if b.is_empty() {
            Pin::new(&mut *stream).poll_write(cx, a)
        } else {
            Pin::new(&mut *stream).poll_write_vectored(cx, &[IoSlice::new(a), IoSlice::new(b)])
        };
        if wrote.is_ready() {
            return wrote;
        }
        match watch.look(rbuf) {
            Early::Refusal => {
                return Poll::Ready(Err(io::Error::other(
                    "the upstream refused the request before reading all of it",
                )))
            }
            Early::Other => return Poll::Pending,
            Early::Undecided => {}
        }
        // A read that would block leaves this call pending, woken by
        // either the socket's room to write or the upstream's bytes.
        match crate::gateway::pool::poll_fill(stream, rbuf, cx, 0) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before reading all of the request",
                )))
            }
            // Something read: the write is tried again, then the buffer looked at.
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn early(buf: &[u8]) -> Early {
        Watch::default().look(buf)
    }

    #[test]
    fn refusals_end_the_writing_and_interim_answers_are_looked_past() {
        assert_eq!(early(b""), Early::Undecided);
        assert_eq!(early(b"HTTP/1.1 41"), Early::Undecided);
        // A refusal only once its head is whole (so it can be relayed).
        assert_eq!(
            early(b"HTTP/1.1 413 Payload Too Large\r\n"),
            Early::Undecided
        );
        assert_eq!(
            early(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"),
            Early::Refusal
        );
        assert_eq!(early(b"HTTP/1.0 503 x\r\n\r\n"), Early::Refusal);
        assert_eq!(early(b"HTTP/1.1 200 OK\r\n\r\n"), Early::Other);
        assert_eq!(early(b"HTTP/1.1 307 x\r\n\r\n"), Early::Other);
        assert_eq!(early(b"HTTP/1.1 101 Switching\r\n\r\n"), Early::Other);
        assert_eq!(early(b"HTTP/1.1 600 x\r\n\r\n"), Early::Other);
        assert_eq!(early(b"garbage\r\n\r\n"), Early::Other);
        assert_eq!(early(b"HTTP/1.1 4001 x\r\n\r\n"), Early::Other);
        assert_eq!(early(b"HTTP/1.1 1000 x\r\n\r\n"), Early::Other);
        // Interim answers, then what follows.
        assert_eq!(early(b"HTTP/1.1 100 Continue\r\n\r\n"), Early::Undecided);
        assert_eq!(early(b"HTTP/1.1 100 Continue\r\n"), Early::Undecided);
        assert_eq!(
            early(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 401 No\r\n\r\n"),
            Early::Refusal
        );
        // Bare line feeds: the interim ends at its own blank line, not at
        // a later answer's, and what follows it is read as an answer.
        assert_eq!(
            early(b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nHTTP/1.1 418 x\r\n\r\n"),
            Early::Other
        );
        assert_eq!(
            early(b"HTTP/1.1 100 Continue\n\nHTTP/1.1 413 x\n\n"),
            Early::Refusal
        );
        assert_eq!(early(b"HTTP/1.1 100 Continue\r\nbad\r\n\r\n"), Early::Other);
        // Interim answers count towards the head's limit together.
        let mut many = Vec::new();
        while many.len() <= MAX_HEAD {
            many.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        assert_eq!(early(&many), Early::Other);
    }

    #[test]
    fn a_watch_resumes_after_what_it_has_looked_past() {
        let mut w = Watch::default();
        let mut buf = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        assert_eq!(w.look(&buf), Early::Undecided);
        assert_eq!(w.at, buf.len());
        buf.extend_from_slice(b"HTTP/1.1 413 x\r\n");
        assert_eq!(w.look(&buf), Early::Undecided);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(w.look(&buf), Early::Refusal);
        let mut w = Watch::default();
        assert_eq!(w.look(b"HTTP/1.1 200 OK\r\n\r\n"), Early::Other);
        // Settled: not parsed again, whatever follows.
        assert_eq!(w.look(b"HTTP/1.1 413 x\r\n\r\n"), Early::Other);
    }
}
