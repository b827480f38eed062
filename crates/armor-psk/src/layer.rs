//! A tower [`Layer`] that verifies ARMOR-PSK in front of any axum or tower
//! service (feature `tower`).
//!
//! For each request: parse the `Authorization` header, check the clock,
//! look the key up ([`KeyLookup`]), read the body (up to a limit), verify
//! every accepted form, claim the nonce and signature in the
//! [`ReplayGuard`], then call the inner service with a [`VerifiedKey`] in
//! the request's extensions and the verified bytes as its body. Refusals
//! carry the spec's JSON body and status; an unknown key id costs the same
//! work as a wrong signature and gets the same answer.
//!
//! Apply it outermost (before any path rewriting or nesting): the signature
//! covers the path exactly as received.
//!
//! ```no_run
//! # use std::sync::Arc;
//! use armor_psk::layer::{ArmorPskLayer, KeyLookup};
//! use armor_psk::replay::FingerprintKey;
//! use armor_psk::{MemoryReplayGuard, SecretKey, SigningKey};
//!
//! struct Keys;
//! impl KeyLookup for Keys {
//!     type Identity = String;
//!     fn lookup(&self, key_id: &str) -> Option<(String, SigningKey)> {
//!         (key_id == "k1").then(|| {
//!             ("alice".into(), SigningKey::new(&SecretKey::new("s3cret".into())))
//!         })
//!     }
//! }
//! let layer = ArmorPskLayer::new(
//!     Keys,
//!     Arc::new(MemoryReplayGuard::new(1 << 20)),
//!     FingerprintKey::new([7; 16]),
//!     || 1_763_880_000, // the clock: Unix seconds
//! );
//! // axum::Router::new().route(...).layer(layer)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::replay::FingerprintKey;
use crate::verify::Variant;
use crate::{Credentials, Error, ReplayError, ReplayGuard, SigningKey, Verifier};

/// Finds the signing key (and whatever identity the application attaches to
/// it) for a key id. `None` for unknown, deleted or disabled keys. Called on
/// every signed request: keep it in memory (a cache in front of a database).
pub trait KeyLookup: Send + Sync + 'static {
    /// What the application knows about the key's owner.
    type Identity: Clone + Send + Sync + 'static;
    /// The identity and HMAC key of `key_id`.
    fn lookup(&self, key_id: &str) -> Option<(Self::Identity, SigningKey)>;
}

/// Put in the request's extensions once the signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedKey<I> {
    /// The key id from the header.
    pub key_id: String,
    /// What [`KeyLookup::lookup`] returned with the key.
    pub identity: I,
    /// Which accepted form of the message matched.
    pub variant: Variant,
    /// The request's timestamp (Unix seconds).
    pub timestamp: u64,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

struct Shared<L> {
    lookup: L,
    replay: Arc<dyn ReplayGuard>,
    fingerprints: FingerprintKey,
    verifier: Verifier,
    clock: Clock,
    max_body: usize,
}

/// The layer: configuration shared by every service it wraps.
pub struct ArmorPskLayer<L> {
    shared: Arc<Shared<L>>,
}

impl<L> Clone for ArmorPskLayer<L> {
    fn clone(&self) -> Self {
        ArmorPskLayer {
            shared: self.shared.clone(),
        }
    }
}

/// Largest body read by default (1 MiB); larger ones get 413.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

