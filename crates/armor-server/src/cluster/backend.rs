//! The three ways to reach Redis (`ARMOR_REDIS_MODE`): one server, a Redis
//! Cluster, or a primary found through Sentinel. Each gives connections
//! that the rest of [`crate::cluster`] uses the same way.

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, Pipeline, RedisConnectionInfo, RedisFuture, RedisResult, Value};
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

impl Backend {
    pub(super) fn new(urls: &str, mode: &RedisMode) -> Result<Backend, Error> {
        let bad = |e: redis::RedisError| Error::Config(format!("bad Redis URL: {e}"));
        let list: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if list.is_empty() {
            return Err(Error::Config("empty Redis URL".into()));
        }
        Ok(match mode {
            RedisMode::Single => {
                if list.len() > 1 {
                    return Err(Error::Config(
                        "several Redis URLs need ARMOR_REDIS_MODE=cluster or sentinel".into(),
                    ));
                }
                Backend::Single(redis::Client::open(list[0]).map_err(bad)?)
            }
            RedisMode::Cluster => {
                let seeds = list
                    .iter()
                    .map(|u| redis::Client::open(*u))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                let client = redis::cluster::ClusterClient::builder(list.clone())
                    .connection_timeout(ROUND_TRIP * 2)
                    .response_timeout(ROUND_TRIP)
                    .retries(2)
                    .build()
                    .map_err(bad)?;
                Backend::Cluster { client, seeds }
            }
            RedisMode::Sentinel { master, auth } => {
                let node = auth.as_ref().map(|a| SentinelNodeConnectionInfo {
                    tls_mode: None,
                    redis_connection_info: Some(RedisConnectionInfo {
                        username: a.username.clone(),
                        password: Some(a.password.expose_secret().to_owned()),
                        ..Default::default()
                    }),
                });
                Backend::Sentinel(tokio::sync::Mutex::new(
                    SentinelClient::build(list, master.clone(), node, SentinelServerType::Master)
                        .map_err(bad)?,
                ))
            }
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
        assert!(Backend::new("redis://a:1,redis://b:2", &RedisMode::Single).is_err());
    }
}
