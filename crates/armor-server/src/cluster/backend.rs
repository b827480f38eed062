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
    ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo as _, Pipeline, RedisConnectionInfo,
    RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

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

/// TLS to Redis beyond the URLs' `rediss://` scheme, as PEM text: the
/// authorities a server's certificate is checked against instead of the
/// system's (`--redis-ca-file`), and a certificate with its key for servers
/// that ask clients for one (`--redis-client-cert`, `--redis-client-key`;
/// Redis's own `tls-auth-clients yes`).
#[derive(Clone)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    pub client: Option<RedisClientCert>,
}

/// A client certificate chain and its private key, as PEM text. The key
/// is zeroized on drop; the Redis client keeps its own copy for new
/// connections.
#[derive(Clone)]
pub struct RedisClientCert {
    pub chain: Vec<u8>,
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_pem_bytes", &self.ca.as_ref().map(Vec::len))
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Every PEM block of the CA file and of the client chain must be a
    /// certificate that parses, each holding at least one; the client key
    /// must be a private key the TLS library can sign with, and the one
    /// the chain's first certificate names.
    fn check(&self) -> Result<(), Error> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = |pem: &[u8], what: &str| {
            let chain = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Config(format!("{what} holds a bad certificate: {e}")))?;
            if chain.is_empty() {
                return Err(Error::Config(format!("{what} holds no PEM certificate")));
            }
            Ok(chain)
        };
        if let Some(ca) = &self.ca {
            certificates(ca, "the Redis CA file")?;
        }
        if let Some(client) = &self.client {
            let chain = certificates(&client.chain, "the Redis client certificate file")?;
            // The errors say what is wrong, never what the key is.
            let key = PrivateKeyDer::from_pem_slice(&client.key).map_err(|e| {
                Error::Config(format!(
                    "the Redis client key file holds no usable private key: {e}"
                ))
            })?;
            let provider = rustls::crypto::ring::default_provider();
            let signer = provider.key_provider.load_private_key(key).map_err(|e| {
                Error::Config(format!(
                    "the Redis client key cannot sign (RSA, ECDSA P-256 or P-384, Ed25519): {e}"
                ))
            })?;
            match rustls::sign::CertifiedKey::new(chain, signer).keys_match() {
                // Keys whose public half the library cannot derive are
                // taken on trust, as the library itself does.
                Ok(())
                | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(e) => {
                    return Err(Error::Config(format!(
                        "the Redis client key does not go with its certificate: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn certs(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|c| ClientTlsConfig {
                client_cert: c.chain.clone(),
                client_key: c.key.to_vec(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Whether a Redis URL asks for TLS (`rediss://`, or any scheme the
/// client reads as TLS), as the client itself reads it.
fn is_tls(url: &str) -> RedisResult<bool> {
    Ok(matches!(
        url.into_connection_info()?.addr,
        ConnectionAddr::TcpTls { .. }
    ))
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
        certs: Option<&RedisTls>,
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
        let mut tls = 0;
        for url in &list {
            tls += usize::from(is_tls(url).map_err(bad)?);
        }
        if tls != 0 && tls != list.len() {
            return Err(Error::Config(
                "the Redis URLs mix plain and TLS (rediss://) ones: use one scheme for all".into(),
            ));
        }
        let tls = tls != 0;
        if let Some(certs) = certs {
            if !tls {
                return Err(Error::Config(
                    "a Redis CA file or client certificate applies to rediss:// URLs (TLS) only"
                        .into(),
                ));
            }
            certs.check()?;
        }
        if tls {
            install_crypto_provider();
        }
        let client = |url: &str| match certs {
            Some(certs) => redis::Client::build_with_tls(url, certs.certs()),
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
                if let Some(certs) = certs {
                    builder = builder.certs(certs.certs());
                }
                let client = builder.build().map_err(bad)?;
                Backend::Cluster { client, seeds }
            }
            RedisMode::Sentinel { master, auth } => Backend::Sentinel(tokio::sync::Mutex::new(
                sentinel_client(&list, master, auth.as_ref(), tls, certs).map_err(bad)?,
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
/// `certs` (a CA file, a client certificate) apply to all of them. Each
/// sentinel's credentials are those in its URL, or with `certs` the first
/// URL's for all.
fn sentinel_client(
    list: &[&str],
    master: &str,
    auth: Option<&MasterAuth>,
    tls: bool,
    certs: Option<&RedisTls>,
) -> RedisResult<SentinelClient> {
    let Some(certs) = certs else {
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
    // The builder takes one set of sentinel credentials for all.
    let sentinel_auth = infos[0].redis.clone();
    let same = |r: &RedisConnectionInfo| {
        r.username == sentinel_auth.username && r.password == sentinel_auth.password
    };
    if !infos.iter().all(|i| same(&i.redis)) {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "with a CA file or a client certificate, every sentinel URL must carry the same user and password",
        )));
    }
    let mut builder = SentinelClientBuilder::new(
        infos.into_iter().map(|i| i.addr),
        master.to_owned(),
        SentinelServerType::Master,
    )?
    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
    .set_client_to_sentinel_certificates(certs.certs())
    .set_client_to_redis_tls_mode(TlsMode::Secure)
    .set_client_to_redis_certificates(certs.certs());
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

    /// A self-signed certificate, for the checks made before connecting.
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUQWwDWlMQIDt3fS7xcHuj8p0WILowCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPYXJtb3IgdW5pdCB0ZXN0MB4XDTI2MTIwNjE0NTAwMVoXDTM2
MTIwMzE0NTAwMVowGjEYMBYGA1UEAwwPYXJtb3IgdW5pdCB0ZXN0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE5st++q30MJnGWpB3FL2udyqAnSS0X9DJEu137cAf
GIH1CVOCbspElcRAfSqGIoJgHOakjFVeoAOa29P8B1a8B6NTMFEwHQYDVR0OBBYE
FKqPAf8rK4V1xxSYRQ6Vt7L+8eRTMB8GA1UdIwQYMBaAFKqPAf8rK4V1xxSYRQ6V
t7L+8eRTMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgPel+7HEd
X49mF1C5kFZAkpWdTG1IbK83QZ9BqOYb2cACIBSM4zCWGLT7ppadA9DnP91mpo5M
mMBbzv5lS2zOUmwp
-----END CERTIFICATE-----";

    /// A self-signed certificate and its private key, of no other use, for
    /// the client certificate checks; and a key that goes with neither.
    const CLIENT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUSjTl+QolJdQr6frYeJ4vm8zz0pAwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRYXJtb3IgdW5pdCBjbGllbnQwHhcNMjYxMjA2MTcxMDIzWhcN
MzYxMjAzMTcxMDIzWjAcMRowGAYDVQQDDBFhcm1vciB1bml0IGNsaWVudDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABMB7pJKA5xi+usaqddLi3Q/DvrLEmdi/E/Il
PRAAiKRCFiLPvpeayKLnPXB/QYioJpqosU1nesD3boT20Ya8bfWjUzBRMB0GA1Ud
DgQWBBR1BGDQB8+FKfiiIRQ+AAEVtsSllzAfBgNVHSMEGDAWgBR1BGDQB8+FKfii
IRQ+AAEVtsSllzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIEE0
YnSFQDLhTxiiayaXAqScLodWUUrQpwemy+ShYdc/AiEAhNokZJs1qJfjJx3f1dSh
ThvNuS8uii9usBvwu43wchQ=
-----END CERTIFICATE-----";
    const CLIENT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/NgQNF7yPiRsztz/
FtluLC0YAV+/fBi1KyEwS7sYhUOhRANCAATAe6SSgOcYvrrGqnXS4t0Pw76yxJnY
vxPyJT0QAIikQhYiz76Xmsii5z1wf0GIqCaaqLFNZ3rA926E9tGGvG31
-----END PRIVATE KEY-----";
    /// A P-521 key, which the TLS library cannot sign with.
    const P521_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIAQ83WguHNdAV19LkV
LA9bUOFyRslaMu7RjEQxz4tWIZEFgI/w5kGNOevMg2BiWFzLftl/vvdZJr86+aRu
HSrCxGChgYkDgYYABAG9ZCzFLCjVB1h/PnbeKmD95gjqfBmribtZbJaLCUSzEzjB
6OQGBzA2MpDWatvLRABbizwf+0VqP+5g+fbkdFNhdQE+I4w8i3msr7GtkEr9tiUa
guB3LNtJ5pvGxXjiv4isY3GKY/r7uZ9+48MG5NXRw8Z3CTanbXo9e6lWYszgTRIL
bQ==
-----END PRIVATE KEY-----";
    const STRAY_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfXqvzwDtgAniKQW8
hpY3T84E5m56ACnGmSKR4NeefGOhRANCAASeX1YHxpv7ci6RskGGqhBNFhOVeZvP
F8orpEdCeoIAq3RbYdPIR7OKFqn1ft6qx0u1wkYI/Ohs4XsAlHdWLdtG
-----END PRIVATE KEY-----";

    fn ca_file(pem: &[u8]) -> RedisTls {
        RedisTls {
            ca: Some(pem.to_vec()),
            client: None,
        }
    }

    fn client(chain: &str, key: &str) -> RedisTls {
        RedisTls {
            ca: None,
            client: Some(RedisClientCert {
                chain: chain.as_bytes().to_vec(),
                key: Zeroizing::new(key.as_bytes().to_vec()),
            }),
        }
    }

    fn sentinel() -> RedisMode {
        RedisMode::Sentinel {
            master: "main".into(),
            auth: None,
        }
    }

    fn error(urls: &str, mode: &RedisMode, certs: Option<&RedisTls>) -> String {
        match Backend::new(urls, mode, certs) {
            Ok(_) => panic!("{urls} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_is_all_or_nothing_and_a_ca_file_needs_it() {
        let ca = ca_file(PEM.as_bytes());
        assert!(is_tls("rediss://h:1").unwrap());
        assert!(is_tls("valkeys://h:1").unwrap());
        assert!(!is_tls("redis://h:1").unwrap());
        assert!(error("rediss://a:1,valkey://b:2", &RedisMode::Cluster, None).contains("mix"));
        assert!(error("redis://a:1", &RedisMode::Single, Some(&ca)).contains("rediss://"));
        for mode in [RedisMode::Single, RedisMode::Cluster, sentinel()] {
            assert!(Backend::new("rediss://127.0.0.1:1", &mode, Some(&ca)).is_ok());
            assert!(Backend::new("rediss://127.0.0.1:1", &mode, None).is_ok());
        }
        let text = ca_file(b"no certificate here");
        assert!(error("rediss://a:1", &RedisMode::Single, Some(&text)).contains("no PEM"));
    }

    #[test]
    fn a_client_certificate_needs_tls_a_chain_and_a_private_key() {
        let good = client(CLIENT_PEM, CLIENT_KEY);
        assert!(error("redis://a:1", &RedisMode::Single, Some(&good)).contains("rediss://"));
        for mode in [RedisMode::Single, RedisMode::Cluster, sentinel()] {
            assert!(Backend::new("rediss://127.0.0.1:1", &mode, Some(&good)).is_ok());
        }
        let no_chain = client("no certificate here", CLIENT_KEY);
        let e = error("rediss://a:1", &RedisMode::Single, Some(&no_chain));
        assert!(e.contains("client certificate file holds no PEM"), "{e}");
        // A certificate where the key should be: refused, and the error
        // shows nothing of the file.
        let no_key = client(CLIENT_PEM, CLIENT_PEM);
        let e = error("rediss://a:1", &RedisMode::Single, Some(&no_key));
        assert!(
            e.contains("client key file holds no usable private key"),
            "{e}"
        );
        assert!(!e.contains("MII"), "{e}");
        // A key that is not the certificate's: refused before connecting.
        let stray = client(CLIENT_PEM, STRAY_KEY);
        let e = error("rediss://a:1", &RedisMode::Single, Some(&stray));
        assert!(e.contains("does not go with its certificate"), "{e}");
        assert!(!e.contains("MIG"), "{e}");
        // A key of a kind the TLS library cannot sign with: said so.
        let p521 = client(CLIENT_PEM, P521_KEY);
        let e = error("rediss://a:1", &RedisMode::Single, Some(&p521));
        assert!(e.contains("client key cannot sign"), "{e}");
        assert!(!e.contains("MIH"), "{e}");
        let debug = format!("{good:?}");
        assert!(
            !debug.contains("MIG") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }

    #[test]
    fn sentinels_behind_one_ca_file_share_their_credentials() {
        let ca = ca_file(PEM.as_bytes());
        let mixed = "rediss://:one@127.0.0.1:1,rediss://:two@127.0.0.1:2";
        assert!(error(mixed, &sentinel(), Some(&ca)).contains("same user and password"));
        let same = "rediss://:one@127.0.0.1:1,rediss://:one@127.0.0.1:2";
        assert!(Backend::new(same, &sentinel(), Some(&ca)).is_ok());
        // Without a CA file each sentinel keeps its own.
        assert!(Backend::new(mixed, &sentinel(), None).is_ok());
    }
}
