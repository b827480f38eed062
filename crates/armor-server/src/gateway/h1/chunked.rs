//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly from the
//! connection's read buffer: hexadecimal sizes checked for overflow, every
//! line ended by CRLF (a bare CR or LF is an error), chunk extensions
//! ignored, trailers read and dropped. A size line holds at most
//! [`MAX_LINE`] bytes and the trailers [`MAX_TRAILERS`] in all, so an
//! upstream cannot make the gateway buffer without bound.

use std::io;

use bytes::{Buf as _, Bytes, BytesMut};

/// Longest chunk-size line (extensions included), CRLF included.
const MAX_LINE: usize = 4 * 1024;
/// Most bytes of trailer fields.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Where the decoder stands between polls.
#[derive(Debug)]
pub(super) struct Decoder(State);

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The last chunk and the trailers have been read.
    End,
}

fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The length of the line at the start of `buf`, CRLF included, once it
/// is all there; an error for a bare CR or LF, or a line longer than
/// `max`.
fn line(buf: &[u8], max: usize) -> io::Result<Option<usize>> {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|b| *b == b'\n' || *b == b'\r') {
        Some(i) if window.get(i..i + 2) == Some(b"\r\n") => Ok(Some(i + 2)),
        // A CR that may yet be followed by its LF.
        Some(i) if i + 1 == buf.len() && buf[i] == b'\r' && i + 2 <= max => Ok(None),
        Some(_) => Err(bad("chunked: a line not ended by CRLF")),
        None if buf.len() >= max => Err(bad("chunked: line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line (without its CRLF): hex digits, then
/// optionally whitespace and `;` extensions.
fn size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return Err(bad("chunked: no chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(bad("chunked: bad chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(v)))
            .ok_or_else(|| bad("chunked: chunk size overflows"))
    })
}

impl Decoder {
    pub(super) fn new() -> Self {
        Decoder(State::Size)
    }

    /// Decodes from `buf` what it can: the next data, or the end.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        loop {
            match self.0 {
                State::Size => {
                    let Some(n) = line(buf, MAX_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = size(&buf[..n - 2])?;
                    buf.advance(n);
                    self.0 = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = left.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.0 = if n == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n)
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(bad("chunked: data not followed by CRLF"));
                        }
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunked: data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.0 = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(n) = line(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Step::More);
                    };
                    buf.advance(n);
                    if n == 2 {
                        self.0 = State::Done;
                        return Ok(Step::End);
                    }
                    self.0 = State::Trailers(seen + n);
                }
                State::Done => return Ok(Step::End),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything decoded from `input` fed `at` bytes at a time.
    fn decode(input: &[u8], at: usize) -> io::Result<(Vec<u8>, BytesMut)> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            match d.step(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::End => return Ok((out, buf)),
                Step::More => {
                    if rest.is_empty() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let k = at.min(rest.len());
                    buf.extend_from_slice(&rest[..k]);
                    rest = &rest[k..];
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let input = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\ny: 2\r\n\r\nNEXT";
        for at in [1, 2, 3, 7, 1000] {
            let (out, left) = decode(input, at).unwrap();
            assert_eq!(out, b"hello world0123456789", "{at}");
            // What follows the body stays in the buffer (or unread).
            assert!(b"NEXT".starts_with(&left), "{at}");
        }
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for input in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nx: 1\n\r\n",
        ] {
            for at in [1, 1000] {
                let r = decode(input, at);
                assert!(
                    r.as_ref()
                        .is_err_and(|e| e.kind() == io::ErrorKind::InvalidData),
                    "{:?} at {at}: {r:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Without bound: a size line or trailers that never end.
        let long = [b"1;".as_slice(), &[b'x'; MAX_LINE]].concat();
        assert!(decode(&long, 4096).is_err());
        let trailers = [
            b"0\r\n".as_slice(),
            &b"x: y\r\n".repeat(MAX_TRAILERS / 6 + 1),
        ]
        .concat();
        assert!(decode(&trailers, 4096).is_err());
        // The largest size that fits is read as such.
        assert_eq!(size(b"ffffffffffffffff").unwrap(), u64::MAX);
    }
}
