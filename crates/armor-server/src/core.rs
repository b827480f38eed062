//! The server's logic, free of HTTP: authentication (ARMOR-PSK and
//! FH-AUTH), account context, permissions, API keys, password login.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use armor_psk::replay::FingerprintKey;
use armor_psk::{Credentials, ReplayError, ReplayGuard, Request, SigningKey, Verifier};
use dashmap::DashMap;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::crypto::{self, MasterKeys};
use crate::error::Error;
use crate::store::{AuditEvent, KeyRow, Store, UserRow};

mod access;
pub mod hashing;
pub mod keycache;
mod login;
mod sessions;
pub use access::Profile;
pub mod outbox;
mod throttle;
pub use throttle::Limit;
pub mod totp;
mod users;
pub use users::{
    IssuedCode, LockState, LockoutPolicy, SecuritySummary, TotpEnrolment, UserEdit, ACTIVATION_TTL,
    LOGIN_CODE_TTL, MIN_PASSWORD, PHONE_CODE_TTL, RESET_TTL,
};

/// Permission names (seed 001's troubleshooting section, and user
/// administration).
pub mod perm {
    pub const KEYS_ALL_READ: &str = "API Keys All Read";
    pub const KEYS_ALL_DELETE: &str = "API Keys All Delete";
    pub const KEYS_SELF_MANAGE: &str = "API Keys Self Manage";
    pub const USERS_READ: &str = "Users Read";
    pub const USERS_MANAGE: &str = "Users Manage";
    pub const AUDIT_READ: &str = "Audit Log Read";
    pub const ALL: [&str; 6] = [
        KEYS_ALL_READ,
        KEYS_ALL_DELETE,
        KEYS_SELF_MANAGE,
        USERS_READ,
        USERS_MANAGE,
        AUDIT_READ,
    ];
}

/// Lifetimes of password-login artefacts (seconds).
pub const CODE_TTL: u64 = 120;
pub const TOKEN_IDLE_TTL: u64 = 900;
pub const TOKEN_MAX_TTL: u64 = 12 * 3600;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An FH-AUTH (or Bearer) token; the SHA-256 of the token.
    Password { token_hash: Vec<u8> },
    /// An ARMOR-PSK signature with this key.
    ApiKey { key_id: String },
}

/// An authenticated caller acting in one account.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    /// The account the request acts in (`X-Account-Context`, or the
    /// credential's own).
    pub account_id: i64,
    pub via: Via,
    /// Shared with the access cache: cloning a principal copies no strings.
    pub permissions: Arc<[String]>,
}

impl Principal {
    pub fn is_api_key(&self) -> bool {
        matches!(self.via, Via::ApiKey { .. })
    }
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
    pub fn require(&self, permission: &str) -> Result<(), Error> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(permission.to_owned()))
        }
    }
    /// How the audit log names the credential.
    pub fn credential(&self) -> String {
        match &self.via {
            Via::Password { .. } => "password".into(),
            Via::ApiKey { key_id } => format!("key:{key_id}"),
        }
    }
}

/// A verified key's identity, before the account context is applied.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub key_id: String,
    pub user_id: i64,
    pub account_id: i64,
}

/// What the verifier keeps per key besides its HMAC state (which the key
/// cache holds apart, see `core/keycache.rs`): the identity and the last
/// use. The secret itself is not kept.
pub struct CachedKey {
    pub id: KeyIdentity,
    /// The last accepted use on this node (Unix seconds; 0: none yet).
    used: AtomicU64,
    /// The last use queued for the store: a key's use is queued at most
    /// once per [`LAST_USED_GRAIN`].
    queued: AtomicU64,
}

impl CachedKey {
    pub fn new(id: KeyIdentity) -> Self {
        CachedKey {
            id,
            used: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }
}

/// How stale a key's stored last-used time may be while its node runs: each
/// key is written at most once per this many seconds (and exactly on a clean
/// shutdown). The node that served the call reports it to the second.
pub const LAST_USED_GRAIN: u64 = 60;

/// A key created just now: the only time its secret exists outside.
pub struct NewKey {
    pub row: KeyRow,
    pub secret: Zeroizing<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub psk_accepted: AtomicU64,
    pub psk_refused: DashMap<&'static str, u64>,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub keys_created: AtomicU64,
    pub keys_deleted: AtomicU64,
}

impl Metrics {
    fn refused(&self, code: &'static str) {
        *self.psk_refused.entry(code).or_insert(0) += 1;
    }
}

/// What [`Core::reseal_all`] re-sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    pub keys: usize,
    pub totp: usize,
    /// Pending outbox messages.
    pub outbox: usize,
}

