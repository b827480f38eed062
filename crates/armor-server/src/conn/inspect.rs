//! Follows the request framing on one connection (length, chunked) to
//! find each request head, and flags the connection when a head is
//! ambiguous or cannot be followed. Inspection never just stops: once a
//! connection is flagged, every later request on it is refused and the
//! connection closed (see [`super::screen`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;

/// Longest request head (or chunk-size line, or trailer block) inspected;
/// a longer one flags the connection.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Header lines parsed per head.
const MAX_HEADERS: usize = 256;

/// Why a connection is refused from now on (stored as a `u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`, several lengths, or a
    /// bare LF line ending.
    AmbiguousFraming = 1,
    /// A head, chunk-size line or trailer block too long or unreadable to
    /// follow: what comes after it cannot be told apart from a new head.
    Uninspectable = 2,
    /// `CONNECT`: what follows would be a tunnel, not requests.
    Tunnel = 3,
}

impl Refusal {
    pub(super) fn from_u8(v: u8) -> Option<Refusal> {
        match v {
            1 => Some(Refusal::AmbiguousFraming),
            2 => Some(Refusal::Uninspectable),
            3 => Some(Refusal::Tunnel),
            _ => None,
        }
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
    /// Flagged: every later request on the connection is refused.
    Off,
}

/// Follows the request framing on one connection. Work is linear in the
/// bytes read: each byte is searched once, and the buffer holds at most one
/// unfinished head plus one read.
pub(super) struct Inspector {
    state: State,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the current element's end.
    scanned: usize,
    flag: Arc<AtomicU8>,
    /// Request heads completed so far.
    heads: u64,
}

impl Inspector {
    pub(super) fn new(flag: Arc<AtomicU8>) -> Self {
        Inspector {
            state: State::Head,
            buf: Vec::new(),
            scanned: 0,
            flag,
            heads: 0,
        }
    }

