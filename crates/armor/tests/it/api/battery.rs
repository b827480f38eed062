//! The reliability and security battery (docs/reliability.md): refusals
//! that say nothing, brute force, nonce floods and kill -9 at random
//! moments.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{json, Value};

use super::*;

/// Status and body bytes of one request, without any request id.
async fn raw_answer(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.url))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap().to_vec();
    // A request id, if the server ever adds one, differs by design.
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) if m.contains_key("requestId") => {
            m.remove("requestId");
            serde_json::to_vec(&m).unwrap()
        }
        _ => bytes,
    };
    (status, bytes)
}

#[tokio::test]
async fn refused_keys_unknown_deleted_disabled_or_wrong_answer_byte_for_byte_the_same() {
    let app = spawn_app().await;
    let owner = app.login().await;
    let live = app.create_key(&owner, 1, "live").await;
    let deleted = app.create_key(&owner, 1, "deleted").await;
    let (s, _, _) = app
        .send(
            "DELETE",
            &format!("/users/1/keys/{}", deleted.id),
            &[("Authorization", &format!("FH-AUTH {owner}"))],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let uid = app.add_user("disabled@example.com", "User", 1);
    let token = app.login_as("disabled@example.com", ADMIN_PASSWORD).await;
    let disabled = app.create_key(&token, uid, "disabled").await;
    assert_eq!(app.psk(&disabled, "GET", "/me", b"").await.0, 200);
    let (s, _) = app
        .post_json(
            "/users/status",
            json!({"userId": uid, "status": "disabled"}),
            Some(&format!("FH-AUTH {owner}")),
        )
        .await;
    assert_eq!(s, 200);

    let unknown = Key {
        id: "7f1c7a52-5d3e-4c11-9f0e-2b0f3f3c9a10".into(),
        secret: live.secret.clone(),
    };
    let wrong = Key {
        id: live.id.clone(),
        secret: "apsk_wrong_secret_for_this_key".into(),
    };
    // One nonce and timestamp for all, so the descriptions match too;
    // no request is accepted, so the nonce is never claimed.
    let (nonce, ts) = (fresh_nonce(), now());
    let mut answers = Vec::new();
    for (what, k) in [
        ("unknown", &unknown),
        ("deleted", &deleted),
        ("disabled user", &disabled),
        ("wrong signature", &wrong),
    ] {
        for (method, path, body) in [("GET", "/me", &b""[..]), ("POST", "/auth/whoami", b"{}")] {
            let auth = sign(k, method, path, body, &nonce, ts);
            let (s, bytes) =
                raw_answer(&app, method, path, &[("Authorization", &auth)], body).await;
            assert_eq!(s, 401, "{what}: {}", String::from_utf8_lossy(&bytes));
            answers.push((what, method, bytes));
        }
    }
    for (what, method, bytes) in &answers {
        let first = answers.iter().find(|a| a.1 == *method).unwrap();
        assert_eq!(
            bytes,
            &first.2,
            "{what} answers differently from {}:\n{}\n{}",
            first.0,
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&first.2)
        );
    }
    let v: Value = serde_json::from_slice(&answers[0].2).unwrap();
    assert_eq!(v["error"], "invalid_signature");
}

#[tokio::test]
async fn login_answers_the_same_for_unknown_user_wrong_password_and_locked_account() {
    let app = spawn_app().await;
    app.add_user("locked@example.com", "User", 1);
    app.add_user("fine@example.com", "User", 1);
    let attempt = |user: &str, password: &str| {
        let body = serde_json::to_vec(&json!({"username": user, "password": password})).unwrap();
        let app = &app;
        async move {
            raw_answer(
                app,
                "POST",
                "/auth/authorize",
                &[("Content-Type", "application/json")],
                &body,
            )
            .await
        }
    };
    let unknown = attempt("nobody@example.com", "wrong password").await;
    let wrong = attempt("fine@example.com", "wrong password").await;
    for _ in 0..5 {
        assert_eq!(attempt("locked@example.com", "wrong password").await.0, 401);
    }
    let locked_right = attempt("locked@example.com", ADMIN_PASSWORD).await;
    let locked_wrong = attempt("locked@example.com", "wrong password").await;
    assert_eq!(unknown.0, 401);
    for (what, a) in [
        ("wrong password", &wrong),
        ("locked, right password", &locked_right),
        ("locked, wrong password", &locked_wrong),
    ] {
        assert_eq!(
            a,
            &unknown,
            "{what}: {} vs {}",
            String::from_utf8_lossy(&a.1),
            String::from_utf8_lossy(&unknown.1)
        );
    }
    // The other user was never affected.
    app.login_as("fine@example.com", ADMIN_PASSWORD).await;
}

