//! `armor serve`: configuration from flags and `ARMOR_*` variables, then
//! `armor_server::Application`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use armor_server::clock::SystemClock;
use armor_server::gateway::GatewayConfig;
use armor_server::{Application, Settings};
use secrecy::SecretString;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ARMOR_LISTEN", default_value_t = defaults().listen)]
    listen: String,
    /// Holds the SQLite database and the master key file.
    #[arg(long, env = "ARMOR_DATA_DIR", default_value_os_t = defaults().data_dir)]
    data_dir: PathBuf,
    /// Database URL (default: the SQLite file armor.db in the data dir).
    #[arg(long, env = "ARMOR_DATABASE_URL")]
    database_url: Option<String>,
    /// Per-key usage counts kept per minute for this many hours (older
    /// minute buckets are deleted hourly).
    #[arg(long, env = "ARMOR_USAGE_MINUTE_RETENTION_HOURS", value_name = "HOURS",
        default_value_t = defaults().usage_retention.minutes / 3600,
        value_parser = clap::value_parser!(u64).range(1..=24 * 3660))]
    usage_minute_retention_hours: u64,
    /// Per-key usage counts kept per hour for this many days (days are
    /// summed from hours, so this is also how far back daily usage goes).
    #[arg(long, env = "ARMOR_USAGE_HOUR_RETENTION_DAYS", value_name = "DAYS",
        default_value_t = defaults().usage_retention.hours / 86_400,
        value_parser = clap::value_parser!(u64).range(1..=36_600))]
    usage_hour_retention_days: u64,
    /// Master key file (default: master.key in the data dir; mode 0600).
    #[arg(long, env = "ARMOR_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "ARMOR_MAX_BODY", default_value_t = defaults().max_body)]
    max_body: usize,
    /// Refuse ARMOR-PSK requests with a query string whose signature does
    /// not cover it (`query_not_signed`).
    #[arg(long, env = "ARMOR_REQUIRE_SIGNED_QUERY")]
    require_signed_query: bool,
    /// Owner of account 1, created on the first start only.
    #[arg(long, env = "ARMOR_ADMIN_EMAIL")]
    admin_email: Option<String>,
    /// Most fingerprints the replay guard holds (two per request in the
    /// window); past it, ARMOR-PSK requests get 503 rather than forget one.
    #[arg(long, env = "ARMOR_REPLAY_MAX_ENTRIES", default_value_t = defaults().replay_max_entries)]
    replay_max_entries: usize,
    /// Redis for several nodes (`redis://host:port[/db]`): the shared replay
    /// store and key-cache invalidation. Unreachable: ARMOR-PSK requests get
    /// 503 `replay_store_unavailable` until it is back (docs/deployment.md).
    #[arg(
        long,
        env = "ARMOR_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    redis_url: Option<String>,
    /// How --redis-url is read: `single` (one server), `cluster` (Redis
    /// Cluster: comma-separated seed nodes) or `sentinel` (comma-separated
    /// sentinels, with --redis-sentinel-master).
    #[arg(long, env = "ARMOR_REDIS_MODE", default_value = "single",
        value_parser = ["single", "cluster", "sentinel"])]
    redis_mode: String,
    /// Sentinel mode: the name the sentinels know the primary by.
    #[arg(long, env = "ARMOR_REDIS_SENTINEL_MASTER", value_name = "NAME")]
    redis_sentinel_master: Option<String>,
    /// Sentinel mode: the ACL user to reach the primary as, with the
    /// password in ARMOR_REDIS_SENTINEL_MASTER_PASSWORD (never a flag).
    #[arg(
        long,
        env = "ARMOR_REDIS_SENTINEL_MASTER_USERNAME",
        value_name = "USER"
    )]
    redis_sentinel_master_username: Option<String>,
    /// TLS to Redis (`rediss://` URLs): a PEM file of the authorities the
    /// servers' certificates are checked against, instead of the system's.
    #[arg(long, env = "ARMOR_REDIS_CA_FILE", value_name = "FILE")]
    redis_ca_file: Option<PathBuf>,
    /// TLS to Redis: a PEM file of the certificate chain to present to
    /// servers that ask clients for one (with --redis-client-key).
    #[arg(long, env = "ARMOR_REDIS_CLIENT_CERT", value_name = "FILE")]
    redis_client_cert: Option<PathBuf>,
    /// TLS to Redis: the PEM file of the client certificate's private key.
    #[arg(long, env = "ARMOR_REDIS_CLIENT_KEY", value_name = "FILE")]
    redis_client_key: Option<PathBuf>,
    /// Pooled Redis connections per node (each carries many requests).
    #[arg(long, env = "ARMOR_REDIS_CONNECTIONS", default_value_t = default_redis_connections(),
        value_parser = clap::value_parser!(u16).range(1..=256))]
    redis_connections: u16,
    /// Gateway: forward every request that matches no armor route to this
    /// `http://host:port[/base]`, once verified (docs/gateway.md).
    #[arg(long, env = "ARMOR_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Gateway: seconds to wait for the upstream's answer (502/504 after).
    #[arg(long, env = "ARMOR_UPSTREAM_TIMEOUT", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    upstream_timeout: u64,
    /// Gateway: a path prefix forwarded without authentication; repeatable
    /// (ARMOR_PUBLIC_PATHS: comma-separated).
    #[arg(
        long = "public-path",
        env = "ARMOR_PUBLIC_PATHS",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    public_paths: Vec<String>,
    /// Gateway: default rate limit of each API key, requests per second and
    /// burst.
    #[arg(long, env = "ARMOR_RATE_LIMIT", value_name = "RPS:BURST")]
    rate_limit: Option<armor_server::gateway::Rate>,
    /// Gateway: rate limit for keys of users with this role (in the account
    /// the request acts in); repeatable.
    #[arg(long = "role-rate-limit", env = "ARMOR_ROLE_RATE_LIMITS", value_delimiter = ',',
        value_parser = armor_server::gateway::parse_named_rate, value_name = "ROLE=RPS:BURST")]
    role_rate_limits: Vec<(String, armor_server::gateway::Rate)>,
    /// Gateway: rate limit for one key id; repeatable; wins over the others.
    #[arg(long = "key-rate-limit", env = "ARMOR_KEY_RATE_LIMITS", value_delimiter = ',',
        value_parser = armor_server::gateway::parse_named_rate, value_name = "KEY_ID=RPS:BURST")]
    key_rate_limits: Vec<(String, armor_server::gateway::Rate)>,
    /// A proxy in front of armor (address or CIDR), repeatable. From it,
    /// the client is the last address of `X-Forwarded-For` that is not a
    /// trusted proxy (for a key's allowed networks, the per-client limits
    /// and the audit log), and the gateway keeps its `Forwarded` and
    /// `X-Forwarded-*` values and appends to them. From other peers they
    /// are ignored and replaced.
    #[arg(long = "trusted-proxy", env = "ARMOR_TRUSTED_PROXIES", value_delimiter = ',',
        value_parser = armor_server::gateway::parse_net, value_name = "CIDR")]
    trusted_proxies: Vec<armor_server::gateway::IpNet>,
    /// Seconds a request head may take once it has started; a slower one
    /// (slowloris) gets 408 and its connection closed.
    #[arg(long, env = "ARMOR_HEADER_TIMEOUT", default_value_t = defaults().connection_limits.header_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    header_timeout: u64,
    /// Seconds a request body may take, from the end of its head; a slower
    /// one gets 408 `request_timeout` and its connection closed.
    #[arg(long, env = "ARMOR_BODY_TIMEOUT", default_value_t = defaults().connection_limits.body_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    body_timeout: u64,
    /// Seconds a connection may stay open with no request in progress and
    /// nothing being written; then it is closed.
    #[arg(long, env = "ARMOR_IDLE_TIMEOUT", default_value_t = defaults().connection_limits.idle_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    idle_timeout: u64,
    /// Open connections allowed per client address; one more gets 503
    /// `too_many_connections` and is closed.
    #[arg(long, env = "ARMOR_MAX_CONNECTIONS_PER_IP", default_value_t = defaults().connection_limits.max_per_ip as u64,
        value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    max_connections_per_ip: u64,
    /// Serve `/metrics` on this address only (the main listener then
    /// answers 404 there), e.g. an internal interface.
    #[arg(long, env = "ARMOR_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Refused ARMOR-PSK attempts (wrong signature, unknown key) allowed
    /// per client address and key id, per second and burst; past them,
    /// 429 `rate_limited`. `off` disables it.
    #[arg(
        long,
        env = "ARMOR_AUTH_FAILURE_LIMIT",
        default_value_t = rate_text(defaults().auth_failure_limit),
        value_name = "RPS:BURST|off"
    )]
    auth_failure_limit: String,
    /// Failed password logins allowed per client address and user name,
    /// per second and burst; past them, 429 `rate_limited` without checking
    /// the password. `off` disables it.
    #[arg(
        long,
        env = "ARMOR_LOGIN_FAILURE_LIMIT",
        default_value_t = rate_text(defaults().login_failure_limit),
        value_name = "RPS:BURST|off"
    )]
    login_failure_limit: String,
    /// SMTP server for invitations and reset codes: `smtp://host:port`
    /// (plain), `smtp://user:pass@host?tls=required` (STARTTLS, port 587 by
    /// default), `smtps://user:pass@host` (TLS, port 465). Without it,
    /// messages wait for `armor admin outbox` (docs/users.md).
    #[arg(
        long,
        env = "ARMOR_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    smtp_url: Option<String>,
    /// Sender of the mail, `armor@example.com` or `Armor <armor@example.com>`.
    #[arg(long, env = "ARMOR_SMTP_FROM", default_value_t = defaults().smtp_from)]
    smtp_from: String,
}

