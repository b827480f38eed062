//! Redis deployments started by the tests themselves, on free loopback
//! ports in temporary directories, stopped when dropped: a Redis Cluster
//! of 3 primaries and 3 replicas (`redis-cli --cluster create`), and a
//! Sentinel set-up of 1 primary, 1 replica and 3 sentinels. Failures are
//! detected fast (node timeout and down-after of one second) so a
//! failover takes a few seconds.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster bus port (+ 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p <= 55_535 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn server_bin() -> String {
    std::env::var("ARMOR_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// `redis-cli -p port args...`: its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_tls(None, port, args)
}

/// [`cli`], over TLS checked against `ca` when given.
pub fn cli_tls(ca: Option<&Path>, port: u16, args: &[&str]) -> String {
    let tls = ca.map_or(Vec::new(), cli_tls_args);
    let out: Output = Command::new("redis-cli")
        .args(tls)
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli (scripts/test installs redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `redis-cli`'s TLS flags: the servers checked against `ca`, and the
/// servers' own certificate (next to it, for client use too) presented to
/// servers that ask for one.
fn cli_tls_args(ca: &Path) -> Vec<String> {
    let file = |name: &str| ca.with_file_name(name).display().to_string();
    vec![
        "--tls".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--cert".into(),
        file("server.pem"),
        "--key".into(),
        file("server.key"),
    ]
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `redis-server` process (a node or a sentinel).
pub struct Server {
    pub port: u16,
    child: Option<Child>,
}

impl Server {
    /// `redis-server args...` in `dir`, once `port` takes connections.
    pub fn spawn(dir: &Path, port: u16, args: &[String]) -> Server {
        let child = Command::new(server_bin())
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        wait_until("redis-server start", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Server {
            port,
            child: Some(child),
        }
    }

    /// `kill -9`: the process ends at once, with whatever it had not
    /// replicated yet.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Redis node's arguments: loopback, no persistence, no eviction, then
/// `extra` (later arguments win).
pub fn node_args(port: u16, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
        "--enable-debug-command",
        "local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend_from_slice(extra);
    a
}

/// How a TLS-only test server treats its clients' certificates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// Asks for none.
    Anonymous,
    /// Asks every client for one that `ca.pem` signed (the servers
    /// present their own to each other).
    Certified,
}

/// The settings of a TLS-only server with the certificate in `tls`
/// (`server.pem`, `server.key`, signed by `ca.pem`), replication over TLS
/// too: as `redis-server` arguments with [`tls_args`], as configuration
/// lines for a sentinel.
pub fn tls_conf(tls: &Path, clients: Clients) -> Vec<(&'static str, String)> {
    let file = |name: &str| tls.join(name).display().to_string();
    let ask = if clients == Clients::Certified {
        "yes"
    } else {
        "no"
    };
    vec![
        ("tls-cert-file", file("server.pem")),
        ("tls-key-file", file("server.key")),
        ("tls-ca-cert-file", file("ca.pem")),
        ("tls-auth-clients", ask.into()),
        ("tls-replication", "yes".into()),
    ]
}

/// [`tls_conf`] as arguments, the plain port off and `port` the TLS one.
pub fn tls_args(port: u16, tls: &Path, clients: Clients) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
    ];
    for (k, v) in tls_conf(tls, clients) {
        a.extend([format!("--{k}"), v]);
    }
    a
}

/// A Redis Cluster: 3 primaries, 3 replicas.
pub struct RedisCluster {
    pub nodes: Vec<Server>,
    /// With TLS: the authority the nodes' certificate is checked against.
    ca: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with(None)
    }

    /// Every node speaking TLS only (the cluster bus and replication
    /// included), with the certificate in `tls` (`server.pem`,
    /// `server.key`, signed by `ca.pem`), treating clients as `clients`.
    pub fn start_tls(tls: &Path, clients: Clients) -> RedisCluster {
        Self::start_with(Some((tls, clients)))
    }

    fn start_with(tls: Option<(&Path, Clients)>) -> RedisCluster {
        let (tls, clients) = (tls.map(|t| t.0), tls.map_or(Clients::Anonymous, |t| t.1));
        let ca = tls.map(|t| t.join("ca.pem"));
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = cluster_port();
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir(&d).unwrap();
            let extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
                "--dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([d.to_string_lossy().into_owned()])
            .collect();
            let mut args = node_args(port, &extra);
            if let Some(tls) = tls {
                args.extend(tls_args(port, tls, clients));
                args.extend(["--tls-cluster".into(), "yes".into()]);
            }
            nodes.push(Server::spawn(&d, port, &args));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let tls_cli: Vec<String> = ca.as_deref().map_or(Vec::new(), cli_tls_args);
        // `--cluster create` waits for the nodes to meet, without a limit.
        let out = Command::new("timeout")
            .args(["60", "redis-cli"])
            .args(&tls_cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster {
            nodes,
            ca,
            _dir: dir,
        };
        c.wait_ok();
        c
    }

    /// Until every live node says the cluster is ok and knows 3 primaries
    /// with a replica each.
    pub fn wait_ok(&self) {
        wait_until("cluster_state:ok", Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                self.cli(n.port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
                    && self
                        .cli(n.port, &["CLUSTER", "NODES"])
                        .lines()
                        .filter(|l| l.contains("master") && !l.contains("fail"))
                        .count()
                        == 3
            })
        });
    }

    /// [`cli`] on a node, over TLS when the cluster speaks it.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_tls(self.ca.as_deref(), port, args)
    }

    /// The seed nodes, as `ARMOR_REDIS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
                format!("{scheme}://127.0.0.1:{}", n.port)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the live primary serving `key`.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        self.primary_of_slot(slot)
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        self.cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap()
    }

    /// The slot ranges node `i` serves.
    pub fn ranges_of(&self, i: usize) -> Vec<(u16, u16)> {
        let me = self.cli(self.nodes[i].port, &["CLUSTER", "MYID"]);
        let nodes = self.cli(self.nodes[i].port, &["CLUSTER", "NODES"]);
        let line = nodes.lines().find(|l| l.starts_with(&me)).unwrap();
        line.split(' ')
            .skip(8)
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (r.parse().unwrap(), r.parse().unwrap()),
            })
            .collect()
    }

    pub fn primary_of_slot(&self, slot: u16) -> usize {
        let live = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        for line in self.cli(live.port, &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap();
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) if !r.starts_with('[') => {
                    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&slot)
                }
                None if !r.starts_with('[') => r.parse::<u16>().ok() == Some(slot),
                _ => false,
            });
            if serves {
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("no primary serves slot {slot}");
    }
}

