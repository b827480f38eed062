//! The floor under an authenticated request: the least an HTTP/1 server can
//! do to serve ARMOR-PSK, next to its own unauthenticated `/ping`.
//!
//! `bench/run` measures it beside armor: what this server adds to a signed
//! request over its `/ping` is the wire format's own cost (the longer head,
//! the header's parse, one HMAC-SHA512, the replay claim) on hyper alone, with
//! no routing, no accounts, no limits and no store. Its ratio is the best
//! any server on this HTTP stack can show for the same route on the same
//! machine.
//!
//! Given an upstream, it is also the floor under the gateway: every request
//! but `/ping` is verified the same way and forwarded on a kept-alive
//! connection, its headers as they came (less `Authorization`, the
//! hop-by-hop ones, `Expect`, and any that could pass for an `X-Armor-*`
//! one) plus the caller's key id, and the answer (with a `Content-Length`)
//! sent back as it came. No identity or forwarding headers, no limits, no streaming, no
//! checks of the method before sending again a request that a kept-alive
//! connection dropped: what any ARMOR-PSK proxy on hyper must at least do.
//!
//! ```text
//! cargo run --release -p armor-psk --example floor -- 127.0.0.1:8090 keys [127.0.0.1:8080]
//! ```
//!
//! `keys` is a file of "key-id secret" lines (`armor admin seed-keys`); the
//! first line is the one key served. Routes: `GET /ping` and
//! `GET|POST /auth/whoami`, which answers the caller's key id, method and
//! body length as JSON; with an upstream (`host:port`), `GET /ping` and
//! everything else forwarded.
#![allow(clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, MemoryReplayGuard, ReplayGuard, Request, SecretKey, SigningKey, Verifier,
};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE,
    TRANSFER_ENCODING,
};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The same allocator as armor's binary, so that the two compare like for like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Key {
    id: String,
    signing: SigningKey,
}

struct State {
    key: Key,
    verifier: Verifier,
    fingerprints: FingerprintKey,
    guard: MemoryReplayGuard,
    upstream: Option<Upstream>,
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn refuse(err: &armor_psk::Error) -> Answer {
    let status = match err {
        armor_psk::Error::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    answer(
        status,
        format!(r#"{{"error":"{}"}}"#, err.code()).into_bytes(),
    )
}

/// Largest body read, as armor's default `--max-body`.
const MAX_BODY: usize = 1024 * 1024;

/// The SHA-256 of no bytes, in hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The steps of armor's `psk_begin` and `psk_finish`, in their order: the
/// request's body once its signature and nonce are accepted.
async fn authenticate(parts: &Parts, body: Incoming, st: &State) -> Result<Bytes, Answer> {
    use armor_psk::Error as E;
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(refuse(&E::MissingAuthorization));
    };
    let creds = Credentials::parse_bytes(value.as_bytes()).map_err(|e| refuse(&E::Parse(e)))?;
    let now = unix_now();
    st.verifier
        .check_time(&creds, now)
        .map_err(|e| refuse(&e))?;
    // As armor does: the claim's memory loads during the body and the HMAC.
    let fp = st.fingerprints.fingerprints(&creds);
    st.guard.prefetch(&fp);
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return Err(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":"body_too_large"}"#.to_vec(),
        ));
    };
    let incoming = Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        body: &body,
    };
    // An unknown key id costs a verification too, as in armor.
    if creds.key_id() != st.key.id {
        return Err(refuse(&st.verifier.refuse_unknown(&creds, &incoming)));
    }
    st.verifier
        .verify(&st.key.signing, &creds, &incoming)
        .map_err(|e| refuse(&e))?;
    match st.guard.claim(&fp, st.verifier.claim_until(&creds), now) {
        Ok(()) => Ok(body),
        Err(armor_psk::ReplayError::Unavailable) => Err(refuse(&E::ReplayStoreUnavailable)),
        Err(_) => Err(refuse(&E::NonceReused)),
    }
}

