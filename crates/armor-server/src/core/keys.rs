//! Key administration: creating, listing, renaming and deleting API keys,
//! and the rule of who may touch whose keys (in one place: the API and the
//! portal both ask here).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::audit::Audit;
use super::keyspec::KeySpec;
use super::master::Master;
use super::principals::Access;
use super::restrictions::Restrictions;
use super::verifier::{KeyIdentity, KeyVerifier};
use super::{perm, Metrics, Principal};
use crate::clock::Clock;
use crate::crypto;
use crate::error::Error;
use crate::store::{KeyRow, KeyRules, KeyStatus, NewKeyRow, Store, UserRow, UserStatus};

/// A key created just now: the only time its secret exists outside.
pub struct NewKey {
    pub row: KeyRow,
    pub secret: Zeroizing<String>,
}

/// A key as the portal's table shows it: with its owner's email and its
/// last use (stored, or pending on this node).
pub struct VisibleKey {
    pub key: KeyRow,
    pub owner: String,
    pub last_used: Option<u64>,
}

/// Whether `p` may act on `owner`'s keys: their own with Self Manage,
/// anyone's with the "All" permission `all`. Refuses naming the permission
/// that is missing.
fn owner_rule(p: &Principal, owner: i64, all: Option<&str>) -> Result<(), Error> {
    if owner == p.user_id && p.has(perm::KEYS_SELF_MANAGE) {
        return Ok(());
    }
    match all {
        Some(perm) if p.has(perm) => Ok(()),
        Some(perm) if owner != p.user_id => Err(Error::PermissionDenied(perm.to_owned())),
        _ => Err(Error::PermissionDenied(perm::KEYS_SELF_MANAGE.to_owned())),
    }
}

/// Creates, lists, renames and deletes API keys.
pub struct KeyAdmin {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) verifier: Arc<KeyVerifier>,
    pub(super) access: Access,
    pub(super) master: Arc<Master>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) audit: Audit,
}

impl KeyAdmin {
    /// Whether `p` may delete `owner`'s keys (the portal shows the action
    /// only then).
    pub fn may_delete(p: &Principal, owner: i64) -> bool {
        owner_rule(p, owner, Some(perm::KEYS_ALL_DELETE)).is_ok()
    }

    /// A key's last use: the stored time, or a later one not yet written.
    pub fn last_used(&self, key: &KeyRow) -> Option<u64> {
        let pending = self.verifier.pending_last_used(&key.id);
        key.last_used.map(|t| t.max(0) as u64).max(pending)
    }

    /// The keys of the caller's account the caller may read: everyone's
    /// with Keys All Read, else their own (`own_email` names the caller);
    /// newest first.
    pub async fn visible_keys(
        &self,
        p: &Principal,
        own_email: &str,
    ) -> Result<Vec<VisibleKey>, Error> {
        let owners: Vec<(i64, String)> = if p.has(perm::KEYS_ALL_READ) {
            self.access
                .members(p)
                .await?
                .into_iter()
                .map(|(u, _)| (u.id, u.email))
                .collect()
        } else {
            vec![(p.user_id, own_email.to_owned())]
        };
        let mut out = Vec::new();
        for (uid, email) in owners {
            for key in self.list_keys(p, uid).await? {
                let last_used = self.last_used(&key);
                out.push(VisibleKey {
                    key,
                    owner: email.clone(),
                    last_used,
                });
            }
        }
        out.sort_by(|a, b| (b.key.created_at, &b.key.id).cmp(&(a.key.created_at, &a.key.id)));
        Ok(out)
    }

    /// The key `key_id` of the caller's account, if the caller may delete
    /// it: `NotFound` when it is not there, `PermissionDenied` when it is
    /// someone else's and the caller lacks Keys All Delete.
    pub async fn deletable(&self, p: &Principal, key_id: &str) -> Result<KeyRow, Error> {
        let key = self
            .store
            .key(&key_id.to_ascii_lowercase())
            .await?
            .filter(|k| k.account_id == p.account_id)
            .ok_or(Error::NotFound("key"))?;
        owner_rule(p, key.user_id, Some(perm::KEYS_ALL_DELETE))?;
        Ok(key)
    }

    /// The key `key_id` of the caller's account, if the caller may read
    /// it: their own with Self Manage, anyone's with Keys All Read.
    pub async fn readable(&self, p: &Principal, key_id: &str) -> Result<KeyRow, Error> {
        let key = self
            .store
            .key(&key_id.to_ascii_lowercase())
            .await?
            .filter(|k| k.account_id == p.account_id)
            .ok_or(Error::NotFound("key"))?;
        owner_rule(p, key.user_id, Some(perm::KEYS_ALL_READ))?;
        Ok(key)
    }

    /// Who may touch whose keys: self with Self Manage, others with the
    /// "All" permission named; another account's users are not found.
    /// Returns the owner's row.
    pub(super) async fn key_owner_check(
        &self,
        p: &Principal,
        user_id: i64,
        all: Option<&str>,
    ) -> Result<UserRow, Error> {
        let (owner, _) = self.access.user_in_account(p, user_id).await?;
        owner_rule(p, user_id, all)?;
        Ok(owner)
    }