/// The defaults of `armor serve` are [`Settings::default`]'s: written
/// once, there.
fn defaults() -> Settings {
    Settings::default()
}

fn default_redis_connections() -> u16 {
    u16::try_from(defaults().redis_connections).unwrap_or(u16::MAX)
}

/// A limit as its flag spells it: `RPS:BURST`, or `off`.
fn rate_text(rate: Option<armor_server::gateway::Rate>) -> String {
    rate.map_or_else(
        || "off".to_owned(),
        |r| format!("{}:{}", r.per_second, r.burst),
    )
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let redis_tls = redis_tls(&args)?;
    // The first administrator's password is read from the environment only,
    // never from a flag that would land in shell history.
    let admin_password = std::env::var("ARMOR_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from);
    let gateway = match args.upstream {
        Some(upstream) => Some(GatewayConfig {
            upstream,
            timeout: std::time::Duration::from_secs(args.upstream_timeout),
            public_paths: args.public_paths,
            rate_limit: args.rate_limit,
            role_rate_limits: args.role_rate_limits.into_iter().collect(),
            key_rate_limits: args.key_rate_limits.into_iter().collect(),
        }),
        None => {
            if !args.public_paths.is_empty()
                || args.rate_limit.is_some()
                || !args.role_rate_limits.is_empty()
                || !args.key_rate_limits.is_empty()
            {
                anyhow::bail!(
                    "--public-path and the rate limits apply to the gateway: give --upstream too"
                );
            }
            None
        }
    };
    let auth_failure_limit = if args.auth_failure_limit.eq_ignore_ascii_case("off") {
        None
    } else {
        Some(
            args.auth_failure_limit
                .parse()
                .map_err(|e| anyhow::anyhow!("--auth-failure-limit: {e}"))?,
        )
    };
    let login_failure_limit = if args.login_failure_limit.eq_ignore_ascii_case("off") {
        None
    } else {
        Some(
            args.login_failure_limit
                .parse()
                .map_err(|e| anyhow::anyhow!("--login-failure-limit: {e}"))?,
        )
    };
    let settings = Settings {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        master_key_file: args.master_key_file,
        max_body: args.max_body,
        require_signed_query: args.require_signed_query,
        admin_email: args.admin_email,
        admin_password,
        replay_max_entries: args.replay_max_entries,
        redis_url: args.redis_url,
        redis_mode: redis_mode(
            &args.redis_mode,
            args.redis_sentinel_master.as_deref(),
            args.redis_sentinel_master_username,
        )?,
        redis_connections: usize::from(args.redis_connections),
        redis_tls,
        gateway,
        trusted_proxies: args.trusted_proxies,
        connection_limits: armor_server::conn::Limits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
            body_timeout: std::time::Duration::from_secs(args.body_timeout),
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
            max_per_ip: usize::try_from(args.max_connections_per_ip).unwrap_or(usize::MAX),
        },
        metrics_listen: args.metrics_listen,
        auth_failure_limit,
        login_failure_limit,
        smtp_url: args.smtp_url.map(SecretString::from),
        smtp_from: args.smtp_from,
        usage_retention: armor_server::core::usage::Retention {
            minutes: args.usage_minute_retention_hours * 3600,
            hours: args.usage_hour_retention_days * 86_400,
        },
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut app = Application::build(settings, Arc::new(SystemClock)).await?;
        let addr = app.local_addr()?;
        if let Some(first) = app.take_first_start() {
            match first.generated_password {
                Some(pw) => println!(
                    "armor: created account 1 and its owner {} with the password {} (shown once: store it now)",
                    first.email,
                    pw.as_str()
                ),
                None => println!("armor: created account 1 and its owner {}", first.email),
            }
        }
        println!("armor listening on http://{addr}");
        if let Some(m) = app.metrics_addr() {
            println!("armor metrics on http://{m}/metrics");
        }
        std::io::stdout().flush()?;
        tracing::info!(%addr, keys = app.core().verifier.cached_keys(), "serving");
        app.run_until(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The files of `--redis-ca-file`, `--redis-client-cert` and
/// `--redis-client-key`, read (their contents and the URLs' scheme are
/// checked with the Redis client, `cluster::Backend`).
fn redis_tls(args: &ServeArgs) -> anyhow::Result<Option<armor_server::cluster::RedisTls>> {
    let read = |file: &std::path::Path, flag: &str| {
        std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", file.display()))
    };
    let ca = match &args.redis_ca_file {
        Some(file) => Some(read(file, "--redis-ca-file")?),
        None => None,
    };
    let client = match (&args.redis_client_cert, &args.redis_client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(armor_server::cluster::RedisClientCert {
            chain: read(cert, "--redis-client-cert")?,
            key: zeroize::Zeroizing::new(read(key, "--redis-client-key")?),
        }),
        (Some(_), None) => anyhow::bail!("--redis-client-cert needs --redis-client-key"),
        (None, Some(_)) => anyhow::bail!("--redis-client-key needs --redis-client-cert"),
    };
    if ca.is_none() && client.is_none() {
        return Ok(None);
    }
    if args.redis_url.is_none() {
        let flag = if ca.is_some() {
            "--redis-ca-file"
        } else {
            "--redis-client-cert"
        };
        anyhow::bail!("{flag} needs --redis-url");
    }
    Ok(Some(armor_server::cluster::RedisTls { ca, client }))
}

/// The Redis mode, with the primary's credentials in Sentinel mode: the
/// password only from the environment, so it lands in no shell history.
fn redis_mode(
    mode: &str,
    master: Option<&str>,
    username: Option<String>,
) -> anyhow::Result<armor_server::cluster::RedisMode> {
    use armor_server::cluster::{MasterAuth, RedisMode};
    let password = match std::env::var("ARMOR_REDIS_SENTINEL_MASTER_PASSWORD") {
        Ok(p) if p.is_empty() => None,
        Ok(p) => Some(SecretString::from(p)),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("ARMOR_REDIS_SENTINEL_MASTER_PASSWORD is not valid UTF-8")
        }
    };
    let username = username.filter(|u| !u.is_empty());
    match (RedisMode::parse(mode, master)?, password) {
        (RedisMode::Sentinel { master, .. }, Some(password)) => Ok(RedisMode::Sentinel {
            master,
            auth: Some(MasterAuth { username, password }),
        }),
        (_, Some(_)) => anyhow::bail!(
            "ARMOR_REDIS_SENTINEL_MASTER_PASSWORD applies to --redis-mode sentinel (in the other modes the password goes in --redis-url)"
        ),
        (RedisMode::Sentinel { .. }, None) if username.is_some() => anyhow::bail!(
            "--redis-sentinel-master-username needs ARMOR_REDIS_SENTINEL_MASTER_PASSWORD"
        ),
        (_, None) if username.is_some() => {
            anyhow::bail!("--redis-sentinel-master-username applies to --redis-mode sentinel")
        }
        (mode, None) => Ok(mode),
    }
}
