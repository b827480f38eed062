//! Black-box tests of `armor serve`: every test starts the real binary on
//! port 0 with a temporary data directory through [`spawn_app`].

mod auth;
mod battery;
mod codes;
pub(crate) mod connections;
mod durability;
mod key_rules;
mod keys;
mod login_limits;
pub mod pg;
mod psk;
mod routes;
mod smtp;
mod throttle;
mod tokens;
mod trace;
mod usage;
mod users;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use armor_psk::{SecretKey, SignableRequest, SigningKey};
use serde_json::{json, Value};

pub const ADMIN_EMAIL: &str = "owner@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running server and everything needed to talk to it.
pub struct TestApp {
    pub url: String,
    pub data: tempfile::TempDir,
    logs: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    extra_args: Vec<String>,
    /// Environment variables the server is started with.
    extra_env: Vec<(String, String)>,
    /// `RUST_LOG` of the server: `trace` unless a test says otherwise.
    log_level: &'static str,
    /// `--database-url` and `--redis-url` when the suite runs on PostgreSQL
    /// and Redis (see [`pg::backend_args`]).
    backend_args: Vec<String>,
    pub http: reqwest::Client,
    /// Every secret, token, password and code this test made or used:
    /// none may appear in the server's logs, its data directory or the
    /// test artifacts ([`TestApp::assert_no_secrets_leaked`], run on drop).
    secrets: std::sync::Mutex<Vec<String>>,
}

/// An API key as the creation response gave it.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    /// The key an answer that created it (or rolled to it) shows.
    pub fn from_answer(v: &Value) -> Key {
        Key {
            id: v["id"].as_str().unwrap().to_owned(),
            secret: v["apiKey"].as_str().unwrap().to_owned(),
        }
    }
}

pub fn armor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_armor")
}

/// Starts `armor serve` on 127.0.0.1:0 with a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], the server logging at `level` (`RUST_LOG`).
pub async fn spawn_app_logging(level: &'static str) -> TestApp {
    let mut app = spawn_app_with(&[]).await;
    app.stop(true);
    app.log_level = level;
    app.start();
    app
}

pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let mut app = TestApp {
        url: String::new(),
        data: tempfile::tempdir().unwrap(),
        logs: tempfile::tempdir().unwrap(),
        child: None,
        starts: 0,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        extra_env: Vec::new(),
        log_level: "trace",
        backend_args: pg::backend_args().await,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .no_proxy()
            .build()
            .unwrap(),
        secrets: std::sync::Mutex::new(vec![ADMIN_PASSWORD.to_owned()]),
    };
    app.start();
    app
}

impl TestApp {
    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        // A test may listen elsewhere (`--listen [::1]:0`).
        let listen: &[&str] = if self.extra_args.iter().any(|a| a == "--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(armor_bin())
            .arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.backend_args)
            .args(&self.extra_args)
            .env("ARMOR_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ARMOR_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", self.log_level)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env_remove("ARMOR_DATABASE_URL")
            .env_remove("ARMOR_MASTER_KEY_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("armor listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        self.url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start; log:\n{}", self.logs_text()));
        self.child = Some(child);
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.logs.path().join(format!("serve-{n}.log"))
    }

