//! `GET /users/{id}/keys/{key}/usage`: counts that match what was sent
//! (accepted, and each refusal by its code), visible at once on the node
//! that served them, kept across a restart, in aligned buckets; the same
//! permission rules as listing keys; bad parameters refused.

use serde_json::{json, Value};

use super::*;

fn fh(token: &str) -> String {
    format!("FH-AUTH {token}")
}

/// The usage answer of `key` of `user`, as `auth`.
async fn usage(app: &TestApp, auth: &str, user: i64, key: &str, query: &str) -> (u16, Value) {
    let (s, _, b) = app
        .send(
            "GET",
            &format!("/users/{user}/keys/{key}/usage{query}"),
            &[("Authorization", auth)],
            vec![],
        )
        .await;
    (s, b)
}

/// Accepted and refused (by code) summed over every bucket.
fn totals(body: &Value) -> (u64, std::collections::BTreeMap<String, u64>) {
    let mut accepted = 0;
    let mut refused = std::collections::BTreeMap::new();
    for b in body["buckets"].as_array().unwrap() {
        accepted += b["accepted"].as_u64().unwrap();
        for (code, n) in b["refused"].as_object().unwrap() {
            *refused.entry(code.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    (accepted, refused)
}

/// A key of user 1 created with `fields`.
async fn key_with(app: &TestApp, token: &str, fields: Value) -> Key {
    app.create_key_with(token, 1, fields).await
}

fn refused(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Sends to `key`: `ok` accepted calls, two with a wrong secret, a replay
/// of an accepted one, and one with a timestamp an hour old.
async fn send_mix(app: &TestApp, key: &Key, ok: usize) {
    for _ in 0..ok {
        assert_eq!(app.psk(key, "GET", "/me", b"").await.0, 200);
    }
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    for _ in 0..2 {
        let (s, b) = app.psk(&wrong, "GET", "/me", b"").await;
        assert_eq!((s, b["error"].as_str()), (401, Some("invalid_signature")));
    }
    let auth = sign(key, "GET", "/me", b"", &fresh_nonce(), now());
    let (s, _, _) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    let (s, _, b) = app
        .send("GET", "/me", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("nonce_reused")));
    let old = sign(key, "GET", "/me", b"", &fresh_nonce(), now() - 3600);
    let (s, _, b) = app
        .send("GET", "/me", &[("Authorization", &old)], vec![])
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("timestamp_out_of_window"))
    );
}

#[tokio::test]
async fn usage_counts_match_what_was_sent_and_show_at_once() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = fh(&token);
    let key = app.create_key(&token, 1, "counted").await;
    let other = app.create_key(&token, 1, "other").await;

    let before = now();
    send_mix(&app, &key, 3).await;
    assert_eq!(app.psk(&other, "GET", "/me", b"").await.0, 200);
    // An id that is no key is counted nowhere.
    let ghost = Key {
        id: "00000000-0000-4000-8000-000000000000".into(),
        secret: key.secret.clone(),
    };
    assert_eq!(app.psk(&ghost, "GET", "/me", b"").await.0, 401);
    let after = now();

    // Asked at once: the counts are this node's, not yet written.
    let expected = refused(&[
        ("invalid_signature", 2),
        ("nonce_reused", 1),
        ("timestamp_out_of_window", 1),
    ]);
    for bucket in ["minute", "hour", "day"] {
        let (s, body) = usage(&app, &auth, 1, &key.id, &format!("?bucket={bucket}")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["keyId"], key.id.as_str());
        assert_eq!(body["bucket"], bucket);
        assert_eq!(totals(&body), (4, expected.clone()), "{bucket}: {body}");
        // Whatever was counted sits in a bucket holding the time it was sent.
        let grain = match bucket {
            "minute" => 60,
            "hour" => 3600,
            _ => 86_400,
        };
        for b in body["buckets"].as_array().unwrap() {
            let start = parse_time(b["start"].as_str().unwrap());
            assert_eq!(start % grain, 0, "{b}");
            if b["accepted"] != 0 || b["refused"] != json!({}) {
                assert!(
                    start + grain > before && start <= after,
                    "{bucket} bucket {b} outside {before}..{after}"
                );
            }
        }
    }
    let (s, body) = usage(&app, &auth, 1, &other.id, "?bucket=hour").await;
    assert_eq!(s, 200);
    assert_eq!(totals(&body), (1, refused(&[])));
    let (s, body) = usage(&app, &auth, 1, &ghost.id, "").await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn usage_counts_survive_a_restart_and_later_counts_add_to_them() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "kept").await;
    send_mix(&app, &key, 2).await;
    // SIGTERM writes what is pending.
    app.restart();
    let token = app.login().await;
    let auth = fh(&token);
    let expected = refused(&[
        ("invalid_signature", 2),
        ("nonce_reused", 1),
        ("timestamp_out_of_window", 1),
    ]);
    for bucket in ["minute", "hour", "day"] {
        let (s, body) = usage(&app, &auth, 1, &key.id, &format!("?bucket={bucket}")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(totals(&body), (3, expected.clone()), "{bucket}: {body}");
    }
    // The new process adds to the stored buckets (shown with its own
    // pending counts), then writes them on its own shutdown.
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=hour").await;
    assert_eq!(totals(&body), (4, expected.clone()));
    app.restart();
    let auth = fh(&app.login().await);
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=minute").await;
    assert_eq!(totals(&body), (4, expected));
}

