//! The outbox: messages for users (invitations, reset and phone codes),
//! queued in the `outbox` table for the SMTP sender (`mail.rs`) or an
//! operator (`armor admin outbox`).
//!
//! A body holds a code, so it never reaches the database in clear: it is
//! sealed under the master key before the row is committed (AES-256-GCM;
//! the associated data binds the row's id, channel and recipient and the
//! master-key version, so a body moved to another row does not open), and
//! wiped when the message is delivered (sent by SMTP, or `armor admin
//! outbox --mark-sent`). A rotation re-seals pending bodies like key
//! secrets, one row at a time, each only if it still holds what was read.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::master::Master;
use crate::clock::Clock;
use crate::crypto::MasterKeys;
use crate::error::Error;
use crate::store::{OutboxRow, Store};

/// Rows read at a time when re-sealing.
const RESEAL_BATCH: i64 = 256;

/// What the seal of a message body is bound to: its row.
fn associated(id: i64, channel: &str, recipient: &str) -> String {
    format!("outbox:{id}:{channel}:{recipient}")
}

/// The body of a pending message: opened with the master key (or, for a
/// row written before bodies were sealed and not sealed since, as stored).
/// Empty once the message was delivered.
pub fn open_body(master: &MasterKeys, row: &OutboxRow) -> Result<Zeroizing<String>, Error> {
    let Some(sealed) = row.sealed() else {
        return Ok(Zeroizing::new(row.body.clone()));
    };
    // The error names no address: it may be logged.
    let mut raw = master
        .open(&associated(row.id, &row.channel, &row.recipient), &sealed)
        .map_err(|_| Error::Internal(format!("outbox message {} does not open", row.id)))?;
    String::from_utf8(std::mem::take(&mut *raw))
        .map(Zeroizing::new)
        .map_err(|_| Error::Internal(format!("outbox message {} is not text", row.id)))
}

/// Queues messages, sealed, and hands them to the sender.
pub struct Outbox {
    store: Store,
    clock: Arc<dyn Clock>,
    master: Arc<Master>,
    /// Woken when a message is queued: the SMTP sender (`mail`) runs at once.
    wake: tokio::sync::Notify,
}

impl Outbox {
    pub(super) fn new(store: Store, clock: Arc<dyn Clock>, master: Arc<Master>) -> Self {
        Outbox {
            store,
            clock,
            master,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Resolves when a message was queued since the last call.
    pub async fn queued(&self) {
        self.wake.notified().await;
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Pending messages on `channel` due at `now`, for the sender.
    pub async fn due(
        &self,
        channel: &str,
        now: u64,
        max_attempts: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, Error> {
        self.store
            .due_outbox(channel, now, max_attempts, limit)
            .await
    }

    /// Leases a message to this sender until `until`; false if another
    /// holds it or it was sent.
    pub async fn claim(&self, id: i64, now: u64, until: u64) -> Result<bool, Error> {
        self.store.claim_outbox(id, now, until).await
    }

    /// Records a message as sent (its body is wiped).
    pub async fn mark_sent(&self, id: i64) -> Result<(), Error> {
        self.store.mark_sent(id, self.clock.now()).await
    }

    /// Records a failed attempt and when to try again.
    pub async fn failed(&self, id: i64, attempts: i64, kind: &str, next: u64) -> Result<(), Error> {
        self.store.outbox_failed(id, attempts, kind, next).await
    }

    /// Queues a message for a user, its body sealed. Its text (which may
    /// hold a code) is not logged.
    pub async fn send_message(
        &self,
        channel: &str,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), Error> {
        let master = self.master.current();
        let id = self
            .store
            .enqueue(self.clock.now(), channel, recipient, subject, |id| {
                master.seal(&associated(id, channel, recipient), body.as_bytes())
            })
            .await?;
        tracing::info!(outbox_id = id, channel, "message queued");
        self.wake.notify_one();
        Ok(())
    }

    /// The body of a pending message, for the sender.
    pub fn body(&self, row: &OutboxRow) -> Result<Zeroizing<String>, Error> {
        let mut master = self.master.current();
        if row
            .seal
            .mk_version
            .is_some_and(|v| !u32::try_from(v).is_ok_and(|v| master.has_version(v)))
        {
            // Sealed after a rotation by another process.
            master = self.master.reload()?;
        }
        open_body(&master, row)
    }

    /// Seals the pending bodies written in clear before bodies were sealed
    /// (at start-up) and, with `rotation`, the ones sealed with an older
    /// master-key version. Returns how many rows changed.
    pub(super) async fn reseal(&self, master: &MasterKeys, rotation: bool) -> Result<usize, Error> {
        let current = rotation.then(|| master.current_version());
        let mut done = 0;
        // Rows that cannot be re-sealed (their version is missing from the
        // key file) are skipped, not retried forever.
        let mut after = 0;
        loop {
            let rows = self
                .store
                .outbox_not_sealed_with(current, after, RESEAL_BATCH)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(done);
            };
            after = last.id;
            for row in rows {
                let body = match open_body(master, &row) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(outbox_id = row.id, error = %e, "outbox: message does not open; left as it is");
                        continue;
                    }
                };
                let sealed = master.seal(
                    &associated(row.id, &row.channel, &row.recipient),
                    body.as_bytes(),
                )?;
                if self.store.reseal_outbox(&row, &sealed).await? {
                    done += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, recipient: &str, master: &MasterKeys, body: &str) -> OutboxRow {
        let sealed = master
            .seal(&associated(id, "email", recipient), body.as_bytes())
            .unwrap();
        OutboxRow {
            id,
            created_at: 0,
            channel: "email".into(),
            recipient: recipient.into(),
            subject: String::new(),
            body: String::new(),
            sent_at: None,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            seal: crate::store::SealColumns {
                mk_version: Some(i64::from(sealed.version)),
                nonce: Some(sealed.nonce),
                ciphertext: Some(sealed.ciphertext),
            },
        }
    }

    #[test]
    fn a_body_opens_only_in_its_own_row() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKeys::load_or_create(&dir.path().join("master.key")).unwrap();
        let r = row(7, "ann@example.com", &master, "Your reset code is X");
        assert_eq!(
            open_body(&master, &r).unwrap().as_str(),
            "Your reset code is X"
        );
        let mut moved = r.clone();
        moved.id = 8;
        assert!(open_body(&master, &moved).is_err());
        let mut redirected = r.clone();
        redirected.recipient = "eve@example.com".into();
        let err = open_body(&master, &redirected).unwrap_err().to_string();
        assert!(!err.contains("example.com"), "{err}");
        assert!(!format!("{r:?}").contains("code"));
    }
}
