//! `armor sign`, `armor call`, `armor configure` and `armor keys`
//! (`cli/keys.rs`), run as the built binary.
//!
//! Every run starts from an empty environment (no `ARMOR_*`, no proxies, no
//! HOME) with `ARMOR_CREDENTIALS_FILE` pointing into a temp dir, so a
//! developer's own credentials are never read. Secrets reach the binary only
//! through env or stdin; `Armor::run` asserts they are never in argv.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use armor_psk::{Credentials, Request, SecretKey, SigningKey, Variant, Verifier};
use serde_json::Value;

mod keys;

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "apsk_3q8Vd0mXQ2yZkP7rT1wL9sB4nH6cJ5eF0gA2uK8iO3x";

/// A hermetic `armor` invocation.
struct Armor {
    cmd: Command,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    secrets: Vec<String>,
}

impl Armor {
    fn new(creds_file: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_armor"));
        cmd.env_clear()
            .env("ARMOR_CREDENTIALS_FILE", creds_file)
            .env("NO_PROXY", "*");
        Armor {
            cmd,
            args: Vec::new(),
            stdin: None,
            secrets: vec![SECRET.to_owned()],
        }
    }

    fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    fn secret_env(mut self, secret: &str) -> Self {
        self.secrets.push(secret.to_owned());
        self.cmd.env("ARMOR_SECRET_KEY", secret);
        self
    }

    fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    fn run(mut self) -> Output {
        for s in &self.secrets {
            assert!(
                !self.args.iter().any(|a| a.contains(s.as_str())),
                "a secret is on the command line: {:?}",
                self.args
            );
        }
        self.cmd
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn armor");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            // A command that refuses before reading its input may have
            // exited already: its answer, read below, is what counts.
            if let Err(e) = stdin.write_all(&bytes) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
        let out = child.wait_with_output().unwrap();
        // Whatever happened, no secret is ever printed.
        for s in &self.secrets {
            for stream in [&out.stdout, &out.stderr] {
                assert!(
                    !String::from_utf8_lossy(stream).contains(s.as_str()),
                    "a secret was printed; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "armor failed: {}", stderr(o));
}

fn vectors() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors.json");
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["signing"].as_array().unwrap().clone()
}

/// The test's own clock, to check the binary's default timestamp.
#[allow(clippy::disallowed_methods)]
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A temp dir and the credentials file path inside it (not created).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("armor").join("credentials");
    (dir, file)
}

#[test]
fn sign_reproduces_every_signing_vector() {
    let (dir, creds) = scratch();
    let vectors = vectors();
    assert!(vectors.len() >= 10);
    for (i, v) in vectors.iter().enumerate() {
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let name = s("name");
        let body = s("body");
        let mut args = vec![
            "sign".to_owned(),
            "--key-id".into(),
            s("keyId"),
            "--method".into(),
            s("method"),
            "--path".into(),
            s("requestPath"),
            "--nonce".into(),
            s("nonce"),
            "--timestamp".into(),
            v["timestamp"].as_u64().unwrap().to_string(),
            "--string-to-sign".into(),
        ];
        let mut armor = Armor::new(&creds).secret_env(&s("secretKey"));
        // Bodies go in by file and by stdin, alternately.
        if !body.is_empty() {
            if i % 2 == 0 {
                let file = dir.path().join(format!("{name}.body"));
                std::fs::write(&file, &body).unwrap();
                args.extend(["--body".into(), format!("@{}", file.display())]);
            } else {
                args.extend(["--body".into(), "-".into()]);
                armor = armor.stdin(body.clone());
            }
        }
        let out = armor.args(&args).run();
        assert_ok(&out);
        assert_eq!(stdout(&out), format!("{}\n", s("authorization")), "{name}");
        assert_eq!(stderr(&out), format!("{}\n", s("stringToSign")), "{name}");
    }
}

#[test]
fn sign_reads_everything_from_env_and_lowercase_methods_are_uppercased() {
    let (_dir, creds) = scratch();
    let v = &vectors()[0];
    let out = Armor::new(&creds)
        .secret_env(v["secretKey"].as_str().unwrap())
        .env("ARMOR_KEY_ID", v["keyId"].as_str().unwrap())
        .env("ARMOR_PATH", v["requestPath"].as_str().unwrap())
        .env("ARMOR_NONCE", v["nonce"].as_str().unwrap())
        .env("ARMOR_TIMESTAMP", &v["timestamp"].to_string())
        .args(["sign", "--method", "get"])
        .run();
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim_end(),
        v["authorization"].as_str().unwrap()
    );
}

#[test]
fn sign_defaults_to_a_random_hex_nonce_and_the_current_time() {
    let (_dir, creds) = scratch();
    let run = || {
        Armor::new(&creds)
            .secret_env(SECRET)
            .args(["sign", "--key-id", KEY_ID, "--path", "/me"])
            .run()
    };
    let (a, b) = (run(), run());
    assert_ok(&a);
    let header = stdout(&a);
    let c = Credentials::parse(header.trim_end()).unwrap();
    assert_eq!(c.key_id(), KEY_ID);
    assert_eq!(c.nonce().len(), 32);
    assert!(c
        .nonce()
        .bytes()
        .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)));
    assert!(c.timestamp().abs_diff(now()) <= 5);
    let key = SigningKey::new(&SecretKey::new(SECRET.into()));
    let req = Request {
        method: "GET",
        path: "/me",
        query: None,
        body: b"",
    };
    assert_eq!(
        Verifier::default().verify(&key, &c, &req),
        Ok(Variant::Vendor)
    );
    assert_ne!(header, stdout(&b), "two runs, same nonce");
}