    /// Everything the server wrote to stderr, all starts.
    pub fn logs_text(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    /// What the server wrote to stderr since its last start.
    pub fn last_logs_text(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// SIGTERM, wait, start again on the same data directory.
    pub fn restart(&mut self) {
        self.stop(false);
        self.start();
    }

    /// SIGTERM, wait, start again on the same data directory with one
    /// more environment variable.
    pub fn restart_with_env(&mut self, name: &str, value: &str) {
        self.restart_with_envs(&[(name, value)]);
    }

    /// [`TestApp::restart_with_env`] with several variables at once.
    pub fn restart_with_envs(&mut self, vars: &[(&str, &str)]) {
        for (name, value) in vars {
            self.extra_env.push((name.to_string(), value.to_string()));
        }
        self.restart();
    }

    /// SIGTERM, without waiting for the server to stop.
    pub fn signal_stop(&self) {
        assert!(self.signal("-TERM"), "the server is not running");
    }

    /// Sends `sig` to the server; whether it was delivered.
    fn signal(&self, sig: &str) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
        status.is_ok_and(|s| s.success())
    }

    /// Whether the server process has exited within `within`.
    pub fn exited_within(&mut self, within: Duration) -> bool {
        let child = self.child.as_mut().expect("the server was started");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// kill -9, then start again on the same data directory.
    pub fn crash_and_restart(&mut self) {
        self.stop(true);
        self.start();
    }

    fn stop(&mut self, hard: bool) {
        if self.child.is_none() {
            return;
        }
        self.signal(if hard { "-KILL" } else { "-TERM" });
        if !self.exited_within(Duration::from_secs(20)) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Runs `armor admin ...` on this server's data directory.
    pub fn admin(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(armor_bin())
            .arg("admin")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(pg::database_args(&self.backend_args))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "armor admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Creates a user through `armor admin add-user`; returns the id.
    pub fn add_user(&self, email: &str, role: &str, account: i64) -> i64 {
        self.admin(
            &[
                "add-user",
                "--email",
                email,
                "--role",
                role,
                "--account",
                &account.to_string(),
            ],
            &[("ARMOR_NEW_USER_PASSWORD", ADMIN_PASSWORD)],
        )
        .parse()
        .unwrap()
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// kill -9 without a restart.
    pub fn crash(&mut self) {
        self.stop(true);
    }

    /// Starts the server again after [`TestApp::crash`].
    pub fn start_again(&mut self) {
        self.start();
    }

    /// The `--database-url` of the PostgreSQL run, if any.
    pub fn database_url(&self) -> Option<String> {
        pg::database_args(&self.backend_args).get(1).cloned()
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub async fn post_json(&self, path: &str, body: Value, auth: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Password login: authorize then token. Returns the access token.
    pub async fn login_as(&self, email: &str, password: &str) -> String {
        let (s, body) = self
            .post_json(
                "/auth/authorize",
                json!({"username": email, "password": password}),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["expiresIn"], 120);
        let (s, tok) = self
            .post_json(
                "/auth/token",
                json!({"code": body["code"], "grant_type": "authorization_code"}),
                None,
            )
            .await;
        assert_eq!(s, 200, "{tok}");
        assert_eq!(tok["token_type"], "FH-AUTH");
        self.remember_secret(body["code"].as_str().unwrap_or_default());
        let token = tok["access_token"].as_str().unwrap().to_owned();
        self.remember_secret(&token);
        token
    }

    pub async fn login(&self) -> String {
        self.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Creates a key for `user` with an FH-AUTH token.
    pub async fn create_key(&self, token: &str, user: i64, name: &str) -> Key {
        self.create_key_with(token, user, json!({"name": name}))
            .await
    }

    /// A key of `user` created with `fields` (the request body).
    pub async fn create_key_with(&self, token: &str, user: i64, fields: Value) -> Key {
        let (s, body) = self
            .post_json(
                &format!("/users/{user}/keys"),
                fields,
                Some(&format!("FH-AUTH {token}")),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let key = Key::from_answer(&body);
        self.remember_secret(&key.secret);
        key
    }

    /// Records a secret the scan on drop must not find anywhere.
    pub fn remember_secret(&self, secret: &str) {
        // Short strings would match by chance.
        if secret.len() >= 12 {
            self.secrets.lock().unwrap().push(secret.to_owned());
        }
    }

    /// Scans the server's logs (at `RUST_LOG=trace`), every file of its
    /// data directory and the test artifacts for each remembered secret,
    /// and the logs and data directory for the secret prefix `apsk_`.
    /// Returns the number of places scanned.
    pub fn assert_no_secrets_leaked(&self) -> usize {
        let secrets = self.secrets.lock().unwrap().clone();
        let mut places: Vec<(String, String)> = vec![("server log".into(), self.logs_text())];
        let mut stack = vec![self.data.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    places.push((
                        path.display().to_string(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ));
                }
            }
        }
        let prefix_places = places.len();
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/portal-artifacts");
        for entry in std::fs::read_dir(artifacts).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                places.push((
                    entry.path().display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
        for (i, (name, text)) in places.iter().enumerate() {
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{name} holds a secret the test made"
                );
            }
            // The portal shows a new key's secret once, by design: the
            // prefix is looked for in the logs and the data only.
            if i < prefix_places {
                assert!(!text.contains("apsk_"), "{name} holds the secret prefix");
            }
        }
        places.len()
    }

    /// Every message waiting in the outbox (`armor admin outbox`, which
    /// opens the sealed bodies with the master key).
    pub fn outbox(&self) -> Vec<Value> {
        self.admin(&["outbox"], &[])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The code in the newest waiting message to `recipient`.
    pub fn code_sent_to(&self, recipient: &str) -> String {
        let msgs = self.outbox();
        let m = msgs
            .iter()
            .rev()
            .find(|m| m["recipient"] == recipient)
            .unwrap_or_else(|| panic!("no message to {recipient}: {msgs:?}"));
        let body = m["body"].as_str().unwrap();
        let at = body.find(" is ").unwrap() + 4;
        body[at..]
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap()
            .to_owned()
    }

    /// Sends a request with a raw target (path and query exactly as given).
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = raw_request(&self.url, method, target, headers, body).await;
        resp
    }

    /// A signed request: the vendor form over `target`'s path.
    pub async fn psk(&self, key: &Key, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
        let path = target.split('?').next().unwrap();
        let auth = sign(key, method, path, body, &fresh_nonce(), now());
        let (s, _, v) = self
            .send(method, target, &[("Authorization", &auth)], body.to_vec())
            .await;
        (s, v)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop(true);
        // Every test's server is scanned (not when the test already failed:
        // a panic while panicking aborts).
        if !std::thread::panicking() {
            self.assert_no_secrets_leaked();
        }
    }
}

pub fn now() -> u64 {
    #[allow(clippy::disallowed_methods)]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn fresh_nonce() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The Authorization value for one request.
pub fn sign(key: &Key, method: &str, path: &str, body: &[u8], nonce: &str, ts: u64) -> String {
    let signing = SigningKey::new(&SecretKey::new(key.secret.clone()));
    SignableRequest {
        key_id: &key.id,
        method,
        request_path: path,
        nonce,
        timestamp: ts,
        body,
    }
    .authorization(&signing)
}

/// HTTP/1.1 over a plain socket, so the target is sent exactly as given
/// (no client-side normalisation of `..`, `%2F` or case).
pub async fn raw_request(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(host),
    )
    .await
    .unwrap()
    .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is sent (a
    // refusal or a 413): a broken pipe here is not the test's failure, the
    // answer read below is what counts.
    let _ = stream.write_all(&body).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .unwrap();
    if raw.is_empty() {
        read.unwrap();
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, reqwest::header::HeaderMap, Value) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        headers.append(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, headers, v)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}
