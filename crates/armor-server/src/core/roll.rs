//! Rolling a key: a new key (new id, new secret, same name and
//! restrictions) replaces an old one, which keeps working for a grace
//! period and is then refused as `key_expired`.

use super::keys::{KeyAdmin, NewKey};
use super::keyspec::{DEFAULT_GRACE, MAX_GRACE, MAX_LIFETIME};
use super::restrictions::{self, list};
use super::Principal;
use crate::error::Error;

impl KeyAdmin {
    /// Rolls the key `key_id` of `user_id`, the old key working until now
    /// plus `grace` seconds (default a day, at most a week). Same rules as
    /// creating a key: only one's own, with Self Manage, and only with
    /// permissions one still holds. A key already rolled, or expired, is
    /// not rolled (409 `conflict`). Returns the new key and the old id.
    pub async fn roll_key(
        &self,
        p: &Principal,
        user_id: i64,
        key_id: &str,
        grace: Option<i64>,
        address: Option<String>,
    ) -> Result<(NewKey, String), Error> {
        let grace = grace.unwrap_or(DEFAULT_GRACE as i64);
        if !(0..=MAX_GRACE as i64).contains(&grace) {
            return Err(Error::BadRequest(format!(
                "graceSeconds must be 0 to {MAX_GRACE} (7 days)"
            )));
        }
        self.key_owner_check(p, user_id, None).await?;
        let old = self.key_of(p, user_id, key_id).await?;
        let now = self.clock.now();
        match restrictions::status(&old.rules, now) {
            "Rolled" => {
                return Err(Error::Conflict(
                    "this key was rolled already; roll the key that replaced it".into(),
                ))
            }
            "Expired" => {
                return Err(Error::Conflict(
                    "this key has expired; create a new key instead".into(),
                ))
            }
            _ => {}
        }
        let mut rules = old.rules.clone();
        rules.rolled_from = Some(old.id.clone());
        rules.rolled_until = None;
        // The same lifetime as the old key, counted from now.
        if let Some(at) = old.rules.expires_at {
            let life = (at - old.created_at).clamp(0, MAX_LIFETIME as i64);
            rules.expires_at = Some(now as i64 + life);
        }
        if let Some(Ok(perms)) = list(&old.rules.permissions) {
            if let Some(missing) = perms.iter().find(|x| !p.has(x)) {
                return Err(Error::BadRequest(format!(
                    "permissions: the key's user no longer holds '{missing}'; create a new key instead"
                )));
            }
        }
        // The old key's end first: of two rolls at once, one wins.
        if !self.store.mark_rolled(&old.id, now + grace as u64).await? {
            return Err(Error::Conflict(
                "this key was rolled already; roll the key that replaced it".into(),
            ));
        }
        let new = match self
            .insert_new(p, user_id, &old.name, rules, address.clone(), Some(&old.id))
            .await
        {
            Ok(new) => new,
            Err(err) => {
                if let Err(undo) = self.store.unmark_rolled(&old.id).await {
                    tracing::warn!(%undo, "a failed roll could not be undone; the old key ends after its grace period");
                }
                return Err(err);
            }
        };
        // Every node was told to re-read the owner's keys (after the old
        // key's end was written); this one too.
        self.verifier.reload_keys_local(Some(user_id)).await?;
        self.audit
            .by(
                p,
                "key_rolled",
                &old.id,
                address,
                Some(format!("new={} grace={grace}", new.row.id)),
            )
            .await;
        Ok((new, old.id))
    }
}