#[tokio::test]
async fn usage_buckets_are_aligned_and_cover_the_range_asked() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = fh(&token);
    let key = app.create_key(&token, 1, "k").await;
    let starts = |body: &Value| -> Vec<String> {
        body["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["start"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "?bucket=minute&from=2026-01-01T00:00:59Z&to=2026-01-01T00:02:00Z",
            &[
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:02:00Z",
            ],
        ),
        (
            "?bucket=hour&from=2026-01-01T00:30:00Z&to=2026-01-01T02:10:00Z",
            &[
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z",
            ],
        ),
        // An offset is honoured: 23:00+02:00 is 21:00 UTC.
        (
            "?bucket=day&from=2026-01-01T23:00:00%2B02:00&to=2026-01-02T01:00:00Z",
            &["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
        ),
        // Unix seconds; `to` on a boundary opens that bucket.
        (
            "?bucket=hour&from=1767225600&to=1767229200",
            &["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"],
        ),
        (
            "?bucket=minute&from=1767225600&to=1767225600",
            &["2026-01-01T00:00:00Z"],
        ),
    ];
    for (q, want) in cases {
        let (s, body) = usage(&app, &auth, 1, &key.id, q).await;
        assert_eq!(s, 200, "{q}: {body}");
        assert_eq!(starts(&body), *want, "{q}");
        assert_eq!(totals(&body), (0, refused(&[])), "{q}");
    }
    // A range in the past leaves out what is counted now.
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (_, body) = usage(
        &app,
        &auth,
        1,
        &key.id,
        "?bucket=hour&from=1767225600&to=1767229200",
    )
    .await;
    assert_eq!(totals(&body).0, 0);
    // Defaults: an hour of minutes, a day of hours, 30 days, ending with
    // the bucket holding now.
    for (q, n) in [("?bucket=minute", 60), ("", 24), ("?bucket=day", 30)] {
        let (s, body) = usage(&app, &auth, 1, &key.id, q).await;
        assert_eq!(s, 200);
        assert_eq!(body["buckets"].as_array().unwrap().len(), n, "{q}");
        assert_eq!(totals(&body).0, 1, "{q}");
    }
}

#[tokio::test]
async fn usage_refuses_bad_parameters_with_invalid_request() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = fh(&token);
    let key = app.create_key(&token, 1, "k").await;
    for q in [
        "?bucket=week",
        "?bucket=",
        "?from=yesterday",
        "?to=2026-13-01T00:00:00Z",
        "?from=2026-01-01T00:00:00",
        "?from=-5",
        "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        // 1441 minutes, 1441 hours (`to`'s own bucket included): over the
        // bound.
        "?bucket=minute&from=1767225600&to=1767312000",
        "?bucket=hour&from=1767225600&to=1772409600",
    ] {
        let (s, body) = usage(&app, &auth, 1, &key.id, q).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{q}: {body}"
        );
    }
    // At the bound is fine.
    let (s, body) = usage(
        &app,
        &auth,
        1,
        &key.id,
        "?bucket=minute&from=1767225600&to=1767311940",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["buckets"].as_array().unwrap().len(), 1440);
}