/// `n` requests, `width` at a time; returns each answer's status.
async fn flood<F, Fut>(n: usize, width: usize, f: F) -> Vec<u16>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(vec![0u16; n]));
    let mut tasks = Vec::new();
    for _ in 0..width {
        let (f, next, out) = (f.clone(), next.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let s = f(i).await;
                out.lock().unwrap()[i] = s;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = out.lock().unwrap().clone();
    v
}

#[tokio::test]
async fn brute_force_of_signatures_and_passwords_from_one_address() {
    let app = spawn_app_with(&["--auth-failure-limit", "0.5:20"]).await;
    let owner = app.login().await;
    let target = app.create_key(&owner, 1, "target").await;
    let bystander = app.create_key(&owner, 1, "bystander").await;

    // 1000 wrong signatures for one key, interleaved with a legitimate
    // user of another key from the same address.
    let started = Instant::now();
    let (url, http) = (app.url.clone(), app.http.clone());
    let wrong = Key {
        id: target.id.clone(),
        secret: "apsk_guess".into(),
    };
    let guess = wrong.clone();
    let statuses = flood(1000, 8, move |_| {
        let (url, http, wrong) = (url.clone(), http.clone(), guess.clone());
        async move {
            let auth = sign(&wrong, "GET", "/me", b"", &fresh_nonce(), now());
            http.get(format!("{url}/me"))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "1000 wrong signatures: {refused} x 401, {limited} x 429 in {:?}",
        started.elapsed()
    );
    assert_eq!(refused + limited, 1000, "{statuses:?}");
    // The burst, plus what refilled at 0.5/s while the flood ran.
    let refill = (started.elapsed().as_secs_f64() * 0.5).ceil() as usize + 1;
    assert!(
        (20..=20 + refill).contains(&refused),
        "{refused} refusals reached the verifier"
    );
    let (s, h, b) = app
        .send(
            "GET",
            "/me",
            &[(
                "Authorization",
                &sign(&wrong, "GET", "/me", b"", &fresh_nonce(), now()),
            )],
            vec![],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (429, Some("rate_limited")), "{b}");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another key from the same address is not affected.
    for _ in 0..20 {
        assert_eq!(app.psk(&bystander, "GET", "/me", b"").await.0, 200);
    }

    // 1000 wrong passwords for one user: locked out; others sign in.
    app.add_user("victim@example.com", "User", 1);
    app.add_user("other@example.com", "User", 1);
    let started = Instant::now();
    let (url, http) = (app.url.clone(), app.http.clone());
    let statuses = flood(1000, 8, move |i| {
        let (url, http) = (url.clone(), http.clone());
        async move {
            http.post(format!("{url}/auth/authorize"))
                .json(&json!({"username": "victim@example.com", "password": format!("guess {i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    eprintln!("1000 wrong passwords in {:?}", started.elapsed());
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // The right password no longer works: the account is locked.
    let (s, _) = app
        .post_json(
            "/auth/authorize",
            json!({"username": "victim@example.com", "password": ADMIN_PASSWORD}),
            None,
        )
        .await;
    assert!(s == 401 || s == 429, "{s}");
    let (s, b) = app
        .send(
            "GET",
            "/users/LockedOut/1/victim%40example.com",
            &[("Authorization", &format!("FH-AUTH {owner}"))],
            vec![],
        )
        .await
        .into_status_body();
    assert_eq!((s, b["lockedOut"].as_bool()), (200, Some(true)), "{b}");
    app.login_as("other@example.com", ADMIN_PASSWORD).await;
    assert_eq!(app.psk(&bystander, "GET", "/me", b"").await.0, 200);
}

trait StatusBody {
    fn into_status_body(self) -> (u16, Value);
}
impl StatusBody for (u16, reqwest::header::HeaderMap, Value) {
    fn into_status_body(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `n` whoami requests, each signed with a fresh nonce `{prefix}{i}`, 32 at
/// a time: their statuses.
async fn fresh_nonces(app: &TestApp, key: &Key, prefix: &'static str, n: usize) -> Vec<u16> {
    let (url, http, k) = (app.url.clone(), app.http.clone(), key.clone());
    flood(n, 32, move |i| {
        let (url, http, k) = (url.clone(), http.clone(), k.clone());
        async move {
            let auth = sign(
                &k,
                "GET",
                "/auth/whoami",
                b"",
                &format!("{prefix}{i}"),
                now(),
            );
            http.get(format!("{url}/auth/whoami"))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await
}

#[tokio::test]
async fn nonce_flood_then_replay_of_the_first_is_refused() {
    const N: usize = 20_000;
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "flood").await;
    // A pause, then traffic, unmeasured. The allocator returns freed
    // memory (the sign-in's password hashing) to the system no sooner than
    // a second after it was freed, and then only when a later request frees
    // memory too: measured from before then, that return would hide growth.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let warm = fresh_nonces(&app, &key, "warm-", 2_000).await;
    assert_eq!(warm.iter().find(|s| **s != 200), None, "warm-up refused");
    let rss_before = rss_kib(app.pid());
    assert!(rss_before > 0, "no VmRSS in /proc/{}/status", app.pid());
    let ts = now();
    let first = sign(&key, "GET", "/auth/whoami", b"", "flood-0", ts);
    let (s, _, _) = app
        .send("GET", "/auth/whoami", &[("Authorization", &first)], vec![])
        .await;
    assert_eq!(s, 200);
    let started = Instant::now();
    let statuses = fresh_nonces(&app, &key, "flood-x", N - 1).await;
    let elapsed = started.elapsed();
    assert_eq!(statuses.iter().find(|s| **s != 200), None, "flood refused");
    let rss_after = rss_kib(app.pid());
    // The first request again, byte for byte.
    let (s, _, b) = app
        .send("GET", "/auth/whoami", &[("Authorization", &first)], vec![])
        .await;
    assert_eq!(b["error"], "nonce_reused", "{s} {b}");
    eprintln!(
        "nonce flood: {N} fresh nonces in {elapsed:?} ({:.0}/s); RSS {rss_before} -> {rss_after} KiB ({:+} KiB); replay of the first: {s}",
        N as f64 / elapsed.as_secs_f64(),
        rss_after as i64 - rss_before as i64
    );
    // Two fingerprints per request; far below 1 KiB per request.
    assert!(
        rss_after.saturating_sub(rss_before) < (N as u64) / 2,
        "RSS grew {} KiB for {N} requests",
        rss_after.saturating_sub(rss_before)
    );
}

/// `PRAGMA integrity_check` and half-written rows, through Python's sqlite3
/// (SQLite), or psql (PostgreSQL).
fn check_database(app: &TestApp) -> (String, i64, i64) {
    let half_written = "SELECT count(*) FROM api_keys WHERE status = 'Active' AND \
        (length(ciphertext) < 16 OR length(nonce) <> 12 OR mk_version < 1)";
    let count = "SELECT count(*) FROM api_keys WHERE status = 'Active'";
    match app.database_url() {
        None => {
            let db = app.data_dir().join("armor.db");
            let script = format!(
                "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
                 print(c.execute('PRAGMA integrity_check').fetchone()[0])\n\
                 print(c.execute(\"{half_written}\").fetchone()[0])\n\
                 print(c.execute(\"{count}\").fetchone()[0])\n"
            );
            let out = std::process::Command::new("python3")
                .args(["-c", &script])
                .arg(&db)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut l = text.lines();
            (
                l.next().unwrap().to_owned(),
                l.next().unwrap().parse().unwrap(),
                l.next().unwrap().parse().unwrap(),
            )
        }
        Some(url) => {
            let q = |sql: &str| {
                let out = std::process::Command::new("psql")
                    .arg(&url)
                    .args(["-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap().trim().to_owned()
            };
            // PostgreSQL has no integrity_check; amcheck needs an
            // extension. The catalog answering at all, plus the row checks.
            let half = half_written.replace("length(", "octet_length(");
            (
                if q("SELECT 1") == "1" {
                    "ok".into()
                } else {
                    "no answer".into()
                },
                q(&half).parse().unwrap(),
                q(count).parse().unwrap(),
            )
        }
    }
}

#[tokio::test]
async fn kill_9_at_a_random_moment_during_1000_concurrent_key_creations() {
    const N: usize = 1000;
    let mut app = spawn_app().await;
    let token = app.login().await;
    let (url, http) = (app.url.clone(), app.http.clone());
    let acked: Arc<Mutex<Vec<Key>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creations = {
        let (acked, sent) = (acked.clone(), sent.clone());
        tokio::spawn(flood(N, 32, move |i| {
            let (url, http, token, acked, sent) = (
                url.clone(),
                http.clone(),
                token.clone(),
                acked.clone(),
                sent.clone(),
            );
            async move {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let resp = http
                    .post(format!("{url}/users/1/keys"))
                    .header("Authorization", format!("FH-AUTH {token}"))
                    .json(&json!({"name": format!("c{i}")}))
                    .send()
                    .await;
                let Ok(r) = resp else { return 0 };
                let s = r.status().as_u16();
                if s == 200 {
                    if let Ok(v) = r.json::<Value>().await {
                        acked.lock().unwrap().push(Key::from_answer(&v));
                    }
                }
                s
            }
        }))
    };
    // A random moment after the first creations are acknowledged, before
    // the last: between 5 % and 80 % of them.
    let at = rand::thread_rng().gen_range(N / 20..N * 4 / 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < at && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.crash();
    let _ = creations.await;
    let keys = acked.lock().unwrap().clone();
    for k in &keys {
        app.remember_secret(&k.secret);
    }
    let (integrity, half, active) = check_database(&app);
    eprintln!(
        "kill -9 after {} acknowledged of {} sent: integrity {integrity}, {half} half-written, {active} active rows",
        keys.len(),
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(integrity, "ok");
    assert_eq!(half, 0);
    assert!(
        keys.len() >= at && keys.len() < N,
        "{} acknowledged",
        keys.len()
    );
    assert!(active as usize >= keys.len());
    app.start_again();
    let lost = Arc::new(Mutex::new(Vec::new()));
    let (url, http, ks, lost2) = (
        app.url.clone(),
        app.http.clone(),
        Arc::new(keys.clone()),
        lost.clone(),
    );
    flood(keys.len(), 16, move |i| {
        let (url, http, ks, lost) = (url.clone(), http.clone(), ks.clone(), lost2.clone());
        async move {
            let k = &ks[i];
            let auth = sign(k, "GET", "/me", b"", &fresh_nonce(), now());
            let s = http
                .get(format!("{url}/me"))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if s != 200 {
                lost.lock().unwrap().push(k.id.clone());
            }
            s
        }
    })
    .await;
    let lost = lost.lock().unwrap().clone();
    assert!(lost.is_empty(), "acknowledged keys lost: {lost:?}");
}

#[tokio::test]
async fn kill_9_at_a_random_moment_during_rotate_master_key() {
    const N: usize = 2000;
    let mut app = spawn_app().await;
    let out_dir = tempfile::tempdir().unwrap();
    let seeded = out_dir.path().join("keys.txt");
    // Pending messages, whose sealed bodies the rotations re-seal too.
    for _ in 0..3 {
        app.post_json("/users/resetpassword", json!({"email": ADMIN_EMAIL}), None)
            .await;
    }
    fn bodies(app: &TestApp) -> Vec<Value> {
        app.admin(&["outbox"], &[])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["body"].clone())
            .collect()
    }
    let sent = bodies(&app);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(Value::is_string), "{sent:?}");
    app.crash();
    app.admin(
        &[
            "seed-keys",
            "--user",
            "1",
            "--count",
            &N.to_string(),
            "--out",
            seeded.to_str().unwrap(),
        ],
        &[],
    );
    let keys: Vec<Key> = std::fs::read_to_string(&seeded)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, secret) = l.split_once(' ').unwrap();
            Key {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }
        })
        .collect();
    assert_eq!(keys.len(), N);
    for k in &keys {
        app.remember_secret(&k.secret);
    }

    // Rotations killed at random moments, then one that finishes.
    let mut rng = rand::thread_rng();
    let mut kills = Vec::new();
    for _ in 0..3 {
        let mut child = std::process::Command::new(armor_bin())
            .arg("admin")
            .arg("--data-dir")
            .arg(app.data_dir())
            .args(
                app.database_url()
                    .map(|u| vec!["--database-url".to_owned(), u])
                    .unwrap_or_default(),
            )
            .arg("rotate-master-key")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.gen_range(10..400));
        std::thread::sleep(after);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        kills.push((after, finished));
        let (integrity, half, active) = check_database(&app);
        assert_eq!(
            (integrity.as_str(), half),
            ("ok", 0),
            "after a kill at {after:?}"
        );
        assert!(active as usize >= N);
    }
    eprintln!("rotate-master-key killed at {kills:?} (true: it had finished)");
    // Every row is readable before finishing: the server loads them all.
    app.start_again();
    let check_all = |app: &TestApp| {
        let (url, http, ks) = (app.url.clone(), app.http.clone(), Arc::new(keys.clone()));
        flood(N, 16, move |i| {
            let (url, http, ks) = (url.clone(), http.clone(), ks.clone());
            async move {
                let auth = sign(&ks[i], "GET", "/me", b"", &fresh_nonce(), now());
                http.get(format!("{url}/me"))
                    .header("Authorization", auth)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
    };
    let statuses = check_all(&app).await;
    let bad = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(bad, 0, "{bad} keys unreadable after interrupted rotations");
    assert_eq!(
        bodies(&app),
        sent,
        "messages unreadable after interrupted rotations"
    );
    app.crash();
    let out = app.admin(&["rotate-master-key"], &[]);
    assert!(out.contains("re-sealed"), "{out}");
    app.start_again();
    let statuses = check_all(&app).await;
    assert!(statuses.iter().all(|s| *s == 200));
}
