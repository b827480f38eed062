//! Limits on the messages anyone can make the server send: reset mails
//! per address and per client address (the answer never changes), phone
//! codes per number and per user (429 `rate_limited` with Retry-After).

use serde_json::json;

use super::users::j;
use super::*;

/// The limits, as documented in docs/users.md.
const RESET_PER_ADDRESS: usize = 3;
const RESET_PER_CLIENT: usize = 20;
const PHONE_PER_NUMBER: usize = 3;
const PHONE_PER_USER: usize = 5;

fn messages_to(app: &TestApp, recipient: &str) -> usize {
    app.outbox()
        .iter()
        .filter(|m| m["recipient"] == recipient)
        .count()
}

async fn reset(app: &TestApp, email: &str) -> (u16, serde_json::Value) {
    j(
        app,
        "POST",
        "/users/resetpassword",
        json!({"email": email}),
        None,
    )
    .await
}

#[tokio::test]
async fn reset_mails_to_one_address_stop_at_the_limit_and_the_answer_stays_the_same() {
    let app = spawn_app().await;
    let first = reset(&app, ADMIN_EMAIL).await;
    assert_eq!(first.0, 200);
    for _ in 1..=RESET_PER_ADDRESS {
        // Also in another spelling of the address.
        assert_eq!(reset(&app, &ADMIN_EMAIL.to_uppercase()).await, first);
    }
    assert_eq!(messages_to(&app, ADMIN_EMAIL), RESET_PER_ADDRESS);
    // An unknown address answers the same, and another address still gets
    // its mail.
    assert_eq!(reset(&app, "nobody@example.com").await, first);
    app.add_user("other@example.com", "User", 1);
    assert_eq!(reset(&app, "other@example.com").await, first);
    assert_eq!(messages_to(&app, "other@example.com"), 1);
    // After a restart too (the count is in the database).
    let mut app = app;
    app.restart();
    assert_eq!(reset(&app, ADMIN_EMAIL).await, first);
    assert_eq!(messages_to(&app, ADMIN_EMAIL), RESET_PER_ADDRESS);
}

#[tokio::test]
async fn reset_mails_to_one_user_stop_at_the_limit_whatever_spelling_the_store_matches() {
    let app = spawn_app().await;
    // Spellings PostgreSQL's case-insensitive collation takes for the
    // address (an ignorable soft hyphen, fullwidth letters); SQLite
    // matches only the first, and sends no mail for the others.
    let (local, domain) = ADMIN_EMAIL.split_once('@').unwrap();
    let fullwidth: String = local
        .chars()
        .map(|c| char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap())
        .collect();
    let mut spellings = vec![ADMIN_EMAIL.to_owned(), format!("{fullwidth}@{domain}")];
    for i in 1..local.len() {
        spellings.push(format!("{}\u{ad}{}@{domain}", &local[..i], &local[i..]));
    }
    assert!(spellings.len() > RESET_PER_ADDRESS + 1);
    for email in &spellings {
        assert_eq!(reset(&app, email).await.0, 200);
    }
    let sent = messages_to(&app, ADMIN_EMAIL);
    assert!((1..=RESET_PER_ADDRESS).contains(&sent), "{sent} mails");
}

#[tokio::test]
async fn reset_requests_from_one_client_stop_at_the_limit_whatever_the_address() {
    let app = spawn_app().await;
    let first = reset(&app, "unknown-0@example.com").await;
    for i in 1..RESET_PER_CLIENT {
        assert_eq!(
            reset(&app, &format!("unknown-{i}@example.com")).await,
            first
        );
    }
    // The client used its requests on unknown addresses: a known one gets
    // the same answer and no mail.
    assert_eq!(reset(&app, ADMIN_EMAIL).await, first);
    assert_eq!(messages_to(&app, ADMIN_EMAIL), 0);
}

async fn phone_code(app: &TestApp, token: &str, phone: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/usersecurity/validatemfaphone", app.url))
        .header("Authorization", format!("FH-AUTH {token}"))
        .json(&json!({ "phoneNumber": phone }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn phone_codes_to_one_number_stop_at_the_limit_with_429() {
    let app = spawn_app().await;
    app.add_user("a@example.com", "User", 1);
    app.add_user("b@example.com", "User", 1);
    let a = app.login_as("a@example.com", ADMIN_PASSWORD).await;
    let b = app.login_as("b@example.com", ADMIN_PASSWORD).await;
    let target = "+442079460018";
    for i in 0..PHONE_PER_NUMBER {
        // Two users asking for the same number share its limit.
        let token = if i % 2 == 0 { &a } else { &b };
        assert_eq!(phone_code(&app, token, target).await.status().as_u16(), 200);
    }
    let r = phone_code(&app, &b, target).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3_600).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(messages_to(&app, target), PHONE_PER_NUMBER);
}

#[tokio::test]
async fn phone_codes_one_user_asks_for_stop_at_the_limit_with_429() {
    let app = spawn_app().await;
    app.add_user("a@example.com", "User", 1);
    let a = app.login_as("a@example.com", ADMIN_PASSWORD).await;
    for i in 0..PHONE_PER_USER {
        let r = phone_code(&app, &a, &format!("+4420794600{i:02}")).await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = phone_code(&app, &a, "+442079460099").await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(messages_to(&app, "+442079460099"), 0);
    assert_eq!(app.outbox().len(), PHONE_PER_USER);
}
