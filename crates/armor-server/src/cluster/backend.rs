//! The three ways to reach Redis (`ARMOR_REDIS_MODE`): one server, a Redis
//! Cluster, or a primary found through Sentinel. Each gives connections
//! that the rest of [`crate::cluster`] uses the same way.

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, IntoConnectionInfo as _, Pipeline, RedisConnectionInfo, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::ROUND_TRIP;
use crate::error::Error;

/// How the Redis URL is read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// One server (`redis://host:port[/db]`).
    #[default]
    Single,
    /// A Redis Cluster: comma-separated seed nodes.
    Cluster,
    /// Comma-separated sentinels watching the primary with this name,
    /// reached with `auth` when it needs a password (the sentinels' own,
    /// if any, is in their URLs).
    Sentinel {
        master: String,
        auth: Option<MasterAuth>,
    },
}

/// The credentials of a primary found through Sentinel (its replicas
/// share them). Never shown: `Debug` redacts the password.
#[derive(Clone)]
pub struct MasterAuth {
    pub username: Option<String>,
    pub password: SecretString,
}

impl std::fmt::Debug for MasterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl PartialEq for MasterAuth {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

impl Eq for MasterAuth {}

impl RedisMode {
    /// From `single`, `cluster` or `sentinel` (which needs the primary's
    /// name).
    pub fn parse(mode: &str, master: Option<&str>) -> Result<RedisMode, Error> {
        match (mode, master) {
            ("single", _) => Ok(RedisMode::Single),
            ("cluster", _) => Ok(RedisMode::Cluster),
            ("sentinel", Some(m)) if !m.is_empty() => Ok(RedisMode::Sentinel {
                master: m.into(),
                auth: None,
            }),
            ("sentinel", _) => Err(Error::Config(
                "sentinel mode needs the primary's name (ARMOR_REDIS_SENTINEL_MASTER)".into(),
            )),
            (other, _) => Err(Error::Config(format!(
                "unknown Redis mode {other:?} (single, cluster or sentinel)"
            ))),
        }
    }

    /// Hash-tag buckets the claims are spread over: one store, or
    /// enough buckets to spread a cluster's slots.
    pub(super) fn buckets(&self) -> u16 {
        match self {
            RedisMode::Cluster => CLUSTER_BUCKETS,
            _ => 1,
        }
    }
}

/// Buckets of a cluster: each a hash tag, so one slot; enough for a few
/// dozen shards.
pub const CLUSTER_BUCKETS: u16 = 64;

pub(super) enum Backend {
    Single(redis::Client),
    Cluster {
        client: redis::cluster::ClusterClient,
        seeds: Vec<redis::Client>,
    },
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The certificate authorities a `rediss://` server's certificate is
/// checked against, when not the system's (`--redis-ca-file`): PEM text.
#[derive(Clone)]
pub struct RedisCa(pub Vec<u8>);

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisCa({} bytes of PEM)", self.0.len())
    }
}

impl RedisCa {
    fn certs(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: Some(self.0.clone()),
        }
    }
}

/// Whether a Redis URL asks for TLS.
fn is_tls(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
}

