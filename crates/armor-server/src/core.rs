//! The server's logic, free of HTTP: one service per capability, each
//! holding only what it uses, composed here into [`Core`], which the web
//! layer, the portal and the gateway are handed. The store is private to
//! these services.
//!
//! - [`verifier::KeyVerifier`]: the key cache, ARMOR-PSK verification,
//!   replay claims, last-used times, cache invalidation.
//! - [`keys::KeyAdmin`]: creating, listing, renaming and deleting keys,
//!   and who may touch whose keys.
//! - [`sessions::Sessions`]: password login, lockout, tokens, portal
//!   sessions.
//! - [`users::UserAdmin`]: users, invitations, codes, status, security
//!   settings.
//! - [`factors::Factors`]: second factors (TOTP and phone).
//! - [`principals::Access`]: who a caller is and what they may read of
//!   their own accounts.
//! - [`outbox::Outbox`], [`audit::Audit`], [`rotation::Rotation`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use dashmap::DashMap;

use crate::clock::Clock;
use crate::crypto;
use crate::error::Error;
use crate::ports::{Invalidation, InvalidationHandler, ReplayStore};
use crate::store::Store;

mod access;
pub mod audit;
mod codes;
pub mod factors;
pub mod hashing;
pub mod keycache;
mod keyid;
pub mod keys;
pub mod keyspec;
pub mod lockout;
mod login;
pub mod master;
pub mod outbox;
pub mod principals;
pub mod restrictions;
mod roll;
pub mod rotation;
mod security;
pub mod sessions;
mod throttle;
mod tokens;
pub mod totp;
pub mod usage;
pub mod users;
pub mod verifier;

pub use access::Profile;
pub(crate) use access::Rendered;
pub use codes::{
    IssuedCode, ACTIVATION_TTL, LOGIN_CODE_TTL, MIN_PASSWORD, PHONE_CODE_TTL, RESET_TTL,
};
pub use factors::TotpEnrolment;
pub use keyid::KeyId;
pub use keys::NewKey;
pub use lockout::{LockState, LockoutPolicy};
pub use principals::parse_account_context;
pub use rotation::Resealed;
pub use security::SecuritySummary;
pub use throttle::Limit;
pub use tokens::TokenUser;
pub use users::UserEdit;
pub use verifier::{CachedKey, KeyIdentity, LAST_USED_GRAIN};

/// Permission names (the vendor's troubleshooting guide, and user
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
    /// An FH-AUTH/Bearer token or a portal session; its SHA-256.
    Password { token_hash: [u8; 32] },
    /// An ARMOR-PSK signature with this key, and the key's own permission
    /// list if it has one (the caller then acts with the permissions in
    /// both it and its user's).
    ApiKey {
        /// Copied from the key's cached identity, held inline.
        key_id: KeyId,
        key_permissions: Option<Arc<[String]>>,
    },
}

impl Via {
    /// The scheme's name as the API and the gateway's headers show it.
    pub fn scheme(&self) -> &'static str {
        match self {
            Via::Password { .. } => "FH-AUTH",
            Via::ApiKey { .. } => "ARMOR-PSK",
        }
    }
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
    /// The principal acting with only those of its permissions its key's
    /// own list also names (a password caller, or a key without a list:
    /// all of them).
    pub fn narrowed(mut self) -> Self {
        if let Via::ApiKey {
            key_permissions: Some(allowed),
            ..
        } = &self.via
        {
            self.permissions = self
                .permissions
                .iter()
                .filter(|p| allowed.contains(p))
                .cloned()
                .collect();
        }
        self
    }
    /// How the audit log names the credential.
    pub fn credential(&self) -> String {
        match &self.via {
            Via::Password { .. } => "password".into(),
            Via::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }
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

/// Settings the logic needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub max_body: usize,
    pub require_signed_query: bool,
}