/// An answer of the size of armor's `/auth/whoami`.
async fn whoami(req: hyper::Request<Incoming>, st: &State) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match authenticate(&parts, body, st).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let digest = if body.is_empty() {
        EMPTY_SHA256.to_owned()
    } else {
        use sha2::Digest as _;
        sha2::Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"userId":1,"accountId":1,"credential":"ARMOR-PSK","keyId":""#);
    out.extend_from_slice(st.key.id.as_bytes());
    out.extend_from_slice(br#"","method":""#);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(br#"","bodyLength":"#);
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(br#","bodySha256":""#);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(b"\"}");
    answer(StatusCode::OK, out)
}

/// The upstream and its idle kept-alive connections.
struct Upstream {
    addr: String,
    idle: Mutex<Vec<TcpStream>>,
}

fn bad_gateway() -> Answer {
    answer(
        StatusCode::BAD_GATEWAY,
        br#"{"error":"upstream_unavailable"}"#.to_vec(),
    )
}

/// Verifies the request, then sends it upstream and its answer back.
async fn forward(req: hyper::Request<Incoming>, st: &State, up: &Upstream) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match authenticate(&parts, body, st).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = Vec::with_capacity(512 + body.len());
    for part in [parts.method.as_str(), " ", target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in &parts.headers {
        if !passed_on(name) {
            continue;
        }
        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    for part in ["x-armor-key-id: ", &st.key.id, "\r\ncontent-length: "] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    let head_only = parts.method == Method::HEAD;
    match tokio::time::timeout(UPSTREAM_TIMEOUT, send(up, &out, head_only)).await {
        Ok(answer) => answer,
        Err(_) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            br#"{"error":"upstream_timeout"}"#.to_vec(),
        ),
    }
}

/// `request` to the upstream and its answer, on a kept-alive connection
/// if there is one.
async fn send(up: &Upstream, request: &[u8], head_only: bool) -> Answer {
    // A kept-alive connection the upstream closed meanwhile fails before
    // any answer: once, the request goes out again on a new one.
    let pooled = up.idle.lock().ok().and_then(|mut idle| idle.pop());
    for conn in [pooled, None] {
        let was_pooled = conn.is_some();
        let mut stream = match conn {
            Some(stream) => stream,
            None => match TcpStream::connect(&up.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream
                }
                Err(_) => return bad_gateway(),
            },
        };
        match exchange(&mut stream, request, head_only).await {
            Ok((res, keep)) => {
                if keep {
                    if let Ok(mut idle) = up.idle.lock() {
                        idle.push(stream);
                    }
                }
                return res;
            }
            Err(Failed::BeforeAnswer) if was_pooled => continue,
            Err(_) => return bad_gateway(),
        }
    }
    bad_gateway()
}

/// How long an upstream has to answer.
const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a request header goes upstream: not the credentials, not the
/// framing (the floor sets its own), not hop-by-hop ones, not `Expect`
/// (no interim answers asked for), and none that could pass for the
/// floor's own `X-Armor-*` header (an `x-armor-` name, or any with `_`).
fn passed_on(name: &HeaderName) -> bool {
    const DROPPED: [&str; 11] = [
        "authorization",
        "proxy-authorization",
        "connection",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    let n = name.as_str();
    !(DROPPED.contains(&n) || n.starts_with("x-armor-") || n.contains('_'))
}

enum Failed {
    /// The connection closed or failed before any byte of an answer.
    BeforeAnswer,
    /// A broken or unsupported answer (the floor reads `Content-Length` only).
    Answer,
}

/// One request out and its answer back on `stream` (`head_only`: the
/// request was a HEAD, so the answer has no body whatever its length says);
/// whether the connection may be kept.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    head_only: bool,
) -> Result<(Answer, bool), Failed> {
    use bytes::Buf as _;
    stream
        .write_all(request)
        .await
        .map_err(|_| Failed::BeforeAnswer)?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut answered = false;
    let (head_len, status, fields, body_len, keep) = loop {
        match parse_head(&buf, head_only)? {
            // An interim answer (never asked for: `Expect` is not passed
            // on) is skipped; a switch of protocols is not relayed.
            Some((n, status, ..)) if status.is_informational() => {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(Failed::Answer);
                }
                buf.advance(n);
                answered = true;
                continue;
            }
            Some(head) => break head,
            None => {}
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() && !answered => return Err(Failed::BeforeAnswer),
            Ok(0) | Err(_) => return Err(Failed::Answer),
            Ok(_) => {}
        }
    };
    while buf.len() < head_len + body_len {
        if buf.capacity() == buf.len() {
            buf.reserve(head_len + body_len - buf.len());
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(Failed::Answer),
            Ok(_) => {}
        }
    }
    let head = buf.split_to(head_len).freeze();
    let mut res = Response::new(Full::new(buf.split_to(body_len).freeze()));
    *res.status_mut() = status;
    for (name, start, end) in fields {
        if let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..end)) {
            res.headers_mut().append(name, value);
        }
    }
    // Bytes past the answer: the upstream is out of step, drop the connection.
    Ok((res, keep && buf.is_empty()))
}