/// Settings the logic needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub max_body: usize,
    pub require_signed_query: bool,
    pub replay_max_entries: usize,
}

/// The server's state and logic.
pub struct Core {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub config: CoreConfig,
    pub metrics: Metrics,
    /// Failed-login lockout; set before sharing the core to change it.
    pub lockout: LockoutPolicy,
    /// Woken when a message is queued: the SMTP sender (`mail`) runs at once.
    pub outbox_wake: tokio::sync::Notify,
    verifier: Verifier,
    replay: Arc<dyn ReplayGuard>,
    fingerprints: FingerprintKey,
    /// Redis: the shared replay store and invalidation channel.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    keys: keycache::KeyCache,
    /// Serialises the writers of `keys` against the store, and counts
    /// removals. A reload holds it from its read of the store to its last
    /// change, a removal takes it to count itself: so a reload never puts
    /// back a key removed after its read, and a key creation that sees the
    /// count move lets the store decide.
    key_writes: tokio::sync::Mutex<u64>,
    /// Active users' permissions per account (see `core/access.rs`).
    access: access::AccessCache,
    last_used: DashMap<String, u64>,
    master: RwLock<Arc<MasterKeys>>,
    master_path: std::path::PathBuf,
    dummy_hash: Arc<str>,
    /// Password hashes run here, off the async workers.
    pub hasher: hashing::Hasher,
    /// Failed logins per (client address, user name); `None`: unlimited.
    login_limit: Option<crate::web::limit::AuthFailureLimiter>,
}

impl Core {
    /// A core over a fresh SQLite store in `dir`, bootstrapped with account
    /// 1 and its owner, on a [`ManualClock`](crate::clock::ManualClock) at
    /// `now`; with the owner's principal. For tests, examples and
    /// benchmarks that exercise the core in process.
    pub async fn scratch(
        dir: &std::path::Path,
        now: u64,
        replay_entries: usize,
    ) -> Result<(Core, Principal), Error> {
        let store = Store::open(&dir.join("armor.db").to_string_lossy()).await?;
        let hash = crypto::hash_password("scratch-owner-password")?;
        store.bootstrap("owner@example.com", &hash, now).await?;
        let core = Core::new(
            store,
            &dir.join("master.key"),
            Arc::new(crate::clock::ManualClock::new(now)),
            Arc::new(armor_psk::MemoryReplayGuard::new(replay_entries)),
            CoreConfig {
                max_body: 1 << 20,
                require_signed_query: false,
                replay_max_entries: replay_entries,
            },
        )
        .await?;
        let owner = core
            .principal(
                1,
                1,
                None,
                Via::Password {
                    token_hash: vec![0; 32],
                },
            )
            .await?;
        Ok((core, owner))
    }