/// The services, composed: what the web layer, the portal and the gateway
/// are handed (`AppState = Arc<Core>`).
pub struct Core {
    pub verifier: Arc<verifier::KeyVerifier>,
    pub keys: keys::KeyAdmin,
    pub sessions: sessions::Sessions,
    pub users: users::UserAdmin,
    pub factors: factors::Factors,
    pub access: principals::Access,
    pub outbox: Arc<outbox::Outbox>,
    pub audit: audit::Audit,
    pub rotation: rotation::Rotation,
    pub metrics: Arc<Metrics>,
    pub config: CoreConfig,
    pub clock: Arc<dyn Clock>,
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
        let clock = Arc::new(crate::clock::ManualClock::new(now));
        Self::scratch_on(dir, clock, replay_entries).await
    }

    /// [`Core::scratch`] on a clock the caller keeps (to move it).
    pub async fn scratch_on(
        dir: &std::path::Path,
        clock: Arc<dyn Clock>,
        replay_entries: usize,
    ) -> Result<(Core, Principal), Error> {
        let store = Store::open(&dir.join("armor.db").to_string_lossy()).await?;
        let hash = crypto::hash_password("scratch-owner-password")?;
        store
            .bootstrap("owner@example.com", &hash, clock.now())
            .await?;
        let core = Core::new(
            store,
            &dir.join("master.key"),
            clock,
            Arc::new(armor_psk::MemoryReplayGuard::new(replay_entries)),
            CoreConfig {
                max_body: 1 << 20,
                require_signed_query: false,
            },
        )
        .await?;
        let owner = core
            .access
            .principal(
                1,
                1,
                None,
                Via::Password {
                    token_hash: [0; 32],
                },
            )
            .await?;
        Ok((core, owner))
    }

    /// Builds the services and loads every active key into the verifier
    /// cache.
    pub async fn new(
        store: Store,
        master_path: &std::path::Path,
        clock: Arc<dyn Clock>,
        replay: Arc<dyn ReplayStore>,
        config: CoreConfig,
    ) -> Result<Self, Error> {
        let master = Arc::new(master::Master::load_or_create(master_path)?);
        let dummy_hash: Arc<str> = crypto::hash_password(&crypto::new_password())?.into();
        let metrics = Arc::new(Metrics::default());
        let cache = Arc::new(access::AccessCache::default());
        let audit = audit::Audit::new(store.clone(), clock.clone());
        let access = principals::Access::new(store.clone(), cache.clone());
        let token_cache = cache.clone();
        let verifier = Arc::new(verifier::KeyVerifier::new(
            store.clone(),
            clock.clone(),
            replay,
            config.require_signed_query,
            master.clone(),
            cache,
            metrics.clone(),
        ));
        let outbox = Arc::new(outbox::Outbox::new(
            store.clone(),
            clock.clone(),
            master.clone(),
        ));
        let lockout = lockout::Lockout::new(store.clone(), clock.clone(), audit.clone());
        let factors = factors::Factors::new(
            store.clone(),
            clock.clone(),
            master.clone(),
            outbox.clone(),
            lockout.clone(),
            audit.clone(),
        );
        let hasher = hashing::Hasher::default();
        let core = Core {
            keys: keys::KeyAdmin {
                store: store.clone(),
                clock: clock.clone(),
                verifier: verifier.clone(),
                access: access.clone(),
                master: master.clone(),
                metrics: metrics.clone(),
                audit: audit.clone(),
            },
            sessions: sessions::Sessions {
                store: store.clone(),
                clock: clock.clone(),
                hasher: hasher.clone(),
                dummy_hash,
                lockout: lockout.clone(),
                login_limit: None,
                factors: factors.clone(),
                metrics: metrics.clone(),
                audit: audit.clone(),
                cache: token_cache,
                verifier: verifier.clone(),
                touches: Default::default(),
            },
            users: users::UserAdmin {
                store: store.clone(),
                clock: clock.clone(),
                access: access.clone(),
                verifier: verifier.clone(),
                outbox: outbox.clone(),
                sends: throttle::SendLimits::new(store.clone(), clock.clone(), master.clone()),
                hasher,
                lockout,
                audit: audit.clone(),
                master: master.clone(),
            },
            rotation: rotation::Rotation::new(store.clone(), master.clone(), outbox.clone()),
            factors,
            access,
            verifier,
            outbox,
            audit,
            metrics,
            config,
            clock,
        };
        core.verifier.load_keys(None).await?;
        // Outbox bodies written in clear before they were sealed.
        let sealed = core.outbox.reseal(&master.current(), false).await?;
        store.scrub_at_start().await?;
        if sealed > 0 {
            tracing::info!(messages = sealed, "outbox: pending messages sealed");
        }
        Ok(core)
    }

    /// The password-hashing pool, shared by logins and user
    /// administration.
    pub fn hasher(&self) -> &hashing::Hasher {
        &self.users.hasher
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Claims go to Redis, shared with every node using it; the
    /// fingerprint key is derived from the master key file, which all the
    /// nodes share. Cache changes are published to the other nodes.
    /// Limits that count across the nodes count there too.
    pub fn with_cluster<S: ReplayStore + Invalidation + crate::ports::Counters + 'static>(
        self,
        shared: Arc<S>,
    ) -> Self {
        self.verifier.set_shared(shared.clone(), shared.clone());
        self.verifier
            .set_key_rate_limit(Arc::new(crate::limit::SharedKeyWindows(shared)));
        self
    }

    /// Limits failed logins per (client address, user name): past the
    /// burst, 429 `rate_limited` without checking the password.
    pub fn with_login_limit(mut self, rate: crate::limit::Rate) -> Self {
        self.sessions.login_limit = Some(crate::limit::AuthFailureLimiter::new(rate));
        self
    }
}

/// What the invalidation channel asks of this node.
impl InvalidationHandler for Core {
    fn reload_keys(
        &self,
        user_id: Option<i64>,
    ) -> crate::ports::BoxFuture<'_, Result<usize, Error>> {
        Box::pin(self.verifier.reload_keys_local(user_id))
    }
}