    pub async fn list_keys(&self, p: &Principal, user_id: i64) -> Result<Vec<KeyRow>, Error> {
        self.key_owner_check(p, user_id, Some(perm::KEYS_ALL_READ))
            .await?;
        self.store.keys_of_user(user_id, p.account_id).await
    }

    /// Creates a key for the caller. Keys are created only for oneself: a
    /// key for someone else would let its creator act as them. `spec`
    /// holds the optional restrictions (each permission must be the
    /// caller's own).
    pub async fn create_key(
        &self,
        p: &Principal,
        user_id: i64,
        name: &str,
        spec: &KeySpec,
        address: Option<String>,
    ) -> Result<NewKey, Error> {
        let name = valid_key_name(name)?;
        let rules = spec.validate(&p.permissions, self.clock.now())?;
        self.insert_new(p, user_id, name, rules, address, None)
            .await
    }

    /// Writes a new key of `user_id` (the caller) and caches it.
    /// `rolled_from`: the key it replaces (for the audit log).
    pub(super) async fn insert_new(
        &self,
        p: &Principal,
        user_id: i64,
        name: &str,
        rules: KeyRules,
        address: Option<String>,
        rolled_from: Option<&str>,
    ) -> Result<NewKey, Error> {
        // Counted before the owner's status is read: a disable written
        // after that read removes keys after this count.
        let removals = self.verifier.removals().await;
        let owner = self.key_owner_check(p, user_id, None).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let secret = crypto::new_secret();
        let sealed = self.master.current().seal(&id, secret.as_bytes())?;
        let now = self.clock.now();
        self.store
            .insert_key(&NewKeyRow {
                id: &id,
                user_id,
                account_id: p.account_id,
                name,
                created_at: now,
                sealed: &sealed,
                rules: &rules,
            })
            .await?;
        // Into the cache if the owner is active and no key was removed
        // meanwhile; otherwise the store decides.
        self.verifier
            .admit_created(
                removals,
                owner.status == UserStatus::Active,
                KeyIdentity {
                    key_id: id.as_str().into(),
                    user_id,
                    account_id: p.account_id,
                    permissions: None,
                },
                Restrictions::from_rules(&rules),
                secret.as_bytes(),
            )
            .await?;
        self.metrics.keys_created.fetch_add(1, Ordering::Relaxed);
        self.verifier.notify_user(user_id).await;
        let detail = match rolled_from {
            Some(old) => format!("name={name} rolled_from={old}"),
            None => format!("name={name}"),
        };
        self.audit
            .by(p, "key_created", &id, address, Some(detail))
            .await;
        Ok(NewKey {
            row: KeyRow {
                id,
                user_id,
                account_id: p.account_id,
                name: name.to_owned(),
                created_at: i64::try_from(now).unwrap_or(i64::MAX),
                last_used: None,
                status: KeyStatus::Active,
                rules,
            },
            secret,
        })
    }

    /// The key `key_id` of `user_id` in the caller's account.
    pub(super) async fn key_of(
        &self,
        p: &Principal,
        user_id: i64,
        key_id: &str,
    ) -> Result<KeyRow, Error> {
        self.store
            .key(&key_id.to_ascii_lowercase())
            .await?
            .filter(|k| k.user_id == user_id && k.account_id == p.account_id)
            .ok_or(Error::NotFound("key"))
    }

    pub async fn delete_key(
        &self,
        p: &Principal,
        user_id: i64,
        key_id: &str,
        address: Option<String>,
    ) -> Result<(), Error> {
        self.key_owner_check(p, user_id, Some(perm::KEYS_ALL_DELETE))
            .await?;
        let key = self.key_of(p, user_id, key_id).await?;
        // Out of the cache first: from here on the key is refused. Then
        // again once the store has it deleted, should a reload have read it
        // in between.
        self.verifier.remove_key(&key.id).await;
        let deleted = self.store.delete_key(&key.id, self.clock.now()).await;
        self.verifier.remove_key(&key.id).await;
        if !deleted? {
            return Err(Error::NotFound("key"));
        }
        self.metrics.keys_deleted.fetch_add(1, Ordering::Relaxed);
        self.verifier.notify_user(user_id).await;
        self.audit
            .by(
                p,
                "key_deleted",
                key.id,
                address,
                Some(format!("owner={user_id}")),
            )
            .await;
        Ok(())
    }

    pub async fn rename_key(
        &self,
        p: &Principal,
        user_id: i64,
        key_id: &str,
        prev: Option<&str>,
        new: &str,
    ) -> Result<KeyRow, Error> {
        let new = valid_key_name(new)?;
        self.key_owner_check(p, user_id, None).await?;
        let mut key = self.key_of(p, user_id, key_id).await?;
        if let Some(prev) = prev {
            if prev != key.name {
                return Err(Error::Conflict(format!(
                    "prevApiKeyName '{prev}' does not match the key's name"
                )));
            }
        }
        self.store.rename_key(&key.id, new).await?;
        key.name = new.to_owned();
        Ok(key)
    }
}

fn valid_key_name(name: &str) -> Result<&str, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "name must be 1 to 100 characters, without control characters".into(),
        ));
    }
    Ok(name)
}