    pub(super) fn feed(&mut self, data: &[u8]) {
        if self.state == State::Off {
            return;
        }
        // Usually nothing is left over from the last read: the new bytes
        // are followed where they are, and only an unfinished element's
        // bytes are kept.
        if self.buf.is_empty() {
            let used = self.follow(data);
            if self.state != State::Off {
                self.buf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.follow(&buf);
            if self.state != State::Off {
                buf.drain(..used);
                self.buf = buf;
            }
        }
    }

    /// Follows the framing through `hay` (the unfinished element's bytes,
    /// then the new ones); returns how many bytes are done with.
    fn follow(&mut self, hay: &[u8]) -> usize {
        let mut cur = 0;
        loop {
            let avail = hay.len() - cur;
            match self.state {
                State::Off => return cur,
                State::Body(n) | State::ChunkData(n) => {
                    if avail == 0 {
                        return cur;
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
                        while cur < hay.len() && matches!(hay[cur], b'\r' | b'\n') {
                            cur += 1;
                            self.scanned = 0;
                        }
                    }
                    match self.element(hay, cur) {
                        Some(end) => {
                            cur = end;
                            self.scanned = 0;
                        }
                        None => {
                            if self.state == State::Off {
                                return cur;
                            }
                            if hay.len() - cur >= MAX_HEAD {
                                self.refuse(Refusal::Uninspectable);
                                return cur;
                            }
                            self.scanned = hay.len() - cur;
                            return cur;
                        }
                    }
                }
            }
        }
    }

    /// Request heads completed so far on this connection.
    pub(super) fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether part of a request head has arrived, and not its end.
    pub(super) fn head_in_progress(&self) -> bool {
        self.state == State::Head && !self.buf.is_empty()
    }

    /// Whether the connection is flagged.
    pub(super) fn flagged(&self) -> bool {
        self.state == State::Off
    }

    /// Whether a request's body (or its chunks and trailers) is still to
    /// come.
    pub(super) fn body_in_progress(&self) -> bool {
        matches!(
            self.state,
            State::Body(_) | State::ChunkSize | State::ChunkData(_) | State::Trailers
        )
    }

    /// Flags the connection and stops following it: nothing after this
    /// point is served.
    fn refuse(&mut self, why: Refusal) {
        // The first reason stands.
        let _ = self
            .flag
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Tries to complete the current line-based element starting at `cur`;
    /// returns where it ends.
    fn element(&mut self, hay: &[u8], cur: usize) -> Option<usize> {
        let from = cur + self.scanned.saturating_sub(3);
        match self.state {
            State::Head => {
                // A bare LF: hyper would end a line there, other hops may
                // not, and "\r\n\r\n" would never show where it ends.
                // Only the head is searched: body bytes that arrived in the
                // same read are the body's business.
                let end = find(hay, &HEAD_END, from).map(|p| p + 4);
                let limit = end.unwrap_or(hay.len());
                let fresh = (cur + self.scanned).max(cur + 1);
                if fresh < limit
                    && memchr::memchr_iter(b'\n', &hay[fresh..limit])
                        .any(|i| hay[fresh + i - 1] != b'\r')
                {
                    self.refuse(Refusal::AmbiguousFraming);
                    return None;
                }
                let end = end?;
                self.head(&hay[cur..end]);
                Some(end)
            }
            State::ChunkSize => {
                let eol = find(hay, &LINE_END, from)?;
                let line = &hay[cur..eol];
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
                    None => self.refuse(Refusal::Uninspectable),
                }
                Some(eol + 2)
            }
            State::Trailers => {
                let end = if hay[cur..].starts_with(b"\r\n") {
                    cur + 2
                } else {
                    find(hay, &HEAD_END, from)? + 4
                };
                self.state = State::Head;
                Some(end)
            }
            _ => None,
        }
    }

    /// Looks at one complete request head and sets the next state.
    fn head(&mut self, bytes: &[u8]) {
        self.heads += 1;
        if !may_frame(bytes) {
            // No body follows, as hyper sees it too. A head that does not
            // parse at all is hyper's to refuse: it answers 400 and closes
            // the connection, so nothing after it is read as a request.
            return;
        }
        // Left uninitialised: only the parsed ones are written.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(bytes, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            // hyper refuses it, or it is beyond what is inspected.
            _ => return self.refuse(Refusal::Uninspectable),
        }
        if req.method == Some("CONNECT") {
            return self.refuse(Refusal::Tunnel);
        }
        let mut lengths = 0usize;
        let mut length = None;
        let mut te = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                // `Content-Length: 5, 5` is two lengths too.
                lengths += h.value.split(|b| *b == b',').count();
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value.to_vec());
            }
        }
        if (te.is_some() && lengths > 0) || lengths > 1 {
            return self.refuse(Refusal::AmbiguousFraming);
        }
        // An `Upgrade` header changes nothing: armor never switches
        // protocols (the gateway does not forward `Upgrade`), so the next
        // bytes are another request and are followed like any other.
        self.state = match (te, length) {
            (Some(te), _) => {
                let last = te.split(|b| *b == b',').next_back();
                if last.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked")) {
                    State::ChunkSize
                } else {
                    // hyper refuses it too.
                    return self.refuse(Refusal::Uninspectable);
                }
            }
            (None, _) if lengths == 0 => State::Head,
            (None, Some(0)) => State::Head,
            (None, Some(n)) => State::Body(n),
            // An unreadable length: hyper refuses it too.
            (None, None) => return self.refuse(Refusal::Uninspectable),
        };
    }
}

/// Whether a head may frame a body or open a tunnel: it names
/// `Content-Length` or `Transfer-Encoding` somewhere (in any case, name or
/// not), or its request line starts with `CONNECT`. A head that does
/// neither has no body for hyper or for the inspector, and needs no parse
/// here: a scan for `-` (a few per head) instead of a second `httparse`.
fn may_frame(head: &[u8]) -> bool {
    fn ends_with(hay: &[u8], word: &[u8]) -> bool {
        hay.len() >= word.len() && hay[hay.len() - word.len()..].eq_ignore_ascii_case(word)
    }
    fn starts_with(hay: &[u8], word: &[u8]) -> bool {
        hay.get(..word.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(word))
    }
    head.starts_with(b"CONNECT")
        || memchr::memchr_iter(b'-', head).any(|i| {
            let (before, after) = (&head[..i], &head[i + 1..]);
            (ends_with(before, b"content") && starts_with(after, b"length"))
                || (ends_with(before, b"transfer") && starts_with(after, b"encoding"))
        })
}