#[tokio::test]
async fn usage_follows_the_rules_for_listing_keys() {
    let app = spawn_app().await;
    let user = app.add_user("user@example.com", "User", 1);
    let reader = app.add_user("reader@example.com", "Read Only", 1);
    let other_acct = app.admin(&["add-account", "--name", "Elsewhere"], &[]);
    app.add_user(
        "stranger@example.com",
        "Account Owner",
        other_acct.parse().unwrap(),
    );
    let owner_token = app.login().await;
    let owner_t = fh(&owner_token);
    let user_token = app.login_as("user@example.com", ADMIN_PASSWORD).await;
    let user_t = fh(&user_token);
    let reader_t = fh(&app.login_as("reader@example.com", ADMIN_PASSWORD).await);
    let stranger_t = fh(&app.login_as("stranger@example.com", ADMIN_PASSWORD).await);
    let owner_key = app.create_key(&owner_token, 1, "owner").await;
    let user_key = app.create_key(&user_token, user, "mine").await;

    // Own key: yes. The owner (Keys All Read): anyone's in the account.
    assert_eq!(usage(&app, &user_t, user, &user_key.id, "").await.0, 200);
    assert_eq!(usage(&app, &owner_t, user, &user_key.id, "").await.0, 200);
    // A User reading someone else's: refused, naming the permission.
    let (s, b) = usage(&app, &user_t, 1, &owner_key.id, "").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("permission_denied")),
        "{b}"
    );
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("API Keys All Read"),
        "{b}"
    );
    // Someone else's key under one's own id: not found.
    let (s, b) = usage(&app, &user_t, user, &owner_key.id, "").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");
    // Read Only: not even its own user's.
    assert_eq!(
        usage(&app, &reader_t, reader, &user_key.id, "").await.0,
        403
    );
    // Another account: the user is not found.
    let (s, b) = usage(&app, &stranger_t, user, &user_key.id, "").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");
    // An API key cannot read usage (password callers only, like the
    // keys routes).
    let (s, b) = app
        .psk(
            &user_key,
            "GET",
            &format!("/users/{user}/keys/{}/usage", user_key.id),
            b"",
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("api_key_not_allowed")),
        "{b}"
    );
    // No credential.
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/users/1/keys/{}/usage", owner_key.id),
            &[],
            vec![],
        )
        .await;
    assert_eq!(s, 401);
    // A deleted key: not found.
    let (s, _, _) = app
        .send(
            "DELETE",
            &format!("/users/{user}/keys/{}", user_key.id),
            &[("Authorization", &user_t)],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = usage(&app, &user_t, user, &user_key.id, "").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_time(t: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

/// `armor admin ARGS` on `app`'s data: (stdout, stderr), through a
/// terminal (`script`) when `tty`.
fn admin_run(app: &TestApp, args: &[&str], tty: bool) -> (String, String) {
    let mut cmd: Vec<String> = vec![armor_bin().into(), "admin".into(), "--data-dir".into()];
    cmd.push(app.data_dir().display().to_string());
    if let Some(url) = app.database_url() {
        cmd.extend(["--database-url".into(), url]);
    }
    cmd.extend(args.iter().map(|a| a.to_string()));
    let out = if tty {
        let line = cmd
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    } else {
        std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_usage_clean_up_deletes_what_is_older_than_kept_with_progress_only_on_a_terminal() {
    let mut app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "k").await;
    for _ in 0..2 {
        assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    }
    app.restart();
    let auth = fh(&app.login().await);

    // The defaults keep what was just counted; in a pipe, nothing on stderr.
    let (out, err) = admin_run(&app, &["clean-up-usage"], false);
    assert_eq!((out.trim(), err.as_str()), ("0", ""));
    // Minute buckets kept 0 hours: they go, the hour buckets stay. A
    // bucket goes when it started before now, and this minute's did not
    // if now is its first second: step past that second.
    while now().is_multiple_of(60) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (out, err) = admin_run(
        &app,
        &["clean-up-usage", "--usage-minute-retention-hours", "0"],
        false,
    );
    // (One row, or two should the calls have straddled a minute.)
    assert!(
        ["1", "2"].contains(&out.trim()) && err.is_empty(),
        "{out} {err}"
    );
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=minute").await;
    assert_eq!(totals(&body).0, 0, "{body}");
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=hour").await;
    assert_eq!(totals(&body).0, 2, "{body}");
    // On a terminal, the progress line is drawn (and the count printed).
    let (out, _) = admin_run(
        &app,
        &["clean-up-usage", "--usage-hour-retention-days", "0"],
        true,
    );
    assert!(out.contains("\r\x1b[2Kusage rows deleted: "), "{out:?}");
    assert!(out.contains(" (100%)"), "{out:?}");
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=hour").await;
    assert_eq!(totals(&body).0, 0, "{body}");
}

#[tokio::test]
async fn long_admin_commands_show_progress_on_a_terminal_and_stay_quiet_in_pipes() {
    let app = spawn_app().await;
    let out_file = app.data_dir().join("seeded.txt");
    let out_file = out_file.to_str().unwrap();
    let seed = [
        "seed-keys",
        "--user",
        "1",
        "--count",
        "20",
        "--out",
        out_file,
    ];
    let (out, err) = admin_run(&app, &seed, false);
    assert_eq!((out.trim(), err.as_str()), ("20", ""));
    let (out, _) = admin_run(&app, &seed, true);
    assert!(
        out.contains("\r\x1b[2Kkeys created: 20/20 (100%)"),
        "{out:?}"
    );
    let (out, err) = admin_run(&app, &["rotate-master-key"], false);
    assert!(
        out.contains("40 API-key secrets re-sealed") && err.is_empty(),
        "{out} {err}"
    );
    let (out, _) = admin_run(&app, &["rotate-master-key"], true);
    assert!(out.contains("\r\x1b[2Kre-sealed: 40"), "{out:?}");
    std::fs::remove_file(out_file).unwrap();
}

#[tokio::test]
async fn refusals_of_the_failed_attempt_limit_are_counted_as_rate_limited() {
    // Two refused attempts per address and key, then 429 before the
    // signature is checked.
    let app = spawn_app_with(&["--auth-failure-limit", "0.001:2"]).await;
    let token = app.login().await;
    let auth = fh(&token);
    let key = app.create_key(&token, 1, "limited").await;
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    for _ in 0..2 {
        assert_eq!(app.psk(&wrong, "GET", "/me", b"").await.0, 401);
    }
    let (s, b) = app.psk(&key, "GET", "/me", b"").await;
    assert_eq!((s, b["error"].as_str()), (429, Some("rate_limited")), "{b}");
    let (_, body) = usage(&app, &auth, 1, &key.id, "?bucket=day").await;
    assert_eq!(
        totals(&body),
        (0, refused(&[("invalid_signature", 2), ("rate_limited", 1)]))
    );
}

#[tokio::test]
async fn usage_counts_refusals_of_a_keys_restrictions_by_their_codes() {
    let app = spawn_app().await;
    let token = app.login().await;
    let fenced = key_with(
        &app,
        &token,
        json!({"name": "restricted", "allowedRoutes": ["GET /me"], "allowedIps": ["10.0.0.0/8"]}),
    )
    .await;
    let metered = key_with(
        &app,
        &token,
        json!({
            "name": "metered",
            "allowedRoutes": ["GET /me"],
            "rateLimit": {"limit": 2, "windowSeconds": 86_400},
        }),
    )
    .await;

    let (s, b) = app.psk(&fenced, "GET", "/me", b"").await;
    assert_eq!((s, b["error"].as_str()), (403, Some("ip_not_allowed")));
    for _ in 0..3 {
        app.psk(&metered, "GET", "/me", b"").await;
    }
    let (s, b) = app.psk(&metered, "GET", "/users", b"").await;
    assert_eq!((s, b["error"].as_str()), (403, Some("route_not_allowed")));

    let (s, body) = usage(&app, &fh(&token), 1, &fenced.id, "?bucket=day").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(totals(&body), (0, refused(&[("ip_not_allowed", 1)])));
    let (s, body) = usage(&app, &fh(&token), 1, &metered.id, "?bucket=day").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        totals(&body),
        (2, refused(&[("rate_limited", 1), ("route_not_allowed", 1)]))
    );
}

#[tokio::test]
async fn usage_counted_just_before_a_roll_is_kept() {
    let app = spawn_app().await;
    let token = app.login().await;
    let rolled = app.create_key(&token, 1, "rolled").await;
    for _ in 0..3 {
        assert_eq!(app.psk(&rolled, "GET", "/me", b"").await.0, 200);
    }
    // Within the write interval: the counts are still only in memory, in
    // the cache entry that the roll replaces.
    let (s, v) = app
        .post_json(
            &format!("/users/1/keys/{}/roll", rolled.id),
            json!({"graceSeconds": 60}),
            Some(&fh(&token)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    app.remember_secret(v["apiKey"].as_str().unwrap());
    let (s, body) = usage(&app, &fh(&token), 1, &rolled.id, "?bucket=day").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(totals(&body), (3, refused(&[])), "{body}");
}