    /// Builds the state and loads every active key into the verifier cache.
    pub async fn new(
        store: Store,
        master_path: &std::path::Path,
        clock: Arc<dyn Clock>,
        replay: Arc<dyn ReplayGuard>,
        config: CoreConfig,
    ) -> Result<Self, Error> {
        let master = MasterKeys::load_or_create(master_path)?;
        let dummy_hash = crypto::hash_password(&crypto::new_password())?.into();
        let core = Core {
            store,
            clock,
            verifier: Verifier::default().require_signed_query(config.require_signed_query),
            config,
            metrics: Metrics::default(),
            lockout: LockoutPolicy::default(),
            outbox_wake: tokio::sync::Notify::new(),
            replay,
            fingerprints: FingerprintKey::new(crypto::random_16()),
            cluster: None,
            keys: keycache::KeyCache::new(crypto::random_16(), || {
                SigningKey::from_bytes(&crypto::random_16())
            }),
            access: access::AccessCache::default(),
            key_writes: tokio::sync::Mutex::new(0),
            last_used: DashMap::new(),
            master: RwLock::new(Arc::new(master)),
            master_path: master_path.to_owned(),
            dummy_hash,
            hasher: hashing::Hasher::default(),
            login_limit: None,
        };
        core.load_keys(None).await?;
        // Outbox bodies written in clear before they were sealed.
        let sealed = core.reseal_outbox(&core.master(), false).await?;
        core.store.scrub_at_start().await?;
        if sealed > 0 {
            tracing::info!(messages = sealed, "outbox: pending messages sealed");
        }
        Ok(core)
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    fn master(&self) -> Arc<MasterKeys> {
        match self.master.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the master key file (after a rotation by another process).
    fn reload_master(&self) -> Result<Arc<MasterKeys>, Error> {
        let fresh = Arc::new(MasterKeys::load(&self.master_path)?);
        match self.master.write() {
            Ok(mut g) => *g = fresh.clone(),
            Err(p) => *p.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }

    /// Claims go to Redis, shared with every node using it; the
    /// fingerprint key is derived from the master key file, which all the
    /// nodes share. Cache changes are published to the other nodes.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.fingerprints =
            FingerprintKey::new(self.master().derive_16("replay fingerprint key v1"));
        self.cluster = Some(cluster);
        self
    }

    /// Limits failed logins per (client address, user name): past the
    /// burst, 429 `rate_limited` without checking the password.
    pub fn with_login_limit(mut self, rate: crate::gateway::Rate) -> Self {
        self.login_limit = Some(crate::web::limit::AuthFailureLimiter::new(rate));
        self
    }

    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// (Re)loads active keys of active users into the cache: all of them, or
    /// one user's; with other nodes, they re-read that user's keys too.
    pub async fn load_keys(&self, user_id: Option<i64>) -> Result<usize, Error> {
        let n = self.reload_keys_local(user_id).await?;
        if let Some(uid) = user_id {
            self.notify_user(uid).await;
        }
        Ok(n)
    }

    /// (Re)loads active keys of active users into this node's cache: all of
    /// them, or one user's. Entries no longer active are dropped after the
    /// fresh ones are in, so a key that stays active is never missing; keys
    /// already cached are not opened again. Returns the active count.
    pub async fn reload_keys_local(&self, user_id: Option<i64>) -> Result<usize, Error> {
        match user_id {
            Some(uid) => self.access.invalidate_user(uid),
            None => self.access.clear(),
        }
        let mut removals = self.key_writes.lock().await;
        let rows = self.store.active_sealed_keys(user_id).await?;
        let mut master = self.master();
        let mut fresh = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            fresh.insert(row.id.clone());
            // A key's secret never changes (a rotation only re-seals it):
            // one already cached for the same owner is kept as it is.
            if self
                .keys
                .get(&row.id)
                .is_some_and(|k| k.id.user_id == row.user_id && k.id.account_id == row.account_id)
            {
                continue;
            }
            let sealed = row.sealed();
            if !master.has_version(sealed.version) {
                master = self.reload_master()?;
            }
            let secret = master.open(&row.id, &sealed)?;
            let signing = SigningKey::from_bytes(&secret);
            self.keys.insert(
                Arc::new(CachedKey::new(KeyIdentity {
                    key_id: row.id,
                    user_id: row.user_id,
                    account_id: row.account_id,
                })),
                signing,
            );
        }
        let n = fresh.len();
        if self.drop_keys(|k| {
            user_id.is_some_and(|uid| k.id.user_id != uid) || fresh.contains(&k.id.key_id)
        }) {
            *removals += 1;
        }
        Ok(n)
    }

    /// Keeps the cached keys for which `keep` is true; the last use of each
    /// key dropped is queued for the store, not lost with the entry.
    /// Whether any was dropped.
    fn drop_keys(&self, keep: impl Fn(&CachedKey) -> bool) -> bool {
        let mut dropped = false;
        self.keys.retain(|k| {
            let kept = keep(k);
            if !kept {
                self.queue_exact(k);
                dropped = true;
            }
            kept
        });
        dropped
    }

    /// Removes from the key cache, counted (see `key_writes`).
    async fn remove_keys(&self, remove: impl FnOnce()) {
        let mut removals = self.key_writes.lock().await;
        *removals += 1;
        remove();
    }

    /// Drops a user's keys from the verifier cache (disable, delete), here
    /// and on the other nodes. Call it after the change is written. They
    /// are dropped at once, then read again from the store, which has the
    /// last word should an enable have been written after this change.
    pub async fn forget_user_keys(&self, user_id: i64) {
        self.remove_keys(|| {
            self.drop_keys(|k| k.id.user_id != user_id);
        })
        .await;
        if let Err(err) = self.reload_keys_local(Some(user_id)).await {
            tracing::warn!(%err, user_id, "re-reading a user's keys after dropping them failed; they stay dropped");
        }
        self.invalidate_user(user_id);
    }

    /// A user's status, role or memberships changed: what this node cached
    /// about them is dropped at once, and the other nodes are told. Call it
    /// after the change is written.
    pub fn invalidate_user(&self, user_id: i64) {
        self.access.invalidate_user(user_id);
        if let Some(cluster) = self.cluster.clone() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    cluster
                        .publish_reliably(crate::cluster::user_message(user_id))
                        .await;
                });
            }
        }
    }

    /// Tells every node (this one included) to re-read a user's keys.
    async fn notify_user(&self, user_id: i64) {
        if let Some(cluster) = &self.cluster {
            cluster
                .publish_reliably(crate::cluster::user_message(user_id))
                .await;
        }
    }

    /// Applies a message of the invalidation channel.
    pub async fn apply_invalidation(&self, message: &str) -> Result<(), Error> {
        match message.strip_prefix("user:").map(str::parse::<i64>) {
            Some(Ok(uid)) => self.reload_keys_local(Some(uid)).await.map(|_| ()),
            _ => {
                tracing::warn!(%message, "unknown invalidation message; re-reading every key");
                self.reload_keys_local(None).await.map(|_| ())
            }
        }
    }

    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    // ---- ARMOR-PSK ----

    /// Steps 1–3 of a request: parse, check the clock, look the key up. No
    /// I/O. The body is read only when this succeeds. Returns a copy of the
    /// key's HMAC state; an unknown key id gets a borrowed one, under which
    /// [`Core::psk_finish`] verifies and refuses.
    pub fn psk_begin<'h>(
        &self,
        header: &'h str,
    ) -> Result<(Credentials<'h>, keycache::Found), Error> {
        let creds = Credentials::parse(header).map_err(|e| {
            let err = armor_psk::Error::from(e);
            self.metrics.refused(err.code());
            Error::from(err)
        })?;
        if let Err(err) = self.verifier.check_time(&creds, self.now()) {
            self.metrics.refused(err.code());
            return Err(err.into());
        }
        // An unknown key id gets a borrowed state, found and copied like a
        // key's own: hit and miss cost the same (timing).
        let key = self.keys.lookup(creds.key_id());
        Ok((creds, key))
    }

    /// Steps 5–6: verify against every accepted form, then claim the nonce
    /// and signature. Returns the key's identity.
    pub async fn psk_finish(
        &self,
        creds: &Credentials<'_>,
        found: &keycache::Found,
        req: &Request<'_>,
    ) -> Result<KeyIdentity, Error> {
        let refuse = |err: armor_psk::Error| {
            self.metrics.refused(err.code());
            let detail = matches!(err, armor_psk::Error::InvalidSignature).then(|| {
                format!(
                    "The server signed over: {}. Check the secret, and that the method, path (without the query string), nonce, timestamp and body match what you signed.",
                    self.verifier.string_to_sign(creds, req).redacted()
                )
            });
            Error::Psk { err, detail }
        };
        // An unknown key id takes the same path as a wrong signature, under
        // a borrowed state: the same HMAC work, the same refusal.
        self.verifier
            .verify(found.signing(), creds, req)
            .map_err(refuse)?;
        // Only a request verified under its own key's state reaches that
        // key. A borrowed state may be another key's: a request that
        // verified under it was signed with that key's secret, for an id
        // that was not cached at `psk_begin`, and is refused even if that
        // id has been cached since. A key deleted since is refused too.
        let key = match self.keys.key_of(found) {
            Some(key) if found.is_own() => key,
            _ => return Err(refuse(armor_psk::Error::InvalidSignature)),
        };
        let fp = self.fingerprints.fingerprints(creds);
        let until = self.verifier.claim_until(creds);
        if let Some(cluster) = &self.cluster {
            use crate::cluster::ClaimError;
            let now = self.now();
            match cluster.claim(&fp, creds.timestamp(), until, now).await {
                Ok(()) => {}
                Err(ClaimError::Reused) => return Err(refuse(armor_psk::Error::NonceReused)),
                Err(ClaimError::BeforeEpoch) => {
                    return Err(refuse(armor_psk::Error::TimestampOutOfWindow {
                        server_time: now,
                    }))
                }
                Err(ClaimError::Unavailable) => {
                    return Err(refuse(armor_psk::Error::ReplayStoreUnavailable))
                }
            }
        } else {
            match self.replay.claim(&fp, until, self.now()) {
                Ok(()) => {}
                Err(ReplayError::Reused) => return Err(refuse(armor_psk::Error::NonceReused)),
                Err(ReplayError::Unavailable) => {
                    return Err(refuse(armor_psk::Error::ReplayStoreUnavailable))
                }
            }
        }
        self.metrics.psk_accepted.fetch_add(1, Ordering::Relaxed);
        self.note_use(&key, self.now());
        Ok(key.id.clone())
    }

    /// Records an accepted use: exact in memory, queued for the store at
    /// most once per [`LAST_USED_GRAIN`] per key, so the hot path neither
    /// allocates nor grows the write batch on every request.
    fn note_use(&self, key: &CachedKey, now: u64) {
        key.used.fetch_max(now, Ordering::Relaxed);
        let queued = key.queued.load(Ordering::Relaxed);
        if (queued == 0 || now >= queued.saturating_add(LAST_USED_GRAIN))
            && key
                .queued
                .compare_exchange(queued, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.last_used.insert(key.id.key_id.clone(), now);
        }
    }

    /// A last-used time not yet written to the store.
    pub fn pending_last_used(&self, key_id: &str) -> Option<u64> {
        let queued = self.last_used.get(key_id).map(|v| *v);
        let used = self
            .keys
            .get(key_id)
            .map(|k| k.used.load(Ordering::Relaxed))
            .filter(|&t| t > 0);
        queued.max(used)
    }

    /// Queues the exact last use of every cached key used since it was last
    /// queued; the shutdown path calls this before its final flush.
    pub fn queue_exact_last_used(&self) {
        self.keys.for_each(|k| self.queue_exact(k));
    }

    fn queue_exact(&self, k: &CachedKey) {
        let used = k.used.load(Ordering::Relaxed);
        if used > k.queued.swap(used, Ordering::Relaxed) {
            self.last_used.insert(k.id.key_id.clone(), used);
        }
    }

    /// Writes the batched last-used times.
    pub async fn flush_last_used(&self) -> Result<(), Error> {
        let batch: Vec<(String, u64)> = self
            .last_used
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        for (k, at) in &batch {
            self.last_used.remove_if(k, |_, v| v == at);
        }
        self.store.record_last_used(&batch).await
    }

    // ---- FH-AUTH ----

    /// Checks an FH-AUTH / Bearer token; slides its idle expiry.
    pub async fn authenticate_token(&self, token: &str) -> Result<(i64, Vec<u8>), Error> {
        let hash = crypto::token_hash(token);
        let now = self.now();
        let row = self.store.token(&hash).await?.ok_or(Error::InvalidToken)?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        if row.revoked != 0
            || now_i > row.expires_at
            || now_i > row.last_seen.saturating_add(TOKEN_IDLE_TTL as i64)
        {
            return Err(Error::InvalidToken);
        }
        if now_i - row.last_seen >= 30 {
            self.store.touch_token(&hash, now).await?;
        }
        Ok((row.user_id, hash))
    }

    /// Applies the account context and loads the permissions in it.
    pub async fn principal(
        &self,
        user_id: i64,
        default_account: i64,
        context: Option<&str>,
        via: Via,
    ) -> Result<Principal, Error> {
        // Served from the cache only what a store read let through; any
        // refusal below is decided by the store.
        let plain = |t: &str| t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit());
        let cached_account = match context {
            None => Some(default_account),
            Some(t) if plain(t) => t.parse().ok(),
            Some(_) => None,
        };
        if let Some(account_id) = cached_account {
            if let Some(permissions) = self.access.get(user_id, account_id) {
                return Ok(Principal {
                    user_id,
                    account_id,
                    via,
                    permissions,
                });
            }
        }
        let generation = self.access.generation();
        let user = self.store.user_by_id(user_id).await?;
        if user.as_ref().is_none_or(|u| u.status != "active") {
            return Err(match via {
                Via::Password { .. } => Error::InvalidToken,
                Via::ApiKey { .. } => armor_psk::Error::InvalidSignature.into(),
            });
        }
        let account_id = match context {
            None => default_account,
            Some(text) => {
                if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::InvalidAccountContext);
                }
                text.parse().map_err(|_| Error::InvalidAccountContext)?
            }
        };
        let permissions: Arc<[String]> = self
            .store
            .permissions(user_id, account_id)
            .await?
            .ok_or(Error::InvalidAccountContext)?
            .into();
        self.access
            .insert(user_id, account_id, generation, permissions.clone());
        Ok(Principal {
            user_id,
            account_id,
            via,
            permissions,
        })
    }

    /// What `GET /me` shows of an active user (cached like permissions).
    pub async fn profile(&self, user_id: i64) -> Result<Arc<access::Profile>, Error> {
        if let Some(p) = self.access.profile(user_id) {
            return Ok(p);
        }
        let generation = self.access.generation();
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.status == "active")
            .ok_or(Error::NotFound("user"))?;
        let accounts = self.store.accounts_of(user_id).await?;
        let mut permissions = Vec::with_capacity(accounts.len());
        for a in &accounts {
            let p = self.store.permissions(user_id, a.id).await?;
            permissions.push(p.unwrap_or_default().into());
        }
        let profile = Arc::new(access::Profile {
            user_id,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            accounts,
            permissions,
        });
        self.access.insert_profile(generation, profile.clone());
        Ok(profile)
    }

    /// `POST /auth/token`: exchanges a code for an FH-AUTH token.
    pub async fn exchange_code(
        &self,
        code: &str,
        address: Option<String>,
    ) -> Result<Zeroizing<String>, Error> {
        let now = self.now();
        let user_id = self.redeem_code(code, address, now).await?;
        self.issue_token(user_id, now).await
    }

    async fn issue_token(&self, user_id: i64, now: u64) -> Result<Zeroizing<String>, Error> {
        let token = crypto::new_token();
        self.store
            .insert_token(
                &crypto::token_hash(&token),
                user_id,
                now,
                now + TOKEN_MAX_TTL,
            )
            .await?;
        Ok(token)
    }

    pub async fn logout(&self, p: &Principal) -> Result<(), Error> {
        if let Via::Password { token_hash } = &p.via {
            self.store.revoke_token(token_hash).await?;
            self.audit(AuditEvent {
                account_id: Some(p.account_id),
                actor_id: Some(p.user_id),
                credential: p.credential(),
                event: "logout",
                ..Default::default()
            })
            .await;
        }
        Ok(())
    }

    // ---- users and accounts ----

    /// A user visible in the caller's account: a member of it.
    pub async fn user_in_account(
        &self,
        p: &Principal,
        user_id: i64,
    ) -> Result<(UserRow, String), Error> {
        let role = self
            .store
            .role_in(user_id, p.account_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.status != "deleted")
            .ok_or(Error::NotFound("user"))?;
        Ok((user, role))
    }

    // ---- API keys ----

    /// Who may touch whose keys: self with Self Manage, others with the
    /// "All" permission named; another account's users are not found.
    /// Returns the owner's row.
    async fn key_owner_check(
        &self,
        p: &Principal,
        user_id: i64,
        all: Option<&str>,
    ) -> Result<UserRow, Error> {
        let (owner, _) = self.user_in_account(p, user_id).await?;
        if user_id == p.user_id && p.has(perm::KEYS_SELF_MANAGE) {
            return Ok(owner);
        }
        match all {
            Some(perm) if p.has(perm) => Ok(owner),
            Some(perm) if user_id != p.user_id => Err(Error::PermissionDenied(perm.to_owned())),
            _ => Err(Error::PermissionDenied(perm::KEYS_SELF_MANAGE.to_owned())),
        }
    }

    pub async fn list_keys(&self, p: &Principal, user_id: i64) -> Result<Vec<KeyRow>, Error> {
        self.key_owner_check(p, user_id, Some(perm::KEYS_ALL_READ))
            .await?;
        self.store.keys_of_user(user_id, p.account_id).await
    }

    /// Creates a key for the caller. Keys are created only for oneself: a
    /// key for someone else would let its creator act as them.
    pub async fn create_key(
        &self,
        p: &Principal,
        user_id: i64,
        name: &str,
        address: Option<String>,
    ) -> Result<NewKey, Error> {
        let name = valid_key_name(name)?;
        // Counted before the owner's status is read: a disable written
        // after that read removes keys after this count.
        let removals = *self.key_writes.lock().await;
        let owner = self.key_owner_check(p, user_id, None).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let secret = crypto::new_secret();
        let sealed = self.master().seal(&id, secret.as_bytes())?;
        let now = self.now();
        self.store
            .insert_key(&id, user_id, p.account_id, name, now, &sealed)
            .await?;
        // Into the cache if the owner is active and no key was removed
        // meanwhile; otherwise (the owner disabled or enabled since, say)
        // the store decides, through a reload.
        let cached = {
            let guard = self.key_writes.lock().await;
            let unchanged = *guard == removals && owner.status == "active";
            if unchanged {
                self.keys.insert(
                    Arc::new(CachedKey::new(KeyIdentity {
                        key_id: id.clone(),
                        user_id,
                        account_id: p.account_id,
                    })),
                    SigningKey::from_bytes(secret.as_bytes()),
                );
            }
            unchanged
        };
        if !cached {
            self.reload_keys_local(Some(user_id)).await?;
        }
        self.metrics.keys_created.fetch_add(1, Ordering::Relaxed);
        self.notify_user(user_id).await;
        self.audit(AuditEvent {
            account_id: Some(p.account_id),
            actor_id: Some(p.user_id),
            credential: p.credential(),
            event: "key_created",
            target: Some(id.clone()),
            address,
            detail: Some(format!("name={name}")),
        })
        .await;
        Ok(NewKey {
            row: KeyRow {
                id,
                user_id,
                account_id: p.account_id,
                name: name.to_owned(),
                created_at: i64::try_from(now).unwrap_or(i64::MAX),
                last_used: None,
                status: "Active".into(),
            },
            secret,
        })
    }

    /// The key `key_id` of `user_id` in the caller's account.
    async fn key_of(&self, p: &Principal, user_id: i64, key_id: &str) -> Result<KeyRow, Error> {
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
        self.remove_keys(|| self.keys.remove(&key.id)).await;
        let deleted = self.store.delete_key(&key.id, self.now()).await;
        self.remove_keys(|| self.keys.remove(&key.id)).await;
        if !deleted? {
            return Err(Error::NotFound("key"));
        }
        self.metrics.keys_deleted.fetch_add(1, Ordering::Relaxed);
        self.notify_user(user_id).await;
        self.audit(AuditEvent {
            account_id: Some(p.account_id),
            actor_id: Some(p.user_id),
            credential: p.credential(),
            event: "key_deleted",
            target: Some(key.id),
            address,
            detail: Some(format!("owner={user_id}")),
        })
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

    /// Re-seals every key, every TOTP secret and every pending outbox
    /// message with the newest master-key version, in batches; returns how
    /// many rows changed. Each row is replaced only if it still holds what
    /// was read, so an interrupted run leaves every row readable and a
    /// second run finishes.
    pub async fn reseal_all(&self) -> Result<Resealed, Error> {
        let master = self.reload_master()?;
        let current = master.current_version();
        let mut done = Resealed::default();
        loop {
            let rows = self.store.totp_not_sealed_with(current, 256).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let Some(old) = row.totp_sealed() else {
                    continue;
                };
                let ad = Self::totp_ad(row.user_id);
                let secret = master.open(&ad, &old)?;
                let sealed = master.seal(&ad, &secret)?;
                if self.store.reseal_totp(row.user_id, &old, &sealed).await? {
                    done.totp += 1;
                }
            }
        }
        done.outbox = self.reseal_outbox(&master, true).await?;
        loop {
            let rows = self.store.keys_not_sealed_with(current, 256).await?;
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
        }
    }

    /// Appends to the audit log; a failure is logged, not fatal to the
    /// action that already happened.
    pub async fn audit(&self, e: AuditEvent) {
        if let Err(err) = self.store.audit(self.now(), &e).await {
            tracing::error!(event = e.event, error = %err, "audit write failed");
        }
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