impl<L: KeyLookup> ArmorPskLayer<L> {
    /// `clock` returns the current Unix time in seconds. Nodes sharing a
    /// replay guard must share `fingerprint_key`.
    pub fn new(
        lookup: L,
        replay: Arc<dyn ReplayGuard>,
        fingerprint_key: FingerprintKey,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        ArmorPskLayer {
            shared: Arc::new(Shared {
                lookup,
                replay,
                fingerprints: fingerprint_key,
                verifier: Verifier::default(),
                clock: Arc::new(clock),
                max_body: DEFAULT_MAX_BODY,
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Shared<L>)) -> Self {
        match Arc::try_unwrap(self.shared) {
            Ok(mut s) => {
                f(&mut s);
                ArmorPskLayer {
                    shared: Arc::new(s),
                }
            }
            // Already shared: settings are fixed once cloned.
            Err(shared) => ArmorPskLayer { shared },
        }
    }

    /// The largest body read (bytes); larger ones get 413 `body_too_large`.
    /// Set before cloning the layer.
    pub fn max_body(self, max: usize) -> Self {
        self.map(|s| s.max_body = max)
    }

    /// A verifier with other settings (window, `require_signed_query`). Set
    /// before cloning the layer.
    pub fn verifier(self, verifier: Verifier) -> Self {
        self.map(|s| s.verifier = verifier)
    }
}

impl<S, L> Layer<S> for ArmorPskLayer<L> {
    type Service = ArmorPsk<S, L>;
    fn layer(&self, inner: S) -> Self::Service {
        ArmorPsk {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer builds.
pub struct ArmorPsk<S, L> {
    inner: S,
    shared: Arc<Shared<L>>,
}

impl<S: Clone, L> Clone for ArmorPsk<S, L> {
    fn clone(&self) -> Self {
        ArmorPsk {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, L, B, R> Service<Request<B>> for ArmorPsk<S, L>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    L: KeyLookup,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
    R: From<String>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            match verify(&shared, req).await {
                Ok(req) => inner.call(req).await,
                Err(refusal) => Ok(refusal.into_response()),
            }
        })
    }
}

/// Why a request was refused.
enum Refusal {
    Psk(Error),
    BodyTooLarge(usize),
    BadBody,
}

async fn verify<L, B>(shared: &Shared<L>, req: Request<B>) -> Result<Request<B>, Refusal>
where
    L: KeyLookup,
    B: Body + From<Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => return Err(Refusal::Psk(Error::MissingAuthorization)),
        Some(v) => v
            .to_str()
            .map_err(|_| {
                Refusal::Psk(Error::Parse(crate::ParseError::Malformed(
                    "the Authorization header must be visible ASCII",
                )))
            })?
            .to_owned(),
    };
    let creds = Credentials::parse(&header).map_err(|e| Refusal::Psk(e.into()))?;
    let now = (shared.clock)();
    shared
        .verifier
        .check_time(&creds, now)
        .map_err(Refusal::Psk)?;
    // The claim's memory loads during the look-up, the body and the HMAC.
    let fp = shared.fingerprints.fingerprints(&creds);
    shared.replay.prefetch(&fp);
    let found = shared.lookup.lookup(creds.key_id());

    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body as u64) {
        return Err(Refusal::BodyTooLarge(shared.max_body));
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match Limited::new(body, shared.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::BodyTooLarge(shared.max_body))
        }
        Err(_) => return Err(Refusal::BadBody),
    };
    let signed = crate::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        body: &bytes,
    };
    let Some((identity, key)) = found else {
        return Err(Refusal::Psk(
            shared.verifier.refuse_unknown(&creds, &signed),
        ));
    };
    let variant = shared
        .verifier
        .verify(&key, &creds, &signed)
        .map_err(Refusal::Psk)?;
    match shared
        .replay
        .claim(&fp, shared.verifier.claim_until(&creds), now)
    {
        Ok(()) => {}
        Err(ReplayError::Reused) => return Err(Refusal::Psk(Error::NonceReused)),
        Err(ReplayError::Unavailable) => return Err(Refusal::Psk(Error::ReplayStoreUnavailable)),
    }
    parts.extensions.insert(VerifiedKey {
        key_id: creds.key_id().to_owned(),
        identity,
        variant,
        timestamp: creds.timestamp(),
    });
    Ok(Request::from_parts(parts, B::from(bytes)))
}

impl Refusal {
    fn into_response<R: From<String>>(self) -> Response<R> {
        let (status, code, message, description, server_time) = match self {
            Refusal::Psk(e) => {
                let status = match e {
                    Error::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNAUTHORIZED,
                };
                let server_time = match e {
                    Error::TimestampOutOfWindow { server_time } => Some(server_time),
                    _ => None,
                };
                let message = if status == StatusCode::UNAUTHORIZED {
                    "Authorization has been denied for this request."
                } else {
                    "The replay store is unavailable; try again shortly."
                };
                (status, e.code(), message, e.to_string(), server_time)
            }
            Refusal::BodyTooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "The request body is too large.",
                format!("the request body is larger than {max} bytes"),
                None,
            ),
            Refusal::BadBody => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is invalid.",
                "could not read the request body".to_owned(),
                None,
            ),
        };
        let mut body = serde_json::json!({
            "error": code,
            "error_description": description,
            "Message": message,
            "status": status.as_u16(),
        });
        if let Some(t) = server_time {
            body["serverTime"] = t.into();
        }
        let mut resp = Response::new(R::from(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(crate::SCHEME),
            );
        }
        resp
    }
}
