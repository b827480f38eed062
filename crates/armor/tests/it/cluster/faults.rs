//! Faults of the stores under a running node (the reliability battery): Redis paused with
//! `DEBUG SLEEP`, and a private PostgreSQL stopped and restarted. Every
//! answer during a fault must fail closed (503, never 200 unchecked and
//! never 500), service must resume on its own within 5 s, and a request
//! accepted before the fault must stay refused after it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{cluster_on, fh, fresh_auth, node_args, signed, until_status, Redis, NEW_KEY_SEEN};
use crate::api::{spawn_app_with, TestApp};

/// How long service may take to come back once a store is back.
const RESUME: Duration = Duration::from_secs(5);

/// Whether Redis answers a PING within `wait` (false while it sleeps).
fn redis_answers(port: u16, wait: Duration) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(wait)).unwrap();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[tokio::test]
async fn redis_paused_fails_closed_and_service_resumes() {
    let c = cluster_on(Redis::start_debuggable()).await;
    let token = c.a.login().await;
    let key = c.a.create_key(&token, 1, "paused").await;
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;
    let before = fresh_auth(&key);
    assert_eq!(signed(&c.a, &before).await.0, 200);

    let pause = Duration::from_secs(3);
    let spawned = Instant::now();
    let mut sleeper = Command::new("redis-cli")
        .args(["-p", &c.redis.port.to_string(), "DEBUG", "SLEEP", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli (scripts/test installs redis-server)");
    // Wait until Redis is seen asleep: every request sent from then on and
    // answered before `spawned + pause` met a sleeping Redis.
    let port = c.redis.port;
    let asleep = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !redis_answers(port, Duration::from_millis(100)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(asleep, "Redis never stopped answering after DEBUG SLEEP");

    let mut during = 0;
    let mut slowest = Duration::ZERO;
    let mut n = 0usize;
    while spawned.elapsed() < pause {
        n += 1;
        let node = if n.is_multiple_of(2) { &c.a } else { &c.b };
        // Fresh requests and the replay of one accepted before the pause.
        let auth = if n.is_multiple_of(3) {
            before.clone()
        } else {
            fresh_auth(&key)
        };
        let sent = Instant::now();
        let (s, v) = signed(node, &auth).await;
        let took = sent.elapsed();
        if spawned.elapsed() < pause {
            // Answered while Redis certainly slept.
            assert_eq!(
                (s, v["error"].as_str()),
                (503, Some("replay_store_unavailable")),
                "request {n} during the pause: {v}"
            );
            during += 1;
            slowest = slowest.max(took);
        } else {
            // Straddled the end of the pause: anything but a 500, and the
            // old request never accepted.
            assert!(s == 200 || s == 503 || s == 401, "{s} {v}");
            if auth == before {
                assert_ne!(s, 200, "a replay was accepted at the end of the pause");
            }
        }
    }
    assert!(
        during >= 4,
        "only {during} requests answered during the pause"
    );

    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = sleeper.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "redis-cli DEBUG SLEEP never returned"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "redis-cli DEBUG SLEEP failed");
    let mut resumed = Vec::new();
    for node in [&c.a, &c.b] {
        resumed.push(until_status(node, &key, 200, RESUME).await);
    }
    for node in [&c.a, &c.b] {
        let (s, v) = signed(node, &before).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("nonce_reused")),
            "a request accepted before the pause was replayed: {v}"
        );
    }
    eprintln!(
        "Redis paused 3 s: {during} requests answered 503 replay_store_unavailable \
         during it (slowest {slowest:?}); resumed after {resumed:?}"
    );
}

