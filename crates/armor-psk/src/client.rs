//! Signing `reqwest` requests (feature `reqwest`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use armor_psk::client::sign_request;
//! use armor_psk::{SecretKey, SigningKey};
//!
//! let key = SigningKey::new(&SecretKey::new("apsk_example".into()));
//! let http = reqwest::Client::new();
//! let mut req = http.post("http://127.0.0.1:8080/orders?x=1").body("{}").build()?;
//! # let now = 1_763_880_000;
//! sign_request(&mut req, "20a37099-4a0b-432f-bf46-5fa690a0405c", &key, now)?;
//! let resp = http.execute(req).await?;
//! # Ok(()) }
//! ```

use reqwest::header::{HeaderValue, AUTHORIZATION};

use crate::{SignableRequest, SigningKey};

/// How to sign.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignOptions {
    /// Sign the path with `?` and the raw query (the signed-query variant)
    /// instead of the vendor form, which signs the path alone.
    pub sign_query: bool,
}

/// What was signed, for diagnostics (never the secret or the signature).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The nonce used.
    pub nonce: String,
    /// The timestamp used.
    pub timestamp: u64,
    /// The string to sign with the body redacted (length and SHA-256).
    pub redacted: String,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The body is a stream: its bytes are not known before sending.
    StreamingBody,
    /// The resulting header value is not a valid header (a key id or nonce
    /// with characters a header cannot carry).
    InvalidHeader,
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::StreamingBody => {
                f.write_str("a streaming body cannot be signed: give the body as bytes")
            }
            SignError::InvalidHeader => {
                f.write_str("the Authorization value is not a valid header value")
            }
        }
    }
}

impl std::error::Error for SignError {}

/// A fresh random 128-bit nonce: 32 lowercase hex digits.
pub fn fresh_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Signs `req` (method, path as reqwest will send it, body) with a fresh
/// nonce at `now` (Unix seconds), in the vendor form, and sets its
/// `Authorization` header (marked sensitive).
pub fn sign_request(
    req: &mut reqwest::Request,
    key_id: &str,
    key: &SigningKey,
    now: u64,
) -> Result<Signed, SignError> {
    sign_request_with(
        req,
        key_id,
        key,
        &fresh_nonce(),
        now,
        SignOptions::default(),
    )
}

/// As [`sign_request`], with a given nonce and options.
pub fn sign_request_with(
    req: &mut reqwest::Request,
    key_id: &str,
    key: &SigningKey,
    nonce: &str,
    timestamp: u64,
    options: SignOptions,
) -> Result<Signed, SignError> {
    let body: &[u8] = match req.body() {
        None => b"",
        Some(b) => b.as_bytes().ok_or(SignError::StreamingBody)?,
    };
    // Exactly what reqwest puts on the request line.
    let url = req.url();
    let path = match (options.sign_query, url.query()) {
        (true, Some(q)) => format!("{}?{q}", url.path()),
        _ => url.path().to_owned(),
    };
    let signable = SignableRequest {
        key_id,
        method: req.method().as_str(),
        request_path: &path,
        nonce,
        timestamp,
        body,
    };
    let redacted = signable.string_to_sign().redacted().to_string();
    let mut value = HeaderValue::from_str(&signable.authorization(key))
        .map_err(|_| SignError::InvalidHeader)?;
    value.set_sensitive(true);
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(Signed {
        nonce: nonce.to_owned(),
        timestamp,
        redacted,
    })
}
