//! Delivery of the outbox by SMTP (`--smtp-url`).
//!
//! Messages are written to the `outbox` table first (see
//! [`Outbox::send_message`]); this task sends the `email` ones: every
//! [`POLL`], and at once when a message is queued. Each message is claimed
//! before it is sent (a lease in `next_attempt_at`), so several nodes on one
//! database send it once; a failure is retried with a doubling backoff,
//! and a permanent refusal (5xx) or [`MAX_ATTEMPTS`] failures leave it
//! pending for `armor admin outbox`. SMS has no transport: `sms` messages
//! stay pending for an operator.
//!
//! Bodies hold codes: they are sealed at rest (see `core/outbox.rs`),
//! opened only to be sent, and wiped once sent. Nothing here logs a body,
//! a subject or a full address; only the message id, the recipient's
//! domain and the kind of error.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use crate::core::outbox::Outbox;
use crate::error::Error;
use crate::store::OutboxRow;

/// How often the outbox is read when nothing wakes the sender.
pub const POLL: Duration = Duration::from_secs(5);
/// Failed tries after which a message waits for an operator.
pub const MAX_ATTEMPTS: i64 = 10;
/// How long a claim keeps other nodes off a message (seconds).
const LEASE: u64 = 600;
/// Messages read at a time.
const BATCH: i64 = 50;
/// Time allowed for each SMTP command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The SMTP transport and the sender address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

/// Seconds to wait before the try after the `attempts`th failure: 30 s,
/// doubling, at most an hour.
pub fn backoff(attempts: i64) -> u64 {
    let doublings = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(20);
    (30u64 << doublings).min(3_600)
}

/// What is kept and logged of a failure: its kind and SMTP code, never the
/// server's text (which may echo an address).
fn error_kind(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_permanent() {
        "permanent"
    } else if e.is_transient() {
        "transient"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "tls"
    } else if e.is_response() {
        "response"
    } else if e.is_client() {
        "client"
    } else {
        "connection"
    };
    match e.status() {
        Some(code) => format!("{kind} {code}"),
        None => kind.to_owned(),
    }
}

fn domain(recipient: &str) -> &str {
    recipient.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Mailer {
    /// `url`: `smtp://host[:port]` (plain), `smtp://host?tls=required`
    /// (STARTTLS, port 587), `smtp://host?tls=opportunistic`,
    /// `smtps://user:pass@host[:465]` (TLS from the start); `from`: the
    /// sender, `armor@example.com` or `Armor <armor@example.com>`.
    pub fn new(url: &str, from: &str) -> Result<Self, Error> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| Error::Config(format!("bad SMTP sender {from:?}: {e}")))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| Error::Config(format!("bad SMTP URL: {e}")))?
            .timeout(Some(COMMAND_TIMEOUT))
            .build();
        Ok(Mailer { transport, from })
    }

    async fn send(&self, row: &OutboxRow, body: &str) -> Result<(), String> {
        let to: Mailbox = row.recipient.parse().map_err(|_| "address".to_owned())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|_| "message".to_owned())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| error_kind(&e))
    }

    /// Sends the due email messages; returns how many were sent.
    pub async fn deliver_due(&self, outbox: &Outbox) -> Result<usize, Error> {
        let mut sent = 0;
        loop {
            let now = outbox.now();
            let rows = outbox.due("email", now, MAX_ATTEMPTS, BATCH).await?;
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= BATCH;
            for row in rows {
                if self.deliver(outbox, &row).await? {
                    sent += 1;
                }
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    /// Claims, sends and records one message; `true` when it was sent.
    async fn deliver(&self, outbox: &Outbox, row: &OutboxRow) -> Result<bool, Error> {
        let now = outbox.now();
        if !outbox.claim(row.id, now, now.saturating_add(LEASE)).await? {
            return Ok(false);
        }
        let domain = domain(&row.recipient);
        // Opened (sealed at rest) only to be sent; a body that does not
        // open is left for the operator.
        let sent = match outbox.body(row) {
            Ok(body) => self.send(row, &body).await,
            Err(_) => Err("sealed".to_owned()),
        };
        match sent {
            Ok(()) => {
                outbox.mark_sent(row.id).await?;
                tracing::info!(outbox_id = row.id, domain, "outbox: message sent");
                Ok(true)
            }
            Err(kind) => {
                let permanent =
                    kind.starts_with("permanent") || kind == "address" || kind == "sealed";
                let attempts = if permanent {
                    MAX_ATTEMPTS.max(row.attempts + 1)
                } else {
                    row.attempts + 1
                };
                let next = outbox.now().saturating_add(backoff(attempts));
                outbox.failed(row.id, attempts, &kind, next).await?;
                if attempts >= MAX_ATTEMPTS {
                    tracing::warn!(
                        outbox_id = row.id,
                        domain,
                        error = %kind,
                        attempts,
                        "outbox: message not sent; left for `armor admin outbox`"
                    );
                } else {
                    tracing::warn!(
                        outbox_id = row.id,
                        domain,
                        error = %kind,
                        attempts,
                        retry_in = backoff(attempts),
                        "outbox: message not sent; will retry"
                    );
                }
                Ok(false)
            }
        }
    }

    /// Sends due messages until aborted: every [`POLL`], and at once when
    /// [`Outbox::send_message`] queues one.
    pub async fn run(self, outbox: Arc<Outbox>) {
        loop {
            if let Err(e) = self.deliver_due(&outbox).await {
                tracing::warn!(error = %e, "outbox: could not read or update the outbox");
            }
            tokio::select! {
                () = outbox.queued() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let got: Vec<u64> = (1..=9).map(backoff).collect();
        assert_eq!(got, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(1_000), 3600);
    }

    #[test]
    fn urls_and_senders() {
        assert!(Mailer::new("smtp://127.0.0.1:2525", "armor@localhost").is_ok());
        assert!(Mailer::new("smtps://u:p@mail.example.com", "Armor <a@example.com>").is_ok());
        assert!(Mailer::new("smtp://mail.example.com?tls=required", "a@example.com").is_ok());
        assert!(Mailer::new("http://x", "a@example.com").is_err());
        assert!(Mailer::new("smtp://x", "not an address").is_err());
        let m = Mailer::new("smtps://user:hunter2@mail.example.com", "a@example.com").unwrap();
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(domain("ann@example.com"), "example.com");
    }
}
