//! The armor API server: accounts, users, roles and permissions, API keys,
//! password login (FH-AUTH), ARMOR-PSK verification, the portal and the
//! gateway.
//!
//! # Layout
//! - [`core`]: the logic, free of HTTP, as one service per capability (key
//!   verifier, key administration, sessions, user administration, second
//!   factors, access, outbox, audit, master-key rotation) composed into
//!   [`core::Core`]. Time comes from a [`clock::Clock`].
//! - [`store`]: every SQL statement, on SQLite (WAL, full sync) or
//!   PostgreSQL through one set of queries; only [`core`] calls it.
//! - [`crypto`]: master key file, AES-256-GCM sealing, Argon2id, tokens.
//! - [`ports`]: the interfaces the domain uses for what nodes share: the
//!   replay store and the invalidation channel (memory and Redis
//!   implementations).
//! - [`cluster`]: Redis, for several nodes: the shared replay store and the
//!   invalidation channel, behind [`ports`]; it knows nothing of [`core`].
//! - [`limit`]: token buckets keyed by a small key, the one rate limiter
//!   (the gateway's per-key limits, refused ARMOR-PSK attempts, failed
//!   logins).
//! - [`web`]: the route table, the front layer and handlers (on axum); [`web::error`]
//!   maps each domain error to a status and code in one place.
//! - [`portal`]: the server-rendered portal.
//! - [`gateway`]: ARMOR-PSK in front of an HTTP upstream (configuration,
//!   forwarding, header scrubbing, upstream pool, limits); it uses [`web`]
//!   only to turn its refusals into responses.
//! - [`conn`]: connection limits (head, body and idle time; per-address
//!   caps).
//! - [`mail`]: the SMTP sender of the outbox.
//! - [`Application`]: binds, wires and runs; port 0 gives a free port.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod clock;
pub mod cluster;
pub mod conn;
pub mod core;
pub mod crypto;
mod decimal;
pub mod error;
pub mod gateway;
pub mod limit;
pub mod mail;
pub mod portal;
pub mod ports;
pub mod store;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::core::{Core, CoreConfig};
pub use crate::error::Error;
use crate::store::Store;

/// Everything `armor serve` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub max_body: usize,
    pub require_signed_query: bool,
    pub admin_email: Option<String>,
    pub admin_password: Option<SecretString>,
    /// Fingerprints the in-memory replay guard may hold (two per request).
    pub replay_max_entries: usize,
    /// Redis for the shared replay store and cache invalidation (several
    /// nodes); without it, the replay guard is in memory.
    pub redis_url: Option<String>,
    /// How the Redis URL is read: one server, a cluster's seed nodes, or
    /// sentinels.
    pub redis_mode: cluster::RedisMode,
    /// Pooled Redis connections (each multiplexed).
    pub redis_connections: usize,
    /// For `rediss://` servers: the authorities their certificates are
    /// checked against instead of the system's, and a client certificate.
    pub redis_tls: Option<cluster::RedisTls>,
    /// Forward requests that match no armor route to an upstream.
    pub gateway: Option<gateway::GatewayConfig>,
    /// Proxies in front of armor: from them, the client is the address
    /// `X-Forwarded-For` names (see [`conn::client`]), and the gateway
    /// keeps their `Forwarded` and `X-Forwarded-*` values (and appends to
    /// them); from any other peer those are replaced.
    pub trusted_proxies: Vec<gateway::IpNet>,
    /// Time limits of a request's head, its body and an idle connection,
    /// and the connections allowed per client address (see [`conn`]).
    pub connection_limits: conn::Limits,
    /// Serve `/metrics` on this address instead of the main listener
    /// (where it then answers 404).
    pub metrics_listen: Option<String>,
    /// Refused ARMOR-PSK attempts allowed per (client address, key id)
    /// before 429 `rate_limited`; `None`: unlimited.
    pub auth_failure_limit: Option<gateway::Rate>,
    /// Failed password logins allowed per (client address, user name)
    /// before 429 `rate_limited`, counted before the password is checked;
    /// `None`: unlimited.
    pub login_failure_limit: Option<gateway::Rate>,
    /// SMTP server for the outbox (`smtp://`, `smtps://`; see [`mail`]);
    /// without it, messages wait for `armor admin outbox`.
    pub smtp_url: Option<SecretString>,
    /// Sender of the outbox's mail.
    pub smtp_from: String,
    /// How long per-key usage counts are kept (minute and hour buckets);
    /// older ones are deleted hourly.
    pub usage_retention: core::usage::Retention,
}

