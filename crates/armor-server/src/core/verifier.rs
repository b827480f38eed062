//! The key verifier: the key cache, ARMOR-PSK verification (steps 1-3 in
//! [`KeyVerifier::psk_begin`], 5-6 in [`KeyVerifier::psk_finish`]), replay
//! claims, last-used times, and keeping the cache in step with the store
//! (and, through the cluster, with the other nodes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use armor_psk::replay::FingerprintKey;
use armor_psk::Fingerprints;
use armor_psk::{Credentials, Request, SigningKey, Verifier};
use dashmap::DashMap;

use super::access::AccessCache;
use super::keycache::{self, KeyCache};
use super::master::Master;
use super::restrictions::{self, Origin, Restrictions};
use super::usage::{Counts, KeyUsage, Queued, Usage};
use super::{KeyId, Metrics};
use crate::clock::Clock;
use crate::crypto;
use crate::error::Error;
use crate::limit::KeyRates;
use crate::ports::{ClaimError, Invalidation, KeyRateLimit, ReplayStore};
use crate::store::Store;

/// A verified key's identity, before the account context is applied.
/// 72 bytes, in this order (see [`CachedKey`]).
#[derive(Debug, Clone)]
#[repr(C)]
pub struct KeyIdentity {
    pub key_id: KeyId,
    pub user_id: i64,
    pub account_id: i64,
    /// The key's own permission list, if it has one: the caller then acts
    /// with the permissions in both it and its user's.
    pub permissions: Option<Arc<[String]>>,
}

/// What the verifier keeps per key besides its HMAC state (the secret
/// itself is not kept), by value in the key cache (`core/keycache.rs`).
/// What an accepted request reads (the identity, `used`, `queued`, `rules`
/// and the usage windows' per-request counters) fills its first 128 bytes,
/// on a 128-byte boundary: one pair of cache lines, which
/// [`keycache::Found::prefetch_entry`] starts loading once a signature has
/// verified.
#[repr(C, align(128))]
pub struct CachedKey {
    pub id: KeyIdentity,
    /// The last accepted use on this node (Unix seconds; 0: none yet).
    used: AtomicU64,
    /// The last use queued for the store: a key's use is queued at most
    /// once per [`LAST_USED_GRAIN`].
    queued: AtomicU64,
    /// Expiry, routes, networks, rate (`None`: unrestricted).
    pub rules: Option<Arc<Restrictions>>,
    /// Requests accepted and refused, by minute (see `core/usage.rs`).
    usage: KeyUsage,
}

impl CachedKey {
    pub fn new(id: KeyIdentity) -> Self {
        Self::with_rules(id, None)
    }

    pub fn with_rules(mut id: KeyIdentity, rules: Option<Restrictions>) -> Self {
        id.permissions = rules
            .as_ref()
            .and_then(|r| r.permissions.as_ref())
            .map(|p| p.iter().cloned().collect());
        CachedKey {
            id,
            used: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            rules: rules.map(Arc::new),
            usage: KeyUsage::default(),
        }
    }

    /// The entry of a place without a key (a dummy's, a freed one).
    pub(super) fn vacant() -> Self {
        Self::new(KeyIdentity {
            key_id: KeyId::from(""),
            user_id: 0,
            account_id: 0,
            permissions: None,
        })
    }
}

// The layout `CachedKey` documents: its per-request fields in 128 bytes.
const _: () = assert!(std::mem::offset_of!(CachedKey, usage) + KeyUsage::HOT <= 128);

/// How stale a key's stored last-used time may be while its node runs: each
/// key is written at most once per this many seconds (and exactly on a clean
/// shutdown). The node that served the call reports it to the second.
pub const LAST_USED_GRAIN: u64 = 60;

/// A request past [`KeyVerifier::psk_begin`]: its credentials, its key
/// (or a borrowed state) and its replay fingerprints.
/// Its fields are read-only: the fingerprints claimed must be those of the
/// credentials verified.
pub struct Begun<'h> {
    creds: Credentials<'h>,
    key: keycache::Found,
    fp: Fingerprints,
    /// Whether `fp` is for the shared store (see `KeyVerifier::claims_in`).
    shared: bool,
}