/// A Sentinel set-up: one primary, one replica, three sentinels; the
/// primary's name is [`RedisSentinel::MASTER`].
pub struct RedisSentinel {
    pub primary: Server,
    pub replica: Server,
    pub sentinels: Vec<Server>,
    /// `rediss` with TLS, else `redis`.
    scheme: &'static str,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub const MASTER: &'static str = "armor";

    pub fn start() -> RedisSentinel {
        Self::start_with_password(None)
    }

    /// With `password` on the primary and the replica (the sentinels have
    /// none).
    pub fn start_with_password(password: Option<&str>) -> RedisSentinel {
        Self::start_with(password, None)
    }

    /// Every server speaking TLS only (replication and the sentinels'
    /// own connections included), with the certificate in `tls`
    /// (`server.pem`, `server.key`, signed by `ca.pem`), treating clients
    /// as `clients`.
    pub fn start_tls(tls: &Path, clients: Clients) -> RedisSentinel {
        Self::start_with(None, Some((tls, clients)))
    }

    fn start_with(password: Option<&str>, tls: Option<(&Path, Clients)>) -> RedisSentinel {
        let (tls, clients) = (tls.map(|t| t.0), tls.map_or(Clients::Anonymous, |t| t.1));
        let dir = tempfile::tempdir().unwrap();
        let pp = free_port();
        let rp = free_port();
        let pd = dir.path().join("primary");
        let rd = dir.path().join("replica");
        std::fs::create_dir(&pd).unwrap();
        std::fs::create_dir(&rd).unwrap();
        let mut auth: Vec<String> = password
            .map(|p| {
                ["--requirepass", p, "--masterauth", p]
                    .map(String::from)
                    .to_vec()
            })
            .unwrap_or_default();
        let ca = tls.map(|t| t.join("ca.pem"));
        // TLS only: each server's port is its TLS port, the plain one off.
        let node = |port: u16, extra: &[String]| -> Vec<String> {
            let mut a = node_args(port, extra);
            if let Some(tls) = tls {
                a.extend(tls_args(port, tls, clients));
            }
            a
        };
        let primary = Server::spawn(&pd, pp, &node(pp, &auth));
        auth.extend(["--replicaof".into(), format!("127.0.0.1 {pp}")]);
        let replica = Server::spawn(&rd, rp, &node(rp, &auth));
        let login: Vec<&str> = password.map_or(vec![], |p| vec!["-a", p, "--no-auth-warning"]);
        wait_until("replica in sync", Duration::from_secs(20), || {
            let info = [login.as_slice(), &["INFO", "replication"]].concat();
            cli_tls(ca.as_deref(), rp, &info).contains("master_link_status:up")
        });
        let sentinel_tls: String = tls
            .map(|t| tls_conf(t, clients))
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect();
        let auth_pass = password.map_or(String::new(), |p| {
            format!("sentinel auth-pass {} {p}\n", Self::MASTER)
        });
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let d = dir.path().join(format!("s{i}"));
            std::fs::create_dir(&d).unwrap();
            let conf = d.join("sentinel.conf");
            let listen = if tls.is_some() {
                format!("port 0\ntls-port {port}\n{sentinel_tls}")
            } else {
                format!("port {port}\n")
            };
            std::fs::write(
                &conf,
                format!(
                    "{listen}bind 127.0.0.1\ndir {}\n\
                     sentinel monitor {m} 127.0.0.1 {pp} 2\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 4000\n\
                     sentinel parallel-syncs {m} 1\n{auth_pass}",
                    d.display(),
                    m = Self::MASTER
                ),
            )
            .unwrap();
            sentinels.push(Server::spawn(
                &d,
                port,
                &[conf.to_string_lossy().into_owned(), "--sentinel".into()],
            ));
        }
        let s = RedisSentinel {
            primary,
            replica,
            sentinels,
            scheme: if tls.is_some() { "rediss" } else { "redis" },
            _dir: dir,
        };
        // Each sentinel knows the replica and the two other sentinels
        // (needed to agree on a failover).
        for sp in s.sentinels.iter().map(|x| x.port) {
            wait_until("sentinels ready", Duration::from_secs(30), || {
                let info = cli_tls(ca.as_deref(), sp, &["INFO", "sentinel"]);
                info.contains("slaves=1") && info.contains("sentinels=3")
            });
        }
        s
    }

    /// `armor serve`'s flags for this set-up.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = [
            "--redis-mode",
            "sentinel",
            "--redis-sentinel-master",
            Self::MASTER,
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--redis-url".into(), self.url()]);
        args
    }

    /// The sentinels, as `ARMOR_REDIS_URL` takes them.
    pub fn url(&self) -> String {
        self.sentinels
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", self.scheme, n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}