#[test]
fn sign_refuses_bad_nonces_and_key_ids() {
    let (_dir, creds) = scratch();
    let long = "N".repeat(129);
    let cases: [(&str, &str, &str); 6] = [
        ("--nonce", "abc:def", "nonce"),
        ("--nonce", &long, "nonce"),
        ("--nonce", "has space", "nonce"),
        ("--nonce", "caf\u{e9}", "nonce"),
        ("--key-id", "key:id", "key id"),
        ("--key-id", "key\tid", "key id"),
    ];
    for (flag, value, what) in cases {
        let mut args = vec!["sign", "--path", "/me", flag, value];
        args.extend(if flag == "--nonce" {
            ["--key-id", KEY_ID]
        } else {
            ["--nonce", "n1"]
        });
        let out = Armor::new(&creds).secret_env(SECRET).args(&args).run();
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(err.contains(&format!("invalid {what}")), "{err}");
    }
    let out = Armor::new(&creds)
        .secret_env(SECRET)
        .args([
            "sign",
            "--path",
            "/me",
            "--key-id",
            KEY_ID,
            "--timestamp",
            "-5",
        ])
        .run();
    assert!(!out.status.success());
}

#[test]
fn sign_without_a_secret_says_where_to_put_one() {
    let (_dir, creds) = scratch();
    let out = Armor::new(&creds)
        .args(["sign", "--path", "/me", "--key-id", KEY_ID])
        .run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("ARMOR_SECRET_KEY"), "{err}");
    assert!(err.contains("armor configure"), "{err}");
    // And there is no flag to pass it on the command line.
    let out = Armor::new(&creds)
        .args(["sign", "--path", "/me", "--secret-key", "x"])
        .run();
    assert!(!out.status.success());
}

#[test]
fn configure_then_sign_with_the_profile() {
    let (_dir, creds) = scratch();
    let other_secret = "apsk_default_profile_secret";
    let out = Armor::new(&creds)
        .args(["configure", "--key-id", "default-key"])
        .stdin(format!("{other_secret}\n"))
        .run();
    assert_ok(&out);
    let mut armor = Armor::new(&creds)
        .args([
            "configure",
            "--profile",
            "x",
            "--key-id",
            KEY_ID,
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .stdin(format!("{SECRET}\r\n"));
    armor.secrets.push(other_secret.into());
    assert_ok(&armor.run());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&creds).unwrap();
    assert!(text.contains("[default]\nkey_id = default-key\n"), "{text}");
    assert!(text.contains(&format!("[x]\nkey_id = {KEY_ID}\nsecret_key = {SECRET}\n")));

    let v = &vectors()[0];
    let sign = |profile: &str| {
        Armor::new(&creds)
            .args([
                "sign",
                "--profile",
                profile,
                "--path",
                v["requestPath"].as_str().unwrap(),
                "--nonce",
                v["nonce"].as_str().unwrap(),
                "--timestamp",
                &v["timestamp"].to_string(),
            ])
            .run()
    };
    let out = sign("x");
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim_end(),
        v["authorization"].as_str().unwrap()
    );
    let out = sign("default");
    assert_ok(&out);
    assert!(stdout(&out).starts_with("ARMOR-PSK default-key:"));
    let out = sign("nope");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no profile [nope]"),
        "{}",
        stderr(&out)
    );

    // Updating the key id with an empty secret line keeps the secret and
    // the other profile.
    let out = Armor::new(&creds)
        .args(["configure", "--profile", "x", "--key-id", "key-7"])
        .stdin("\n")
        .run();
    assert_ok(&out);
    let after = std::fs::read_to_string(&creds).unwrap();
    assert_eq!(after, text.replace(KEY_ID, "key-7"));

    // Flags and env beat the profile.
    let out = Armor::new(&creds)
        .env("ARMOR_PROFILE", "x")
        .env("ARMOR_KEY_ID", KEY_ID)
        .args(["sign", "--path", "/me"])
        .run();
    assert_ok(&out);
    assert!(stdout(&out).starts_with(&format!("ARMOR-PSK {KEY_ID}:")));
}