impl<'h> Begun<'h> {
    pub fn creds(&self) -> &Credentials<'h> {
        &self.creds
    }

    /// The key's state, or the borrowed one an unknown id gets.
    pub fn key(&self) -> &keycache::Found {
        &self.key
    }
}

/// Where nonces and signatures are claimed: this node's replay store, or
/// (several nodes) a shared one, under a fingerprint key all nodes share.
struct Claims {
    replay: Arc<dyn ReplayStore>,
    fingerprints: FingerprintKey,
    shared: OnceLock<Shared>,
}

/// With other nodes: the shared replay store, the channel telling them
/// what changed, and the fingerprint key they all use.
struct Shared {
    replay: Arc<dyn ReplayStore>,
    invalidation: Arc<dyn Invalidation>,
    fingerprints: FingerprintKey,
}

/// Verifies ARMOR-PSK requests against the cached keys.
pub struct KeyVerifier {
    verifier: Verifier,
    claims: Claims,
    keys: KeyCache,
    /// Serialises the writers of `keys` against the store, and counts
    /// removals. A reload holds it from its read of the store to its last
    /// change, a removal takes it to count itself: so a reload never puts
    /// back a key removed after its read, and a key creation that sees the
    /// count move lets the store decide.
    key_writes: tokio::sync::Mutex<u64>,
    /// Last-used times not yet written, by key id (the cached key's own).
    last_used: DashMap<KeyId, u64>,
    /// Counts requests of keys with a rate limit: this node's, unless a
    /// shared counter is set.
    rates: KeyRates,
    usage: Usage,
    /// Dropped for a user whose keys are re-read (see `core/access.rs`).
    access: Arc<AccessCache>,
    master: Arc<Master>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl KeyVerifier {
    pub(super) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        replay: Arc<dyn ReplayStore>,
        require_signed_query: bool,
        master: Arc<Master>,
        access: Arc<AccessCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        KeyVerifier {
            verifier: Verifier::default().require_signed_query(require_signed_query),
            claims: Claims {
                replay,
                fingerprints: FingerprintKey::new(crypto::random_16()),
                shared: OnceLock::new(),
            },
            keys: KeyCache::new(crypto::random_16(), || {
                SigningKey::from_bytes(&crypto::random_16())
            }),
            key_writes: tokio::sync::Mutex::new(0),
            last_used: DashMap::new(),
            rates: KeyRates::default(),
            usage: Usage::default(),
            access,
            master,
            store,
            clock,
            metrics,
        }
    }

    /// Claims go to Redis, shared with every node using it; the
    /// fingerprint key is derived from the master key file, which all the
    /// nodes share. Cache changes are published to the other nodes. Set
    /// once, before serving.
    pub(super) fn set_shared(
        &self,
        replay: Arc<dyn ReplayStore>,
        invalidation: Arc<dyn Invalidation>,
    ) {
        let fingerprints =
            FingerprintKey::new(self.master.current().derive_16("replay fingerprint key v1"));
        let _ = self.claims.shared.set(Shared {
            replay,
            invalidation,
            fingerprints,
        });
    }

    /// Keys' rate limits are counted in `limit` (shared by the nodes)
    /// rather than on this node. Set once, before serving.
    pub fn set_key_rate_limit(&self, limit: Arc<dyn KeyRateLimit>) {
        self.rates.share(limit);
    }

    fn key_rate_limit(&self) -> &dyn KeyRateLimit {
        self.rates.limit()
    }

    /// The channel to the other nodes, if any.
    fn invalidation(&self) -> Option<&Arc<dyn Invalidation>> {
        self.claims.shared.get().map(|s| &s.invalidation)
    }

    /// The removals counted so far; read before the owner of a key being
    /// created is read (see [`KeyVerifier::admit_created`]).
    pub(super) async fn removals(&self) -> u64 {
        *self.key_writes.lock().await
    }