type Head = (
    usize,
    StatusCode,
    Vec<(HeaderName, usize, usize)>,
    usize,
    bool,
);

/// The answer's head once complete: its length, status, the headers to pass
/// on (as ranges of `buf`), the body's length, and whether the connection
/// may be kept (HTTP/1.1 without `Connection: close`).
fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Head>, Failed> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failed::Answer),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Failed::Answer)?;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (mut body_len, mut keep) = (None, res.version == Some(1));
    let mut fields = Vec::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Failed::Answer)?;
        // Without a body, the length (of the body a GET would have had)
        // is passed on as it is.
        if name == CONTENT_LENGTH && !no_body {
            let text = std::str::from_utf8(h.value).map_err(|_| Failed::Answer)?;
            let n = text.trim().parse::<usize>().map_err(|_| Failed::Answer)?;
            // Two lengths that differ: the answer cannot be framed.
            if body_len.is_some_and(|m| m != n) {
                return Err(Failed::Answer);
            }
            body_len = Some(n);
        } else if name == TRANSFER_ENCODING {
            return Err(Failed::Answer);
        } else if name == CONNECTION {
            keep &= !h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if !["keep-alive", "trailer", "upgrade"].contains(&name.as_str()) {
            let start = h.value.as_ptr() as usize - buf.as_ptr() as usize;
            fields.push((name, start, start + h.value.len()));
        }
    }
    let body_len = match body_len {
        _ if no_body => 0,
        Some(n) if n <= MAX_BODY => n,
        _ => return Err(Failed::Answer),
    };
    Ok(Some((head_len, status, fields, body_len, keep)))
}

async fn route(req: hyper::Request<Incoming>, st: Arc<State>) -> Result<Answer, Infallible> {
    let not_found = || answer(StatusCode::NOT_FOUND, br#"{"error":"not_found"}"#.to_vec());
    Ok(match (req.method(), req.uri().path(), &st.upstream) {
        (&Method::GET, "/ping", _) => answer(StatusCode::OK, br#"{"pong":true}"#.to_vec()),
        (_, _, Some(up)) => forward(req, &st, up).await,
        (&Method::GET | &Method::POST, "/auth/whoami", None) => whoami(req, &st).await,
        _ => not_found(),
    })
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(keys)) = (args.next(), args.next()) else {
        eprintln!("usage: floor LISTEN KEYS_FILE [UPSTREAM_HOST:PORT]");
        std::process::exit(2);
    };
    let upstream = args.next().map(|addr| Upstream {
        addr,
        idle: Mutex::new(Vec::new()),
    });
    let text = std::fs::read_to_string(&keys).expect("the keys file can be read");
    let (id, secret) = text
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .expect("a first line \"key-id secret\"");
    let st = Arc::new(State {
        key: Key {
            id: id.to_owned(),
            signing: SigningKey::new(&SecretKey::new(secret.trim().to_owned())),
        },
        verifier: Verifier::default(),
        fingerprints: FingerprintKey::new(rand_key()),
        guard: MemoryReplayGuard::new(64 * 1024 * 1024),
        upstream,
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("the address can be bound");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| route(req, st.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The wall clock, read here at the edge (as armor's own clock is).
#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fingerprint key from the OS: the floor has no master key to derive one.
fn rand_key() -> [u8; 16] {
    use std::io::Read as _;
    let mut k = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .expect("/dev/urandom can be read");
    k
}