/// The defaults, written only here: `armor serve`'s flags take theirs from
/// this (crates/armor/src/serve.rs).
impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./armor-data"),
            database_url: None,
            master_key_file: None,
            max_body: 1024 * 1024,
            require_signed_query: false,
            admin_email: None,
            admin_password: None,
            replay_max_entries: 64 * 1024 * 1024,
            redis_url: None,
            redis_mode: cluster::RedisMode::Single,
            redis_connections: 4,
            redis_tls: None,
            gateway: None,
            trusted_proxies: Vec::new(),
            connection_limits: conn::Limits::default(),
            metrics_listen: None,
            auth_failure_limit: Some(gateway::Rate {
                per_second: 1.0,
                burst: 30,
            }),
            login_failure_limit: Some(gateway::Rate {
                per_second: 0.1,
                burst: 10,
            }),
            smtp_url: None,
            smtp_from: "armor@localhost".into(),
            usage_retention: core::usage::Retention::default(),
        }
    }
}

/// What the first start on an empty store created.
pub struct FirstStart {
    pub email: String,
    /// Set when no password was given: shown once, then gone.
    pub generated_password: Option<Zeroizing<String>>,
}

/// A bound, ready server.
pub struct Application {
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    first_start: Option<FirstStart>,
    gateway: Option<Arc<gateway::Gateway>>,
    trusted_proxies: conn::client::TrustedProxies,
    connection_limits: conn::Limits,
    metrics_listener: Option<tokio::net::TcpListener>,
    auth_failure_limit: Option<gateway::Rate>,
    /// Shared counters (Redis), for the limits counted on every node.
    counters: Option<Arc<dyn crate::ports::Counters>>,
    mailer: Option<mail::Mailer>,
    usage_retention: core::usage::Retention,
}

/// Seconds between two usage retention clean-ups while serving.
const USAGE_CLEAN_UP_EVERY: u64 = 3600;

impl Application {
    /// Opens the store, loads the keys, binds the listener (port 0 picks a
    /// free port: read it from [`Application::local_addr`]).
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        create_private_dir(&settings.data_dir)?;
        let db_url = settings.database_url.clone().unwrap_or_else(|| {
            settings
                .data_dir
                .join("armor.db")
                .to_string_lossy()
                .into_owned()
        });
        let master_path = settings
            .master_key_file
            .clone()
            .unwrap_or_else(|| settings.data_dir.join("master.key"));
        let store = Store::open(&db_url).await?;

        let email = settings
            .admin_email
            .clone()
            .unwrap_or_else(|| "admin@localhost".into());
        let (password, generated) = match &settings.admin_password {
            Some(p) => (Zeroizing::new(p.expose_secret().to_owned()), false),
            None => (crypto::new_password(), true),
        };
        let first_start = if store
            .bootstrap(&email, &crypto::hash_password(&password)?, clock.now())
            .await?
        {
            Some(FirstStart {
                email,
                generated_password: generated.then_some(password),
            })
        } else {
            None
        };