/// The rustls crypto provider Redis's TLS connections use, installed once
/// for the process (a no-op when one already is).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Backend {
    pub(super) fn new(
        urls: &str,
        mode: &RedisMode,
        ca: Option<&RedisCa>,
    ) -> Result<Backend, Error> {
        let bad = |e: redis::RedisError| Error::Config(format!("bad Redis URL: {e}"));
        let list: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if list.is_empty() {
            return Err(Error::Config("empty Redis URL".into()));
        }
        let tls = list.iter().filter(|u| is_tls(u)).count();
        if tls != 0 && tls != list.len() {
            return Err(Error::Config(
                "the Redis URLs mix redis:// and rediss://: use one scheme for all".into(),
            ));
        }
        let tls = tls != 0;
        if ca.is_some() && !tls {
            return Err(Error::Config(
                "a Redis CA file applies to rediss:// URLs (TLS) only".into(),
            ));
        }
        if tls {
            install_crypto_provider();
        }
        let client = |url: &str| match ca {
            Some(ca) => redis::Client::build_with_tls(url, ca.certs()),
            None => redis::Client::open(url),
        };
        Ok(match mode {
            RedisMode::Single => {
                if list.len() > 1 {
                    return Err(Error::Config(
                        "several Redis URLs need ARMOR_REDIS_MODE=cluster or sentinel".into(),
                    ));
                }
                Backend::Single(client(list[0]).map_err(bad)?)
            }
            RedisMode::Cluster => {
                let seeds = list
                    .iter()
                    .map(|u| client(u))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                let mut builder = redis::cluster::ClusterClient::builder(list.clone())
                    .connection_timeout(ROUND_TRIP * 2)
                    .response_timeout(ROUND_TRIP)
                    .retries(2);
                if tls {
                    builder = builder.tls(TlsMode::Secure);
                }
                if let Some(ca) = ca {
                    builder = builder.certs(ca.certs());
                }
                let client = builder.build().map_err(bad)?;
                Backend::Cluster { client, seeds }
            }
            RedisMode::Sentinel { master, auth } => Backend::Sentinel(tokio::sync::Mutex::new(
                sentinel_client(&list, master, auth.as_ref(), tls, ca).map_err(bad)?,
            )),
        })
    }

    /// A new connection (for a pool slot).
    pub(super) async fn connect(&self) -> RedisResult<Conn> {
        match self {
            Backend::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(ROUND_TRIP)
                    .set_response_timeout(ROUND_TRIP)
                    .set_number_of_retries(1)
                    .set_factor(50)
                    .set_max_delay(500);
                Ok(Conn::Manager(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
            Backend::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
            Backend::Sentinel(_) => {
                let client = self.client(0).await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(ROUND_TRIP)
                    .set_response_timeout(ROUND_TRIP);
                Ok(Conn::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        }
    }

    /// A client for one server that hears every published message: the
    /// server, a cluster node (each node hears the whole cluster's
    /// messages; `attempt` picks the seed), or the current primary.
    pub(super) async fn client(&self, attempt: usize) -> RedisResult<redis::Client> {
        match self {
            Backend::Single(client) => Ok(client.clone()),
            Backend::Cluster { seeds, .. } => Ok(seeds[attempt % seeds.len()].clone()),
            Backend::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }

    /// Whether a connection that failed must be made again by the pool
    /// (the others reconnect on their own).
    pub(super) fn reconnects_itself(&self) -> bool {
        !matches!(self, Backend::Sentinel(_))
    }
}

/// A client of the primary the sentinels name. With TLS (`rediss://`
/// sentinels), the primary and its replicas are reached with TLS too, and
/// both are checked against `ca` when given. Each sentinel's credentials
/// are those in its URL, or with a CA file the first URL's for all.
fn sentinel_client(
    list: &[&str],
    master: &str,
    auth: Option<&MasterAuth>,
    tls: bool,
    ca: Option<&RedisCa>,
) -> RedisResult<SentinelClient> {
    let Some(ca) = ca else {
        let node = (tls || auth.is_some()).then(|| SentinelNodeConnectionInfo {
            tls_mode: tls.then_some(TlsMode::Secure),
            redis_connection_info: auth.map(|a| RedisConnectionInfo {
                username: a.username.clone(),
                password: Some(a.password.expose_secret().to_owned()),
                ..Default::default()
            }),
        });
        return SentinelClient::build(
            list.to_vec(),
            master.to_owned(),
            node,
            SentinelServerType::Master,
        );
    };
    let infos = list
        .iter()
        .map(|u| u.into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let sentinel_auth = infos[0].redis.clone();
    let mut builder = SentinelClientBuilder::new(
        infos.into_iter().map(|i| i.addr),
        master.to_owned(),
        SentinelServerType::Master,
    )?
    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
    .set_client_to_sentinel_certificates(ca.certs())
    .set_client_to_redis_tls_mode(TlsMode::Secure)
    .set_client_to_redis_certificates(ca.certs());
    if let Some(user) = sentinel_auth.username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = sentinel_auth.password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(a) = auth {
        if let Some(user) = &a.username {
            builder = builder.set_client_to_redis_username(user.clone());
        }
        builder = builder.set_client_to_redis_password(a.password.expose_secret().to_owned());
    }
    builder.build()
}

/// A pooled connection, of whichever kind the mode uses.
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_read_and_sentinel_needs_a_name() {
        assert_eq!(RedisMode::parse("single", None).unwrap(), RedisMode::Single);
        assert_eq!(
            RedisMode::parse("cluster", None).unwrap(),
            RedisMode::Cluster
        );
        assert_eq!(
            RedisMode::parse("sentinel", Some("main")).unwrap(),
            RedisMode::Sentinel {
                master: "main".into(),
                auth: None,
            }
        );
        assert!(RedisMode::parse("sentinel", None).is_err());
        assert!(RedisMode::parse("ring", None).is_err());
        assert!(Backend::new("redis://a:1,redis://b:2", &RedisMode::Single, None).is_err());
    }
}
