//! FH-AUTH tokens are checked from memory once used: every way a token
//! ends refuses it at the very next request, cached or not.

use serde_json::{json, Value};

use super::*;

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    let (s, _, b) = app
        .send(
            "GET",
            "/me",
            &[("Authorization", &format!("FH-AUTH {token}"))],
            vec![],
        )
        .await;
    (s, b)
}

/// A token of a fresh user, used twice (so that it is cached).
async fn cached_token(app: &TestApp, email: &str) -> String {
    app.add_user(email, "User", 1);
    let token = app.login_as(email, ADMIN_PASSWORD).await;
    for _ in 0..2 {
        let (s, b) = me(app, &token).await;
        assert_eq!(s, 200, "{b}");
    }
    token
}

fn refused(answer: (u16, Value)) {
    let (s, b) = answer;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_token")),
        "{b}"
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_after_logout_and_reissue() {
    let app = spawn_app().await;
    let token = cached_token(&app, "lou@example.com").await;
    let (s, b) = app
        .post_json("/auth/logout", json!({}), Some(&format!("FH-AUTH {token}")))
        .await;
    assert_eq!(s, 200, "{b}");
    refused(me(&app, &token).await);

    let token = app.login_as("lou@example.com", ADMIN_PASSWORD).await;
    assert_eq!(me(&app, &token).await.0, 200);
    let (s, fresh) = app
        .post_json("/auth/token/reissue", json!({"token": token}), None)
        .await;
    assert_eq!(s, 200, "{fresh}");
    refused(me(&app, &token).await);
    assert_eq!(
        me(&app, fresh["access_token"].as_str().unwrap()).await.0,
        200
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_after_a_new_password() {
    let app = spawn_app().await;
    let token = cached_token(&app, "pat@example.com").await;
    let (s, b) = app
        .post_json(
            "/users/resetpassword",
            json!({"email": "pat@example.com"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let code = app.code_sent_to("pat@example.com");
    let (s, b) = app
        .post_json(
            "/users/setpassword",
            json!({"code": code, "password": "a whole new passphrase"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    refused(me(&app, &token).await);
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_after_disable_and_delete() {
    let app = spawn_app().await;
    let owner = format!("FH-AUTH {}", app.login().await);
    let token = cached_token(&app, "dee@example.com").await;
    let (_, me_body) = me(&app, &token).await;
    let uid = me_body["user"]["links"]["userId"].as_i64().unwrap();
    let (s, b) = app
        .post_json(
            "/users/status",
            json!({"userId": uid, "status": "disabled"}),
            Some(&owner),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    refused(me(&app, &token).await);
    // Enabled again: the token, never revoked, works again.
    let (s, b) = app
        .post_json(
            "/users/status",
            json!({"userId": uid, "status": "active"}),
            Some(&owner),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(me(&app, &token).await.0, 200);

    let (s, _, b) = app
        .send(
            "DELETE",
            "/users/softDelete",
            &[
                ("Authorization", &owner),
                ("Content-Type", "application/json"),
            ],
            json!({"userId": uid}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    refused(me(&app, &token).await);
}