        let replay = Arc::new(armor_psk::MemoryReplayGuard::new(
            settings.replay_max_entries,
        ));
        let core = Core::new(
            store,
            &master_path,
            clock,
            replay,
            CoreConfig {
                max_body: settings.max_body,
                require_signed_query: settings.require_signed_query,
            },
        )
        .await?;
        let cluster = match &settings.redis_url {
            Some(url) => Some(
                cluster::Cluster::with_tls(
                    url,
                    &settings.redis_mode,
                    settings.redis_tls.as_ref(),
                    settings.redis_connections,
                )
                .await?,
            ),
            None => None,
        };
        let core = match &cluster {
            Some(c) => core.with_cluster(c.clone()),
            None => core,
        };
        let core = match settings.login_failure_limit {
            Some(rate) => core.with_login_limit(rate),
            None => core,
        };
        let counters = cluster
            .clone()
            .map(|c| c as Arc<dyn crate::ports::Counters>);
        let gateway = match settings.gateway.clone() {
            Some(g) => Some(Arc::new(
                gateway::Gateway::new(g, web::is_armor_route)?.with_counters(counters.clone()),
            )),
            None => None,
        };
        let mailer = match &settings.smtp_url {
            Some(url) => Some(mail::Mailer::new(url.expose_secret(), &settings.smtp_from)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", settings.listen)))?;
        let metrics_listener =
            match &settings.metrics_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    Error::Config(format!("cannot listen for metrics on {addr}: {e}"))
                })?),
                None => None,
            };
        let core = Arc::new(core);
        if let Some(c) = &cluster {
            c.spawn(Arc::downgrade(&core), core.clock.clone());
            c.start_up(core.clock.as_ref()).await;
        }
        Ok(Application {
            listener,
            core,
            first_start,
            gateway,
            trusted_proxies: conn::client::TrustedProxies::new(settings.trusted_proxies),
            connection_limits: settings.connection_limits,
            metrics_listener,
            auth_failure_limit: settings.auth_failure_limit,
            counters,
            mailer,
            usage_retention: settings.usage_retention,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("no local address: {e}")))
    }

    /// The metrics listener's address, when `/metrics` has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// What the first start created, once.
    pub fn take_first_start(&mut self) -> Option<FirstStart> {
        self.first_start.take()
    }

    /// Serves until `shutdown` completes, then drains connections and
    /// writes the pending last-used times.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let core = self.core.clone();
        let retention = self.usage_retention;
        // The periodic writer stops between two rounds, never in the middle
        // of a write: a batch taken from memory and dropped unwritten would
        // be lost.
        let limiter = self.auth_failure_limit.map(|rate| {
            let limiter = limit::AuthFailureLimiter::new(rate);
            Arc::new(match self.counters {
                Some(c) => limiter.with_counters(c, core.clock.clone()),
                None => limiter,
            })
        });
        let (stop_flusher, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn({
            let core = core.clone();
            let limiter = limiter.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                let mut cleaned_at = 0;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = core.verifier.refusals_queued() => {
                            core.verifier.count_queued_refusals();
                            continue;
                        }
                        _ = &mut stopped => break,
                    }
                    if let Some(l) = &limiter {
                        l.forget_refilled();
                    }
                    if let Err(e) = core.verifier.flush_last_used().await {
                        tracing::warn!(error = %e, "could not write last-used times");
                    }
                    if let Err(e) = core.sessions.flush_token_touches().await {
                        tracing::warn!(error = %e, "could not write tokens' last uses");
                    }
                    if let Err(e) = core.verifier.flush_usage(false).await {
                        tracing::warn!(error = %e, "could not write key usage counts");
                    }
                    let now = core.clock.now();
                    if now >= cleaned_at + USAGE_CLEAN_UP_EVERY {
                        cleaned_at = now;
                        match core.keys.clean_up_usage(&retention, |_| {}).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "old key usage counts deleted"),
                            Err(e) => {
                                tracing::warn!(error = %e, "could not delete old key usage counts")
                            }
                        }
                    }
                }
            }
        });
        let mailer = self
            .mailer
            .map(|m| tokio::spawn(m.run(core.outbox.clone())));
        let limits = self.connection_limits;
        let metrics = self.metrics_listener.map(|l| {
            let app = web::metrics_app(core.clone());
            // The same time and connection limits as the main listener.
            let l = conn::InspectingListener::new(l, limits);
            let service = move |_| hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(conn::serve(l, service, std::future::pending()))
        });
        let listener = conn::InspectingListener::new(self.listener, self.connection_limits)
            .uncapped(self.trusted_proxies.clone());
        let app = web::front::App::new(
            core.clone(),
            metrics.is_none(),
            self.gateway,
            limiter,
            self.trusted_proxies,
        );
        conn::serve(listener, |peer| app.connection(peer), shutdown).await;
        let _ = stop_flusher.send(());
        let _ = flusher.await;
        if let Some(m) = metrics {
            m.abort();
        }
        if let Some(m) = mailer {
            m.abort();
        }
        core.verifier.queue_exact_last_used();
        // Each is written even if another fails; the first error is the
        // answer.
        let last_used = core.verifier.flush_last_used().await;
        let touches = core.sessions.flush_token_touches().await;
        let usage = core.verifier.flush_usage(true).await;
        core.access.close().await;
        last_used.and(touches).and(usage)
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), Error> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| Error::Config(format!("cannot create data dir {}: {e}", dir.display())))
}
