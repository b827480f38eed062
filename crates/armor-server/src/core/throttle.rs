//! Limits on the messages anyone can make the server send: password-reset
//! mails (`POST /users/resetpassword`, anonymous) per address and per
//! client address, and phone codes (`POST /usersecurity/validatemfaphone`)
//! per number and per user.
//!
//! Each message is counted in the database (`send_limits`), under a keyed
//! hash of the scope and the target (no address or number is stored), so
//! a limit holds across nodes sharing the database and across restarts.
//! A window starts with the first message to a target and lasts
//! [`Limit::window`] seconds; at most [`Limit::max`] messages go out in
//! it (so at most twice that in any span of one window).

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::master::Master;
use crate::clock::Clock;
use crate::error::Error;
use crate::store::Store;

/// At most `max` messages to one target per `window` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: i64,
    pub window: u64,
}

/// Reset mails to one address.
pub const RESET_PER_ADDRESS: Limit = Limit {
    max: 3,
    window: 3_600,
};
/// Reset requests from one client address (any email, known or not).
pub const RESET_PER_CLIENT: Limit = Limit {
    max: 20,
    window: 3_600,
};
/// Phone codes to one number (whoever asks).
pub const PHONE_PER_NUMBER: Limit = Limit {
    max: 3,
    window: 3_600,
};
/// Phone codes one user asks for (to any numbers).
pub const PHONE_PER_USER: Limit = Limit {
    max: 5,
    window: 3_600,
};

/// Counts the messages sent per target, in the store.
#[derive(Clone)]
pub struct SendLimits {
    store: Store,
    clock: Arc<dyn Clock>,
    master: Arc<Master>,
}

impl SendLimits {
    pub(super) fn new(store: Store, clock: Arc<dyn Clock>, master: Arc<Master>) -> Self {
        SendLimits {
            store,
            clock,
            master,
        }
    }

    /// Counts one message to `target` under `scope`; past `limit`, the
    /// seconds until the window ends (at least 1).
    pub(super) async fn count_send(
        &self,
        scope: &str,
        target: &str,
        limit: Limit,
    ) -> Result<Result<(), u64>, Error> {
        let now = self.clock.now();
        let mut h = Sha256::new();
        h.update(self.master.current().derive_16("send limit key v1"));
        h.update(scope.as_bytes());
        h.update([0]);
        h.update(target.as_bytes());
        let key = h.finalize();
        let (hits, window_end) = self.store.count_send(&key, now, limit.window).await?;
        if hits <= limit.max {
            return Ok(Ok(()));
        }
        let left = u64::try_from(window_end).unwrap_or(0).saturating_sub(now);
        Ok(Err(left.max(1)))
    }

    /// Counts a password-reset request against its client address and the
    /// address asked for; `false` when past a limit (nothing is sent, and
    /// the caller is answered as always).
    /// `user_id` is the user the address names (as the store compares
    /// addresses), `None` for an unknown one: that is counted under the
    /// address as given, trimmed and lower-cased.
    pub(super) async fn reset_allowed(
        &self,
        email: &str,
        user_id: Option<i64>,
        client: Option<&str>,
    ) -> Result<bool, Error> {
        if let Some(client) = client {
            let client = match client.parse() {
                Ok(ip) => crate::limit::client_key(ip).to_string(),
                Err(_) => client.to_owned(),
            };
            if self
                .count_send("reset-client", &client, RESET_PER_CLIENT)
                .await?
                .is_err()
            {
                tracing::info!("password reset not sent: too many requests from this client");
                return Ok(false);
            }
        }
        let (scope, target) = match user_id {
            Some(id) => ("reset-user", id.to_string()),
            None => ("reset-address", email.trim().to_lowercase()),
        };
        if self
            .count_send(scope, &target, RESET_PER_ADDRESS)
            .await?
            .is_err()
        {
            tracing::info!("password reset not sent: too many mails to this address");
            return Ok(false);
        }
        Ok(true)
    }

    /// Counts a phone code against the number and the user asking;
    /// [`Error::RateLimited`] past a limit.
    pub(super) async fn phone_code_allowed(&self, user_id: i64, phone: &str) -> Result<(), Error> {
        for (scope, target, limit) in [
            ("phone-number", phone.to_owned(), PHONE_PER_NUMBER),
            ("phone-user", user_id.to_string(), PHONE_PER_USER),
        ] {
            if let Err(retry_after) = self.count_send(scope, &target, limit).await? {
                return Err(Error::RateLimited { retry_after });
            }
        }
        Ok(())
    }
}
