//! Refusals, each with the stable machine-readable code of the spec.

use std::fmt;

/// Why an `Authorization` value could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The value names another scheme (or none): `not_armor_psk`.
    NotArmorPsk,
    /// The value is ARMOR-PSK but breaks a rule; the text says which.
    Malformed(&'static str),
}

impl ParseError {
    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::NotArmorPsk => "not_armor_psk",
            ParseError::Malformed(_) => "malformed_authorization",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotArmorPsk => f.write_str("the Authorization scheme is not ARMOR-PSK"),
            ParseError::Malformed(why) => write!(f, "malformed ARMOR-PSK credentials: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Every refusal the verifier can give, with the spec's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No `Authorization` header: `missing_authorization`.
    MissingAuthorization,
    /// See [`ParseError`].
    Parse(ParseError),
    /// Timestamp more than the window away from the verifier's clock:
    /// `timestamp_out_of_window`.
    TimestampOutOfWindow {
        /// The verifier's clock, so the client can see its skew.
        server_time: u64,
    },
    /// No accepted form of the request matches: `invalid_signature`. Also
    /// the answer for unknown, deleted and disabled keys.
    InvalidSignature,
    /// The signature covers the path only, and the verifier demands the
    /// query too: `query_not_signed`.
    QueryNotSigned,
    /// The (key id, nonce) pair or the signature was seen within the
    /// window: `nonce_reused`.
    NonceReused,
    /// The replay guard cannot answer (unreachable, or full): fail closed,
    /// `replay_store_unavailable`.
    ReplayStoreUnavailable,
}

impl Error {
    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingAuthorization => "missing_authorization",
            Error::Parse(e) => e.code(),
            Error::TimestampOutOfWindow { .. } => "timestamp_out_of_window",
            Error::InvalidSignature => "invalid_signature",
            Error::QueryNotSigned => "query_not_signed",
            Error::NonceReused => "nonce_reused",
            Error::ReplayStoreUnavailable => "replay_store_unavailable",
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingAuthorization => f.write_str("no Authorization header"),
            Error::Parse(e) => e.fmt(f),
            Error::TimestampOutOfWindow { server_time } => write!(
                f,
                "timestamp is more than {} s away from the server time {server_time}",
                crate::DEFAULT_WINDOW_SECS
            ),
            Error::InvalidSignature => f.write_str("the signature does not match"),
            Error::QueryNotSigned => {
                f.write_str("the signature must cover the request path with its query string")
            }
            Error::NonceReused => f.write_str("this nonce or signature was already used"),
            Error::ReplayStoreUnavailable => f.write_str("the replay store cannot be reached"),
        }
    }
}

impl std::error::Error for Error {}
