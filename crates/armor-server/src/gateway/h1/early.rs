//! An answer that comes while the request is still being written.
//!
//! An upstream may refuse a request from its head alone (a `413`, a
//! `401`) and then neither read the rest of the body nor close. Once the
//! socket takes no more of the request, what the upstream has sent is
//! read: a refusal (a final status of 400 or more) ends the writing and is
//! relayed, and the connection is not reused. Interim answers (`1xx`: a
//! `100 Continue` to a forwarded `Expect`) are dropped and the writing
//! goes on; any other answer (a `2xx` of an upstream that answers while
//! it reads, say) is left for after the request, as before: the writing
//! waits for the upstream to read.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::AsyncWrite as _;
use tokio::net::TcpStream;

use super::head::MAX_HEAD;

/// What the bytes the upstream sent so far say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Early {
    /// Nothing, or not enough to tell.
    Undecided,
    /// A final answer of 400 or more: the rest of the request is not
    /// waited for.
    Refusal,
    /// Anything else: read once the request is written.
    Other,
}

/// Reads what `buf` starts with, dropping complete interim answers.
pub(super) fn early(buf: &mut BytesMut) -> Early {
    loop {
        // `HTTP/1.x NNN`: the version and the status code.
        let Some(line) = buf.get(..12) else {
            return if b"HTTP/1.".starts_with(&buf[..buf.len().min(7)]) {
                Early::Undecided
            } else {
                Early::Other
            };
        };
        let code = match line {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1', b' ', a, b, c]
                if [a, b, c].iter().all(|d| d.is_ascii_digit()) =>
            {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Early::Other,
        };
        match code {
            400..=599 => return Early::Refusal,
            100 | 102..=199 => match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => buf.advance(end + 4),
                None if buf.len() < MAX_HEAD => return Early::Undecided,
                None => return Early::Other,
            },
            _ => return Early::Other,
        }
    }
}

/// Writes `a` then `b` (vectored), as far as the socket takes them;
/// while it takes nothing, reads what the upstream sends into `rbuf` and
/// fails with [`io::ErrorKind::Other`] once that is a refusal (or with
/// [`io::ErrorKind::UnexpectedEof`] once the upstream has closed).
pub(super) fn poll_write(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
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
        match early(rbuf) {
            Early::Refusal => {
                return Poll::Ready(Err(io::Error::other(
                    "the upstream refused the request before reading all of it",
                )))
            }
            Early::Other => return Poll::Pending,
            Early::Undecided => {}
        }
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        rbuf.reserve(4096);
        match stream.try_read_buf(rbuf) {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before reading all of the request",
                )))
            }
            // Either way the write is tried again: a read that would block
            // has cleared the readiness, so the next round waits.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> (Early, Vec<u8>) {
        let mut buf = BytesMut::from(bytes);
        let e = early(&mut buf);
        (e, buf.to_vec())
    }

    #[test]
    fn refusals_end_the_writing_and_interim_answers_are_dropped() {
        assert_eq!(read(b"").0, Early::Undecided);
        assert_eq!(read(b"HTTP/1.1 41").0, Early::Undecided);
        assert_eq!(
            read(b"HTTP/1.1 413 Payload Too Large\r\n").0,
            Early::Refusal
        );
        assert_eq!(read(b"HTTP/1.0 503 x").0, Early::Refusal);
        assert_eq!(read(b"HTTP/1.1 200 OK\r\n").0, Early::Other);
        assert_eq!(read(b"HTTP/1.1 307 x").0, Early::Other);
        assert_eq!(read(b"HTTP/1.1 101 Switching").0, Early::Other);
        assert_eq!(read(b"garbage").0, Early::Other);
        assert_eq!(read(b"HTTP/2.0 400 x").0, Early::Other);
        assert_eq!(read(b"HTTP/1.1 4x3 x").0, Early::Other);
        // Interim answers: dropped once whole, then the next one is read.
        assert_eq!(
            read(b"HTTP/1.1 100 Continue\r\n\r\n"),
            (Early::Undecided, Vec::new())
        );
        assert_eq!(
            read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 401 No\r\n").0,
            Early::Refusal
        );
        assert_eq!(
            read(b"HTTP/1.1 100 Continue\r\n"),
            (Early::Undecided, b"HTTP/1.1 100 Continue\r\n".to_vec())
        );
        assert_eq!(
            read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            (Early::Other, b"HTTP/1.1 200 OK\r\n".to_vec())
        );
    }
}
