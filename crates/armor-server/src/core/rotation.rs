//! Master-key rotation: re-sealing every key secret, TOTP secret and
//! pending outbox message with the newest master-key version.

use std::sync::Arc;

use super::factors::totp_ad;
use super::master::Master;
use super::outbox::Outbox;
use crate::error::Error;
use crate::store::Store;

/// Rows read at a time.
const BATCH: i64 = 256;

/// What [`Rotation::reseal_all`] re-sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    pub keys: usize,
    pub totp: usize,
    /// Pending outbox messages.
    pub outbox: usize,
}

/// Re-seals what the master key protects.
pub struct Rotation {
    store: Store,
    master: Arc<Master>,
    outbox: Arc<Outbox>,
}

impl Rotation {
    pub(super) fn new(store: Store, master: Arc<Master>, outbox: Arc<Outbox>) -> Self {
        Rotation {
            store,
            master,
            outbox,
        }
    }

    /// Re-seals every key, every TOTP secret and every pending outbox
    /// message with the newest master-key version, in batches; returns how
    /// many rows changed. Each row is replaced only if it still holds what
    /// was read, so an interrupted run leaves every row readable and a
    /// second run finishes. Each row is read once: one that cannot be
    /// re-sealed (a TOTP row without its sealed value, say) is passed over.
    pub async fn reseal_all(&self) -> Result<Resealed, Error> {
        self.reseal_all_with(|_| {}).await
    }

    /// As [`Rotation::reseal_all`], telling `progress` what is done after
    /// each batch.
    pub async fn reseal_all_with(
        &self,
        mut progress: impl FnMut(&Resealed),
    ) -> Result<Resealed, Error> {
        let master = self.master.reload()?;
        let current = master.current_version();
        let mut done = Resealed::default();
        let mut after = 0;
        loop {
            let rows = self
                .store
                .totp_not_sealed_with(current, after, BATCH)
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.user_id;
            for row in rows {
                let Some(old) = row.totp_sealed() else {
                    continue;
                };
                let ad = totp_ad(row.user_id);
                let secret = master.open(&ad, &old)?;
                let sealed = master.seal(&ad, &secret)?;
                if self.store.reseal_totp(row.user_id, &old, &sealed).await? {
                    done.totp += 1;
                }
            }
            progress(&done);
        }
        done.outbox = self.outbox.reseal(&master, true).await?;
        progress(&done);
        loop {
            let rows = self.store.keys_not_sealed_with(current, BATCH).await?;
            if rows.is_empty() {
                return Ok(done);
            }
            for row in rows {
                let secret = master.open(&row.id, &row.sealed())?;
                let sealed = master.seal(&row.id, &secret)?;
                if self
                    .store
                    .reseal_key(&row.id, row.mk_version, &sealed)
                    .await?
                {
                    done.keys += 1;
                }
            }
            progress(&done);
        }
    }
}