#[test]
fn configure_refuses_a_missing_secret_and_a_broken_file() {
    let (_dir, creds) = scratch();
    let out = Armor::new(&creds)
        .args(["configure", "--key-id", KEY_ID])
        .stdin("")
        .run();
    assert!(!out.status.success());
    assert!(!creds.exists());

    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(&creds, "[default]\nkey_id = a\nhunter2-no-equals\n").unwrap();
    let out = Armor::new(&creds)
        .args(["configure", "--key-id", KEY_ID])
        .stdin(format!("{SECRET}\n"))
        .run();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// What the test server saw.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Verifies the Authorization header against the request as received.
    fn verify(&self, verifier: Verifier) -> Result<Variant, armor_psk::Error> {
        let auth = self.header("authorization").expect("no Authorization");
        let creds = Credentials::parse(auth).unwrap();
        verifier.check_time(&creds, now()).unwrap();
        let key = SigningKey::new(&SecretKey::new(SECRET.into()));
        let req = Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            body: &self.body,
        };
        verifier.verify(&key, &creds, &req)
    }
}

/// Serves exactly one HTTP/1.1 request on 127.0.0.1, answering `status`
/// with `body`; returns the base URL and what it saw.
fn serve_once(status: &'static str, body: &'static str) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.trim_end().split(' ');
        let method = parts.next().unwrap().to_owned();
        let target = parts.next().unwrap().to_owned();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target, None),
        };
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut req_body = vec![0; len];
        reader.read_exact(&mut req_body).unwrap();
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream.flush().unwrap();
        Seen {
            method,
            path,
            query,
            headers,
            body: req_body,
        }
    });
    (base, handle)
}

