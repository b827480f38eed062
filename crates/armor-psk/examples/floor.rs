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
//! ```text
//! cargo run --release -p armor-psk --example floor -- 127.0.0.1:8090 keys
//! ```
//!
//! `keys` is a file of "key-id secret" lines (`armor admin seed-keys`); the
//! first line is the one key served. Routes: `GET /ping` and
//! `GET|POST /auth/whoami`, which answers the caller's key id, method and
//! body length as JSON.
#![allow(clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use armor_psk::replay::FingerprintKey;
use armor_psk::{
    Credentials, MemoryReplayGuard, ReplayGuard, Request, SecretKey, SigningKey, Verifier,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;

struct Key {
    id: String,
    signing: SigningKey,
}

struct State {
    key: Key,
    verifier: Verifier,
    fingerprints: FingerprintKey,
    guard: MemoryReplayGuard,
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn refuse(err: &armor_psk::Error) -> Response<Full<Bytes>> {
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

/// The steps of armor's `psk_begin` and `psk_finish`, in their order,
/// and an answer of the size of armor's `/auth/whoami`.
async fn whoami(req: hyper::Request<Incoming>, st: &State) -> Response<Full<Bytes>> {
    use armor_psk::Error as E;
    let (parts, body) = req.into_parts();
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return refuse(&E::MissingAuthorization);
    };
    let creds = match Credentials::parse_bytes(value.as_bytes()) {
        Ok(c) => c,
        Err(e) => return refuse(&E::Parse(e)),
    };
    let now = unix_now();
    if let Err(e) = st.verifier.check_time(&creds, now) {
        return refuse(&e);
    }
    // As armor does: the claim's memory loads during the body and the HMAC.
    let fp = st.fingerprints.fingerprints(&creds);
    st.guard.prefetch(&fp);
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":"body_too_large"}"#.to_vec(),
        );
    };
    let incoming = Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        body: &body,
    };
    // An unknown key id costs a verification too, as in armor.
    if creds.key_id() != st.key.id {
        return refuse(&st.verifier.refuse_unknown(&creds, &incoming));
    }
    if let Err(e) = st.verifier.verify(&st.key.signing, &creds, &incoming) {
        return refuse(&e);
    }
    match st.guard.claim(&fp, st.verifier.claim_until(&creds), now) {
        Ok(()) => {}
        Err(armor_psk::ReplayError::Unavailable) => return refuse(&E::ReplayStoreUnavailable),
        Err(_) => return refuse(&E::NonceReused),
    }
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
    out.extend_from_slice(creds.key_id().as_bytes());
    out.extend_from_slice(br#"","method":""#);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(br#"","bodyLength":"#);
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(br#","bodySha256":""#);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(b"\"}");
    answer(StatusCode::OK, out)
}

async fn route(
    req: hyper::Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let not_found = || answer(StatusCode::NOT_FOUND, br#"{"error":"not_found"}"#.to_vec());
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/ping") => answer(StatusCode::OK, br#"{"pong":true}"#.to_vec()),
        (&Method::GET | &Method::POST, "/auth/whoami") => whoami(req, &st).await,
        _ => not_found(),
    })
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(keys)) = (args.next(), args.next()) else {
        eprintln!("usage: floor LISTEN KEYS_FILE");
        std::process::exit(2);
    };
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
