//! Domain errors. The web layer maps each to a status and a stable code in
//! one place (`web::error`).

/// Everything the server's logic can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ARMOR-PSK refusal; `detail` may say what the server signed over
    /// (never a secret or the expected signature).
    #[error("{err}")]
    Psk {
        err: armor_psk::Error,
        detail: Option<String>,
    },
    /// FH-AUTH / Bearer token unknown, expired or revoked.
    #[error("the token is invalid, expired or revoked")]
    InvalidToken,
    /// Wrong user name or password (or unknown user, or locked): one answer.
    #[error("the user name or password is incorrect")]
    InvalidCredentials,
    /// The password was right and the user has a second factor: the login
    /// needs its code too. Only ever said after the password was verified.
    #[error("a second-factor code is required: send it as mfaCode")]
    MfaRequired,
    /// The second-factor code is wrong, used or expired.
    #[error("the second-factor code is invalid, used or expired")]
    InvalidMfaCode,
    /// Authorization code unknown, used or expired.
    #[error("the authorization code is invalid, used or expired")]
    InvalidCode,
    /// An API-key caller on a route that refuses them.
    #[error("this route cannot be used with an API key; sign in with a password")]
    ApiKeyNotAllowed,
    /// The key's expiry (or the end of its grace period after a roll) has
    /// passed. Only said once the signature has verified.
    #[error("this API key has expired")]
    KeyExpired,
    /// The key may not be used from the request's peer address.
    #[error("this API key may not be used from this address")]
    IpNotAllowed,
    /// The key may not call this method and path.
    #[error("this API key may not call this method and path")]
    RouteNotAllowed,
    /// The key is over its own `rateLimit`: `limit` per window, the window
    /// ending in `reset` seconds.
    #[error("this API key is over its rate limit of {limit} requests; retry in {reset} s")]
    KeyRateLimited { limit: u32, reset: u64 },
    /// The caller lacks a permission.
    #[error("this needs the permission '{0}'")]
    PermissionDenied(String),
    /// `X-Account-Context` names an account the caller does not belong to.
    #[error("X-Account-Context must be the id of an account you belong to")]
    InvalidAccountContext,
    /// Nothing there (or not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A request that breaks a rule; the text says which.
    #[error("{0}")]
    BadRequest(String),
    /// The request target is not in canonical form.
    #[error("the request path is not canonical: {0}")]
    MalformedTarget(&'static str),
    /// The request body did not arrive within the body timeout.
    #[error("the request body came too slowly: {0}")]
    RequestTimeout(&'static str),
    /// The method is not one the target accepts.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// The body is larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A conflict with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached.
    #[error("the store is unavailable")]
    StoreUnavailable,
    /// Too many requests for this key: try again in `retry_after` seconds.
    #[error("too many requests for this key; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The server is short of capacity for this work (password hashing):
    /// try again in `retry_after` seconds.
    #[error("the server is busy; retry in {retry_after} s")]
    Busy { retry_after: u64 },
    /// The gateway's upstream cannot be reached (or broke the connection).
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// The gateway's upstream did not answer within the timeout (seconds).
    #[error("the upstream did not answer within {0} s")]
    UpstreamTimeout(u64),
    /// Bad configuration at start-up.
    #[error("{0}")]
    Config(String),
    /// A bug or an unexpected failure; logged, never shown in detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<armor_psk::Error> for Error {
    fn from(err: armor_psk::Error) -> Self {
        Error::Psk { err, detail: None }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Error::StoreUnavailable
            }
            other => Error::Internal(format!("database: {other}")),
        }
    }
}