    /// Puts a key just created into the cache if its owner is active and no
    /// key was removed since `removals` was read; otherwise (the owner
    /// disabled or enabled since, say) the store decides, through a
    /// reload of the owner's keys.
    pub(super) async fn admit_created(
        &self,
        removals: u64,
        owner_active: bool,
        id: KeyIdentity,
        rules: Option<Restrictions>,
        secret: &[u8],
    ) -> Result<(), Error> {
        let user_id = id.user_id;
        let cached = {
            let guard = self.key_writes.lock().await;
            let unchanged = *guard == removals && owner_active;
            if unchanged {
                let key = CachedKey::with_rules(id, rules);
                // A new id replaces nothing; should one, nothing is lost.
                if let Some(old) = self.keys.insert(key, SigningKey::from_bytes(secret)) {
                    self.retire(&old);
                }
            }
            unchanged
        };
        if !cached {
            self.reload_keys_local(Some(user_id)).await?;
        }
        Ok(())
    }

    /// Drops one key from the cache (counted as a removal).
    pub(super) async fn remove_key(&self, key_id: &str) {
        let mut old = None;
        self.remove_keys(|| old = self.keys.remove(key_id)).await;
        // The key's rows stay readable until retention removes them.
        old.iter().for_each(|k| self.retire(k));
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
        let mut master = self.master.current();
        let mut fresh = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            let id = KeyId::from(row.id.as_str());
            fresh.insert(id.clone());
            let rules = Restrictions::from_rules(&row.rules);
            // A key's secret never changes (a rotation only re-seals it):
            // one already cached for the same owner and restrictions (a
            // roll shortens the old key's life) is kept as it is.
            let cached = self.keys.with_key(&row.id, |k| {
                let same = k.id.user_id == row.user_id
                    && k.id.account_id == row.account_id
                    && k.rules.as_deref() == rules.as_ref();
                (
                    same,
                    k.used.load(Ordering::Relaxed),
                    k.queued.load(Ordering::Relaxed),
                )
            });
            if cached.is_some_and(|(same, ..)| same) {
                continue;
            }
            let sealed = row.sealed();
            if !master.has_version(sealed.version) {
                master = self.master.reload()?;
            }
            let secret = master.open(&row.id, &sealed)?;
            let signing = SigningKey::from_bytes(&secret);
            let key = CachedKey::with_rules(
                KeyIdentity {
                    key_id: id,
                    user_id: row.user_id,
                    account_id: row.account_id,
                    permissions: None,
                },
                rules,
            );
            if let Some((_, used, queued)) = cached {
                key.used.store(used, Ordering::Relaxed);
                key.queued.store(queued, Ordering::Relaxed);
            }
            // Its last use carries over; the old entry is retired.
            if let Some(old) = self.keys.insert(key, signing) {
                self.retire(&old);
            }
        }
        let n = fresh.len();
        if self.drop_keys(|k| {
            user_id.is_some_and(|uid| k.id.user_id != uid) || fresh.contains(&*k.id.key_id)
        }) {
            *removals += 1;
        }
        Ok(n)
    }

    /// Keeps the cached keys for which `keep` is true, retiring the others;
    /// whether any was dropped.
    fn drop_keys(&self, keep: impl Fn(&CachedKey) -> bool) -> bool {
        let mut dropped = false;
        self.keys.retain(|k| {
            let kept = keep(k);
            if !kept {
                self.retire(k);
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
        if let Some(invalidation) = self.invalidation().cloned() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(invalidation.user_changed(user_id));
            }
        }
    }

    /// Tells every node (this one included) to re-read a user's keys.
    pub(super) async fn notify_user(&self, user_id: i64) {
        if let Some(invalidation) = self.invalidation() {
            invalidation.clone().user_changed(user_id).await;
        }
    }

    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    // ---- ARMOR-PSK ----

    /// Steps 1–3 of a request: parse, check the clock, look the key up. No
    /// I/O. The body is read only when this succeeds. Returns a copy of the
    /// key's HMAC state; an unknown key id gets a borrowed one, under which
    /// [`KeyVerifier::psk_finish`] verifies and refuses.
    ///
    /// It also computes the request's replay fingerprints and has the
    /// memory guard start loading the table slots the claim will probe
    /// ([`ReplayStore::prefetch`]): a large table is out of cache, and
    /// those loads then overlap the key look-up, the body and the HMAC.
    pub fn psk_begin<'h>(&self, header: &'h str) -> Result<Begun<'h>, Error> {
        let creds = Credentials::parse(header).map_err(|e| {
            let err = armor_psk::Error::from(e);
            self.metrics.refused(err.code());
            Error::from(err)
        })?;
        if let Err(err) = self.verifier.check_time(&creds, self.clock.now()) {
            self.metrics.refused(err.code());
            self.count_refused(&self.keys.lookup(creds.key_id()), err.code());
            return Err(err.into());
        }
        let shared = self.claims.shared.get().is_some();
        let (store, fingerprints) = self.claims_in(shared);
        let fp = fingerprints.fingerprints(&creds);
        store.prefetch(&fp);
        // An unknown key id gets a borrowed state, found and copied like a
        // key's own: hit and miss cost the same (timing).
        let key = self.keys.lookup(creds.key_id());
        Ok(Begun {
            creds,
            key,
            fp,
            shared,
        })
    }

    /// Where claims go, with the fingerprint key that goes with it: the
    /// shared store (once the node has one) when `shared`, else this
    /// process's guard.
    fn claims_in(&self, shared: bool) -> (&Arc<dyn ReplayStore>, &FingerprintKey) {
        match self.claims.shared.get() {
            Some(s) if shared => (&s.replay, &s.fingerprints),
            _ => (&self.claims.replay, &self.claims.fingerprints),
        }
    }

    /// Steps 5–6: verify against every accepted form, then claim the nonce
    /// and signature, then apply the key's restrictions (expiry, networks,
    /// routes, rate) to the request from `origin`. Returns the key's
    /// identity.
    pub async fn psk_finish(
        &self,
        begun: &Begun<'_>,
        req: &Request<'_>,
        origin: &Origin,
    ) -> Result<KeyIdentity, Error> {
        let (creds, found) = (&begun.creds, &begun.key);
        let refuse = |err: armor_psk::Error| {
            self.metrics.refused(err.code());
            self.count_refused(found, err.code());
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
        // id has been cached since.
        if !found.is_own() {
            return Err(refuse(armor_psk::Error::InvalidSignature));
        }
        found.prefetch_entry();
        let until = self.verifier.claim_until(creds);
        let now = self.clock.now();
        // Claimed where its fingerprints' key belongs (`psk_begin` chose).
        match self
            .claims_in(begun.shared)
            .0
            .claim(creds.key_id(), &begun.fp, creds.timestamp(), until, now)
            .outcome()
            .await
        {
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
        // The key as cached now: one deleted since is refused, after its
        // claim (so a replay gets `nonce_reused`: only its secret's holder
        // sees it). An unrestricted key is accepted under one look at its
        // entry, which `prefetch_entry` started loading.
        let gone = || refuse(armor_psk::Error::InvalidSignature);
        let (rules, key_id) = match self.keys.with_key_of(found, |key| match &key.rules {
            None => Ok(self.accept(key, now)),
            Some(rules) => Err((rules.clone(), key.id.key_id.clone())),
        }) {
            None => return Err(gone()),
            Some(Ok(id)) => return Ok(id),
            Some(Err(restricted)) => restricted,
        };
        let target = origin.target(req.method, req.path);
        restrictions::admit(&rules, &key_id, &target, now, self.key_rate_limit())
            .await
            .map_err(|(err, code)| {
                self.metrics.refused(code);
                self.keys.with_key_of(found, |key| {
                    self.usage.refused(&key.id.key_id, &key.usage, now, code)
                });
                err
            })?;
        self.keys
            .with_key_of(found, |key| self.accept(key, now))
            .ok_or_else(gone)
    }

    /// Counts an accepted request and notes the key's use; its identity.
    fn accept(&self, key: &CachedKey, now: u64) -> KeyIdentity {
        self.metrics.psk_accepted.fetch_add(1, Ordering::Relaxed);
        self.usage.accepted(&key.id.key_id, &key.usage, now);
        self.note_use(key, now);
        key.id.clone()
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
            .with_key(key_id, |k| k.used.load(Ordering::Relaxed))
            .filter(|&t| t > 0);
        queued.max(used)
    }

    /// Queues the exact last use of every cached key used since it was last
    /// queued; the shutdown path calls this before its final flush.
    pub fn queue_exact_last_used(&self) {
        self.keys.for_each(|k| self.queue_exact(k));
    }

    /// An entry leaving the cache: its last use is queued and its unwritten
    /// usage counts go to the pending batch (no request counts on it now).
    fn retire(&self, k: &CachedKey) {
        self.queue_exact(k);
        self.usage.drain(&k.id.key_id, &k.usage);
    }

    /// Queues `k`'s last use if not queued yet; a later time waiting stays.
    fn queue_exact(&self, k: &CachedKey) {
        let used = k.used.load(Ordering::Relaxed);
        if used > k.queued.swap(used, Ordering::Relaxed) {
            let mut at = self.last_used.entry(k.id.key_id.clone()).or_insert(used);
            *at = (*at).max(used);
        }
    }

    /// Writes the batched last-used times.
    pub async fn flush_last_used(&self) -> Result<(), Error> {
        let batch: Vec<(String, u64)> = self
            .last_used
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        for (k, at) in &batch {
            self.last_used.remove_if(k.as_str(), |_, v| v == at);
        }
        self.store.record_last_used(&batch).await
    }

    // ---- usage counts (see `core/usage.rs`) ----

    /// Counts a refusal for the key `found` was looked up for, if it is a
    /// cached key (also for refusals decided between `psk_begin` and
    /// `psk_finish`). It is queued, the same way for a cached and an
    /// unknown id, and counted later (see `Usage::queue_refusal`).
    pub fn count_refused(&self, found: &keycache::Found, code: &'static str) {
        let queued = Queued {
            hash: found.hash(),
            own: found.is_own(),
            code,
            at: self.clock.now(),
        };
        self.usage.queue_refusal(queued);
    }

    /// Counts every queued refusal on its key (see
    /// [`Usage::queue_refusal`]): for the server's periodic task, off any
    /// request, and before usage is written.
    pub fn count_queued_refusals(&self) {
        self.count_refusals(self.usage.take_refusals(None));
    }

    /// Completes once a batch of refusals waits to be counted.
    pub async fn refusals_queued(&self) {
        self.usage.batch_queued().await;
    }

    /// Refusals queued and not yet counted (for the tests).
    pub fn queued_refusals(&self) -> usize {
        self.usage.queued_refusals()
    }

    /// Those of ids that were cached when refused and still are now are
    /// counted at the time they were refused; the others are dropped.
    fn count_refusals(&self, batch: Vec<Queued>) {
        for q in batch {
            // Looked up alike for every id, then kept only if it was the
            // id's own key when refused.
            self.keys.with_key_alike(q.hash, |key| {
                if q.own {
                    self.usage.refused(&key.id.key_id, &key.usage, q.at, q.code);
                }
            });
        }
    }

    /// Writes the usage counts of minutes that have ended (`all`: every
    /// count, at shutdown) to the store.
    pub async fn flush_usage(&self, all: bool) -> Result<(), Error> {
        self.count_queued_refusals();
        let minute = self.clock.now() / super::usage::MINUTE;
        self.usage
            .flush(&self.store, |u| {
                self.keys.for_each(|k| {
                    if all {
                        u.drain(&k.id.key_id, &k.usage)
                    } else {
                        u.drain_ended(&k.id.key_id, &k.usage, minute)
                    }
                });
            })
            .await
    }

    /// A key's counts in buckets of `grain` seconds starting in
    /// `[from, to)`: stored, pending and current on this node.
    pub async fn usage_of(
        &self,
        key_id: &str,
        grain: u64,
        from: u64,
        to: u64,
    ) -> Result<std::collections::BTreeMap<u64, Counts>, Error> {
        // This key's queued refusals only: how long the read takes must
        // not depend on which other ids are cached.
        self.count_refusals(self.usage.take_refusals(Some(self.keys.hash_of(key_id))));
        let live = |f: &mut dyn FnMut(Option<&KeyUsage>)| {
            if self.keys.with_key(key_id, |k| f(Some(&k.usage))).is_none() {
                f(None);
            }
        };
        self.usage
            .read(&self.store, key_id, live, grain, from, to)
            .await
    }
}