/// The end of a head and the end of a line, each with its searcher built
/// once: `memmem::find` builds one per call when 64 bytes or more are
/// searched, as they are in most request heads and every signed one.
static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
static LINE_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n"));

fn find(hay: &[u8], finder: &Finder<'_>, from: usize) -> Option<usize> {
    finder.find(hay.get(from..)?).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (bool, State) {
        let (why, state) = run_why(chunks);
        (why == Some(Refusal::AmbiguousFraming), state)
    }

    fn run_why(chunks: &[&[u8]]) -> (Option<Refusal>, State) {
        let flag = Arc::new(AtomicU8::new(0));
        let mut i = Inspector::new(flag.clone());
        for c in chunks {
            i.feed(c);
        }
        (Refusal::from_u8(flag.load(Ordering::Acquire)), i.state)
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

    const SMUGGLE: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn an_upgrade_header_does_not_stop_the_inspection() {
        let first: &[u8] =
            b"GET /health HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(run_why(&[first]), (None, State::Head));
        assert_eq!(
            run_why(&[first, SMUGGLE]),
            (Some(Refusal::AmbiguousFraming), State::Off)
        );
    }

    #[test]
    fn a_head_past_the_limit_flags_the_connection() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(run_why(&[&big]), (Some(Refusal::Uninspectable), State::Off));
        // Nothing after it is followed, so nothing after it is served.
        assert_eq!(
            run_why(&[&big, b"\r\n\r\n", SMUGGLE]).0,
            Some(Refusal::Uninspectable)
        );
    }

    #[test]
    fn unreadable_framing_and_connect_flag_the_connection() {
        let cases: [(&[u8], Refusal); 6] = [
            (
                b"GET / HTTP/1.1\r\nBad Header\r\nContent-Length: 0\r\n\r\n",
                Refusal::Uninspectable,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                Refusal::Uninspectable,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Refusal::Uninspectable,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Refusal::Uninspectable,
            ),
            (
                b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                Refusal::Tunnel,
            ),
            (b"\r\n\nCONNECT a:443 HTTP/1.1\r\n\r\n", Refusal::Tunnel),
        ];
        for (c, why) in cases {
            assert_eq!(
                run_why(&[c]),
                (Some(why), State::Off),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn only_heads_that_may_frame_a_body_are_parsed_again() {
        // Framing names in any case, anywhere in the head, and CONNECT;
        // near misses are not.
        let cases: [(&[u8], bool); 10] = [
            (b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 4\r\n\r\n", true),
            (
                b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
                true,
            ),
            (b"GET /content-length HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nX: transfer-encoding\r\n\r\n", true),
            (b"CONNECT a:443 HTTP/1.1\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Content: length\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Type: a\r\nX-Length: 1\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nX: content length-transfer encoding\r\n\r\n",
                false,
            ),
            (b"-length\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nX: transfer-\r\n\r\n", false),
        ];
        for (head, frames) in cases {
            assert_eq!(may_frame(head), frames, "{}", String::from_utf8_lossy(head));
        }
        // A head that does not parse and frames nothing is left to hyper,
        // which refuses it and closes the connection.
        let bad: &[u8] = b"GET / HTTP/1.1\r\nBad Header\r\n\r\n";
        assert_eq!(run_why(&[bad]), (None, State::Head));
        // The same head with a length is followed no further.
        let framed: &[u8] = b"GET / HTTP/1.1\r\nBad Header\r\ncontent-LENGTH: 2\r\n\r\n";
        assert_eq!(
            run_why(&[framed]),
            (Some(Refusal::Uninspectable), State::Off)
        );
    }
}
