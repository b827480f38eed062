//! ARMOR-PSK: the request-signing scheme of the Armor API.
//!
//! ```text
//! Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{timestamp}
//! message   = keyId + method + requestPath + nonce + timestamp + body
//! signature = base64(HMAC-SHA512(key = UTF-8(secretKey), message))
//! ```
//!
//! This crate is pure: no I/O, no async, no clock. Callers pass the time in,
//! which keeps every rule testable to the second. Two optional features add
//! the edges, off by default:
//! - `tower`: [`layer::ArmorPskLayer`], verification in front of any
//!   axum/tower service (see `examples/tower_app.rs`);
//! - `reqwest`: [`client::sign_request`], signing a `reqwest::Request`.
//!
//! # Layout
//! - [`parse`]: [`Credentials::parse`], the bounded header parser.
//! - [`sign`]: [`SignableRequest`], [`SigningKey`] (the keyed HMAC state),
//!   [`StringToSign`] and its redacted form for logs.
//! - `hmac512`: HMAC-SHA512 from two precomputed SHA-512 midstates.
//! - [`verify`]: [`Verifier`] (window, accepted variants, `require_signed_query`).
//! - [`replay`]: the [`ReplayGuard`] trait, fingerprints and [`MemoryReplayGuard`].
//! - [`secret`]: [`SecretKey`], zeroized and never printed.
//! - [`error`]: [`Error`] with the spec's machine-readable codes.
//!
//! # Example
//! ```
//! use armor_psk::{Credentials, Request, SecretKey, SignableRequest, SigningKey, Verifier};
//!
//! let secret = SecretKey::new("apsk_example".to_owned());
//! let key = SigningKey::new(&secret);
//! let req = SignableRequest {
//!     key_id: "20a37099-4a0b-432f-bf46-5fa690a0405c",
//!     method: "GET",
//!     request_path: "/me",
//!     nonce: "b1946ac92492d2347c6235b4d2611184",
//!     timestamp: 1_763_880_000,
//!     body: b"",
//! };
//! let header = req.authorization(&key);
//!
//! let creds = Credentials::parse(&header).unwrap();
//! let verifier = Verifier::default();
//! verifier.check_time(&creds, 1_763_880_100).unwrap();
//! let incoming = Request { method: "GET", path: "/me", query: None, body: b"" };
//! verifier.verify(&key, &creds, &incoming).unwrap();
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(feature = "reqwest")]
pub mod client;
pub mod error;
mod hmac512;
#[cfg(feature = "tower")]
pub mod layer;
pub mod parse;
pub mod replay;
pub mod secret;
pub mod sign;
pub mod verify;

pub use error::{Error, ParseError};
pub use parse::Credentials;
pub use replay::{Fingerprints, MemoryReplayGuard, ReplayError, ReplayGuard};
pub use secret::SecretKey;
pub use sign::{RedactedStringToSign, SignableRequest, Signature, SigningKey, StringToSign};
pub use verify::{Request, Variant, Verifier};

/// The authorization scheme name, as written by the vendor's clients.
pub const SCHEME: &str = "ARMOR-PSK";
/// Longest `Authorization` value the parser looks at (bytes).
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Longest key id and nonce (characters, all visible ASCII).
pub const MAX_FIELD_LEN: usize = 128;
/// Length of an HMAC-SHA512 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Freshness window: a timestamp more than this many seconds away from the
/// verifier's clock is refused.
pub const DEFAULT_WINDOW_SECS: u64 = 300;
