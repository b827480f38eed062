//! A token revoked through one node is refused by the other within a
//! second, though the other checks it from memory.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{cluster, fh, Cluster};
use crate::api::{TestApp, ADMIN_PASSWORD};

async fn me(app: &TestApp, token: &str) -> u16 {
    app.send("GET", "/me", &[("Authorization", &fh(token))], vec![])
        .await
        .0
}

/// A fresh user's token, used on node B (so that B caches it).
async fn cached_on_b(c: &Cluster, email: &str) -> (i64, String) {
    let uid: i64 = c
        .admin(
            &[
                "add-user",
                "--email",
                email,
                "--role",
                "User",
                "--account",
                "1",
            ],
            &[("ARMOR_NEW_USER_PASSWORD", ADMIN_PASSWORD)],
        )
        .parse()
        .unwrap();
    let token = c.a.login_as(email, ADMIN_PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(me(&c.b, &token).await, 200);
    }
    (uid, token)
}

/// The code in the newest waiting message to `recipient` (the outbox
/// opened with the shared master key).
fn code_sent_to(c: &Cluster, recipient: &str) -> String {
    let out = c.admin(&["outbox"], &[]);
    let m: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|m| m["recipient"] == recipient)
        .unwrap_or_else(|| panic!("no message to {recipient}: {out}"));
    let body = m["body"].as_str().unwrap();
    let at = body.find(" is ").unwrap() + 4;
    body[at..]
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

/// Polls node B until it refuses `token`; panics past one second.
async fn refused_by_b_within_a_second(c: &Cluster, token: &str, what: &str) {
    let start = Instant::now();
    loop {
        let s = me(&c.b, token).await;
        if s == 401 {
            eprintln!("{what} seen by node B after {:?}", start.elapsed());
            return;
        }
        assert_eq!(s, 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "node B still accepts the token a second after {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_token_revoked_through_one_node_is_refused_by_the_other_within_a_second() {
    let c = cluster().await;
    let owner = c.a.login().await;

    let (_, token) = cached_on_b(&c, "lou@example.com").await;
    let (s, b) =
        c.a.post_json("/auth/logout", json!({}), Some(&fh(&token)))
            .await;
    assert_eq!(s, 200, "{b}");
    refused_by_b_within_a_second(&c, &token, "a logout").await;

    let (_, token) = cached_on_b(&c, "pat@example.com").await;
    let (s, b) =
        c.a.post_json(
            "/users/resetpassword",
            json!({"email": "pat@example.com"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let code = code_sent_to(&c, "pat@example.com");
    let (s, b) =
        c.a.post_json(
            "/users/setpassword",
            json!({"code": code, "password": "a whole new passphrase"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    refused_by_b_within_a_second(&c, &token, "a new password").await;

    let (uid, token) = cached_on_b(&c, "dee@example.com").await;
    let (s, b) =
        c.a.post_json(
            "/users/status",
            json!({"userId": uid, "status": "disabled"}),
            Some(&fh(&owner)),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    refused_by_b_within_a_second(&c, &token, "disabling the user").await;
}