#[test]
fn call_signs_the_vendor_form_of_the_path_as_sent() {
    let (_dir, creds) = scratch();
    let (base, server) = serve_once("200 OK", r#"{"ok":true}"#);
    let data = r#"{"subject":"disk full"}"#;
    let out = Armor::new(&creds)
        .secret_env(SECRET)
        .args([
            "call",
            "--key-id",
            KEY_ID,
            "-X",
            "post",
            &format!("{base}/users/jane doe/{{x}}/?q=a b&$top=10#frag"),
            "--data",
            data,
            "--account",
            "42",
            "-H",
            "X-Trace: t1",
            "--verbose",
        ])
        .run();
    assert_ok(&out);
    let seen = server.join().unwrap();
    assert_eq!(stdout(&out), r#"{"ok":true}"#);
    let err = stderr(&out);
    assert!(err.contains("HTTP/1.1 200 OK"), "{err}");
    assert!(
        err.contains("> POST /users/jane%20doe/%7Bx%7D/?q=a%20b&$top=10 HTTP/1.1"),
        "{err}"
    );
    assert!(
        err.contains("requestPath=/users/jane%20doe/%7Bx%7D/ nonce="),
        "{err}"
    );
    assert!(!err.contains("disk full"), "verbose shows the body: {err}");

    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/users/jane%20doe/%7Bx%7D/");
    assert_eq!(seen.query.as_deref(), Some("q=a%20b&$top=10"));
    assert_eq!(seen.body, data.as_bytes());
    assert_eq!(seen.header("x-account-context"), Some("42"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-trace"), Some("t1"));
    assert_eq!(seen.verify(Verifier::default()), Ok(Variant::Vendor));
    // The vendor form does not cover the query.
    assert_eq!(
        seen.verify(Verifier::default().require_signed_query(true)),
        Err(armor_psk::Error::QueryNotSigned)
    );
    let c = seen.header("authorization").unwrap();
    let nonce = Credentials::parse(c).unwrap().nonce().to_owned();
    assert_eq!(nonce.len(), 32);
}

#[test]
fn call_with_sign_query_covers_the_query() {
    let (_dir, creds) = scratch();
    let (base, server) = serve_once("200 OK", "{}");
    let out = Armor::new(&creds)
        .secret_env(SECRET)
        .env("ARMOR_KEY_ID", KEY_ID)
        .args([
            "call",
            &format!("{base}/vms?$top=1000&status=running"),
            "--sign-query",
        ])
        .run();
    assert_ok(&out);
    let seen = server.join().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.query.as_deref(), Some("$top=1000&status=running"));
    assert_eq!(seen.header("x-account-context"), None);
    assert_eq!(seen.header("content-type"), None);
    assert!(seen.body.is_empty());
    let strict = Verifier::default().require_signed_query(true);
    assert_eq!(seen.verify(strict), Ok(Variant::SignedQuery));
}

#[test]
fn call_a_path_against_the_profile_endpoint() {
    let (_dir, creds) = scratch();
    let (base, server) = serve_once("200 OK", r#"{"id":1}"#);
    let out = Armor::new(&creds)
        .args([
            "configure",
            "--profile",
            "local",
            "--key-id",
            KEY_ID,
            "--endpoint",
            &format!("{base}/"),
        ])
        .stdin(format!("{SECRET}\n"))
        .run();
    assert_ok(&out);
    let body_file = creds.parent().unwrap().join("body.json");
    std::fs::write(&body_file, r#"{"a":1}"#).unwrap();
    let out = Armor::new(&creds)
        .env("ARMOR_PROFILE", "local")
        .args([
            "call",
            "/me",
            "-d",
            &format!("@{}", body_file.display()),
            "-H",
            "Content-Type: application/vnd.test+json",
            "-X",
            "PUT",
        ])
        .run();
    assert_ok(&out);
    assert_eq!(stdout(&out), r#"{"id":1}"#);
    let seen = server.join().unwrap();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path, "/me");
    assert_eq!(seen.body, br#"{"a":1}"#);
    assert_eq!(
        seen.header("content-type"),
        Some("application/vnd.test+json")
    );
    assert_eq!(seen.verify(Verifier::default()), Ok(Variant::Vendor));
}

#[test]
fn call_exits_1_on_a_non_2xx_answer_and_prints_the_body() {
    let (_dir, creds) = scratch();
    let answer = r#"{"error":"invalid_signature","status":401}"#;
    let (base, server) = serve_once("401 Unauthorized", answer);
    let out = Armor::new(&creds)
        .secret_env(SECRET)
        .args(["call", "--key-id", KEY_ID, &format!("{base}/me")])
        .run();
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), answer);
    assert!(stderr(&out).contains("HTTP/1.1 401 Unauthorized"));
}

#[test]
fn call_refuses_bad_input_before_sending() {
    let (_dir, creds) = scratch();
    for args in [
        vec!["call", "/me"],
        vec!["call", "http://127.0.0.1:1/me", "--account", "abc"],
        vec!["call", "http://127.0.0.1:1/me", "-H", "Authorization: x"],
        vec!["call", "ftp://127.0.0.1:1/me"],
    ] {
        let out = Armor::new(&creds)
            .secret_env(SECRET)
            .env("ARMOR_KEY_ID", KEY_ID)
            .args(&args)
            .run();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).starts_with("armor: "), "{}", stderr(&out));
    }
}

/// The Sentinel primary's credentials are refused where they cannot be
/// used, before anything starts: a password or a user name outside
/// Sentinel mode, a user name without a password.
#[test]
fn serve_refuses_sentinel_credentials_it_cannot_use() {
    let (dir, creds) = scratch();
    let data = dir.path().join("data");
    let data = data.to_string_lossy();
    let base = ["serve", "--listen", "127.0.0.1:0", "--data-dir", &data];
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["--redis-url", "redis://127.0.0.1:1"],
            Some("a-primary-password"),
            "ARMOR_REDIS_SENTINEL_MASTER_PASSWORD applies to --redis-mode sentinel",
        ),
        (
            &[
                "--redis-mode",
                "cluster",
                "--redis-url",
                "redis://127.0.0.1:1",
            ],
            Some("a-primary-password"),
            "ARMOR_REDIS_SENTINEL_MASTER_PASSWORD applies to --redis-mode sentinel",
        ),
        (
            &["--redis-sentinel-master-username", "armor"],
            None,
            "--redis-sentinel-master-username applies to --redis-mode sentinel",
        ),
        (
            &[
                "--redis-mode",
                "sentinel",
                "--redis-sentinel-master",
                "main",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--redis-sentinel-master-username",
                "armor",
            ],
            None,
            "--redis-sentinel-master-username needs ARMOR_REDIS_SENTINEL_MASTER_PASSWORD",
        ),
    ];
    for (args, password, says) in cases {
        let mut armor = Armor::new(&creds).args(base).args(args);
        if let Some(p) = password {
            armor = armor.env("ARMOR_REDIS_SENTINEL_MASTER_PASSWORD", p);
        }
        let out = armor.run();
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