/// A private PostgreSQL in a temporary directory, which the test may stop
/// and start again (the shared one of scripts/with-pg-redis is used by
/// other tests running in parallel).
struct Postgres {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    /// None when no PostgreSQL server is installed (outside CI).
    fn start() -> Option<Postgres> {
        let bin = std::env::var_os("ARMOR_TEST_PG_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|d| d.join("initdb").is_file())
                    .collect();
                dirs.sort_by_key(|d| {
                    d.parent()
                        .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                });
                dirs.pop()
            });
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").is_err(),
                "no PostgreSQL server under /usr/lib/postgresql (scripts/test installs it)"
            );
            eprintln!("PostgreSQL fault test skipped: no PostgreSQL server installed");
            return None;
        };
        // PostgreSQL refuses to run as root: as root, run it as "postgres"
        // (scripts/with-pg-redis creates that user).
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            port,
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
            assert!(ok(Command::new("chmod").arg("755").arg(pg.dir.path())));
            assert!(ok(Command::new("chown")
                .arg("postgres:")
                .arg(pg.dir.path())));
        }
        pg.run(
            "initdb",
            &["-U", "armor", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        pg.up();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://armor@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Runs one of PostgreSQL's programs on the data directory.
    fn run(&self, prog: &str, args: &[&str]) {
        let prog = self.bin.join(prog);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&prog);
            c
        } else {
            Command::new(&prog)
        };
        let out = cmd
            .args(["-D", &self.data()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            prog.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port
        );
        let log = format!("{dir}/server.log");
        self.run(
            "pg_ctl",
            &["-l", &log, "-w", "-t", "60", "-o", &opts, "start"],
        );
    }

    /// A fast shutdown: connected clients are told and disconnected.
    fn down(&self) {
        self.run("pg_ctl", &["-m", "fast", "-w", "-t", "60", "stop"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let prog = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&prog);
            c
        } else {
            Command::new(&prog)
        };
        let _ = cmd
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `(status, error code)` of a request, and how long it took.
async fn answer(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, String, Duration) {
    let mut headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let mut body = Vec::new();
    if method == "POST" {
        body = br#"{"username":"nobody@example.com","password":"x"}"#.to_vec();
        headers.push(("Content-Type", "application/json"));
    }
    let start = Instant::now();
    let (s, _, v) = app.send(method, path, &headers, body).await;
    (
        s,
        v["error"].as_str().unwrap_or_default().to_owned(),
        start.elapsed(),
    )
}

#[tokio::test]
async fn postgres_stopped_fails_closed_and_service_resumes() {
    let Some(pg) = tokio::task::spawn_blocking(Postgres::start).await.unwrap() else {
        return;
    };
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let master = keys.path().join("master.key");
    let args = node_args(&pg.url(), &master, &redis.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(&args).await;

    let token = app.login().await;
    let key = app.create_key(&token, 1, "pg-outage").await;
    // A new Redis: requests signed in the node's first second are refused.
    until_status(&app, &key, 200, NEW_KEY_SEEN).await;
    let before = fresh_auth(&key);
    assert_eq!(signed(&app, &before).await.0, 200);
    assert_eq!(answer(&app, "GET", "/health", None).await.0, 200);

    let pg = tokio::task::spawn_blocking(move || {
        pg.down();
        pg
    })
    .await
    .unwrap();

    let fresh = fresh_auth(&key);
    let token_auth = fh(&token);
    let checks: [(&str, &str, &str, Option<&str>); 5] = [
        ("health", "GET", "/health", None),
        ("FH-AUTH /me", "GET", "/me", Some(&token_auth)),
        ("ARMOR-PSK /me, fresh", "GET", "/me", Some(&fresh)),
        ("ARMOR-PSK /me, replay", "GET", "/me", Some(&before)),
        ("password login", "POST", "/auth/authorize", None),
    ];
    let mut seen = Vec::new();
    for (what, method, path, auth) in checks {
        let (s, code, took) = answer(&app, method, path, auth).await;
        seen.push(format!("{what}: {s} {code} in {took:?}"));
        if what == "ARMOR-PSK /me, replay" {
            // Refused either way: the replay guard (Redis is up) or the store.
            assert!(
                (s, code.as_str()) == (401, "nonce_reused")
                    || (s, code.as_str()) == (503, "store_unavailable"),
                "{what} while PostgreSQL is down: {s} {code}"
            );
        } else {
            assert_eq!(
                (s, code.as_str()),
                (503, "store_unavailable"),
                "{what} while PostgreSQL is down"
            );
        }
    }

    let pg = tokio::task::spawn_blocking(move || {
        pg.up();
        pg
    })
    .await
    .unwrap();
    let resumed = until_status(&app, &key, 200, RESUME).await;
    let (s, code, _) = answer(&app, "GET", "/me", Some(&token_auth)).await;
    assert_eq!(s, 200, "FH-AUTH after the restart: {code}");
    assert_eq!(answer(&app, "GET", "/health", None).await.0, 200);
    for auth in [&before, &fresh] {
        let (s, v) = signed(&app, auth).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("nonce_reused")),
            "a request sent before the restart was accepted after it: {v}"
        );
    }
    eprintln!(
        "PostgreSQL stopped: {}; service resumed {resumed:?} after the restart",
        seen.join("; ")
    );
    drop(app);
    drop(pg);
}
