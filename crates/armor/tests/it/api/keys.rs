//! The keys API (the vendor's walkthrough, steps 1–8): shapes, permissions per role.

use serde_json::json;

use super::*;

fn fh(token: &str) -> String {
    format!("FH-AUTH {token}")
}

#[tokio::test]
async fn create_list_rename_delete_in_the_vendor_shape() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = fh(&token);
    let (s, created) = app
        .post_json(
            "/users/1/keys",
            json!({"name": "ci deploy", "userId": 1}),
            Some(&auth),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    let secret = created["apiKey"].as_str().unwrap();
    assert!(uuid_like(id), "{id}");
    assert!(
        secret.starts_with("apsk_") && secret.len() >= 5 + 43,
        "{secret}"
    );
    assert_eq!(created["name"], "ci deploy");
    assert!(created["createdDate"].as_str().unwrap().ends_with('Z'));

    let (s, _, list) = app
        .send("GET", "/users/1/keys", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(s, 200);
    let item = &list[0];
    assert_eq!(item["id"], id);
    assert_eq!(item["name"], "ci deploy");
    assert_eq!(item["keyStatus"], "Active");
    assert!(item["lastUsed"].is_null());
    assert!(
        !list.to_string().contains(secret),
        "the listing shows the secret"
    );

    // lastUsed appears after a signed call (batched, but visible at once).
    let key = Key {
        id: id.into(),
        secret: secret.into(),
    };
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    let (_, _, list) = app
        .send("GET", "/users/1/keys", &[("Authorization", &auth)], vec![])
        .await;
    assert!(list[0]["lastUsed"].is_string(), "{list}");

    let rename = json!({"apiKeyId": id, "prevApiKeyName": "ci deploy", "newApiKeyName": "ci"});
    let resp = app
        .http
        .put(format!("{}/users/1/keys", app.url))
        .header("Authorization", &auth)
        .json(&rename)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let wrong_prev = json!({"apiKeyId": id, "prevApiKeyName": "nope", "newApiKeyName": "x"});
    let resp = app
        .http
        .put(format!("{}/users/1/keys", app.url))
        .header("Authorization", &auth)
        .json(&wrong_prev)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);

    let (s, _, b) = app
        .send(
            "DELETE",
            &format!("/users/1/keys/{id}"),
            &[("Authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!((s, b), (200, json!(true)));
    assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 401);
    let (s, _, _) = app
        .send(
            "DELETE",
            &format!("/users/1/keys/{id}"),
            &[("Authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!(s, 404);
    let (_, _, list) = app
        .send("GET", "/users/1/keys", &[("Authorization", &auth)], vec![])
        .await;
    assert_eq!(list, json!([]));

    // Bad names.
    for name in [
        json!(""),
        json!("   "),
        json!("x".repeat(101)),
        json!("a\u{0}b"),
    ] {
        let (s, b) = app
            .post_json("/users/1/keys", json!({"name": name}), Some(&auth))
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_request")),
            "{name}"
        );
    }
    let (s, _) = app
        .post_json(
            "/users/1/keys",
            json!({"name": "x", "userId": 2}),
            Some(&auth),
        )
        .await;
    assert_eq!(s, 400);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
        && s.matches('-').count() == 4
}

#[tokio::test]
async fn permissions_of_each_built_in_role() {
    let app = spawn_app().await;
    let user = app.add_user("user@example.com", "User", 1);
    let reader = app.add_user("reader@example.com", "Read Only", 1);
    let other_acct = app.admin(&["add-account", "--name", "Elsewhere"], &[]);
    let stranger = app.add_user(
        "stranger@example.com",
        "Account Owner",
        other_acct.parse().unwrap(),
    );

    let owner_t = fh(&app.login().await);
    let user_t = fh(&app.login_as("user@example.com", ADMIN_PASSWORD).await);
    let reader_t = fh(&app.login_as("reader@example.com", ADMIN_PASSWORD).await);
    let stranger_t = fh(&app.login_as("stranger@example.com", ADMIN_PASSWORD).await);

    // User: self-manage only.
    let (s, ukey) = app
        .post_json(
            &format!("/users/{user}/keys"),
            json!({"name": "u"}),
            Some(&user_t),
        )
        .await;
    assert_eq!(s, 200, "{ukey}");
    let ukey_id = ukey["id"].as_str().unwrap().to_owned();
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/users/{user}/keys"),
            &[("Authorization", &user_t)],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, b) = app
        .send(
            "GET",
            "/users/1/keys",
            &[("Authorization", &user_t)],
            vec![],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("permission_denied")));
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("API Keys All Read"),
        "{b}"
    );
    let owner_key = app.create_key(&owner_t[8..], 1, "owner").await;
    let (s, _, b) = app
        .send(
            "DELETE",
            &format!("/users/1/keys/{}", owner_key.id),
            &[("Authorization", &user_t)],
            vec![],
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("permission_denied")));
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("API Keys All Delete"),
        "{b}"
    );

    // Read Only: nothing on keys, not even its own.
    let (s, b) = app
        .post_json(
            &format!("/users/{reader}/keys"),
            json!({"name": "r"}),
            Some(&reader_t),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("permission_denied")));
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("API Keys Self Manage"),
        "{b}"
    );
    let (s, _, _) = app
        .send(
            "GET",
            &format!("/users/{reader}/keys"),
            &[("Authorization", &reader_t)],
            vec![],
        )
        .await;
    assert_eq!(s, 403);

    // Owner: reads and deletes anyone's keys in the account, creates only its own.
    let (s, _, list) = app
        .send(
            "GET",
            &format!("/users/{user}/keys"),
            &[("Authorization", &owner_t)],
            vec![],
        )
        .await;
    assert_eq!((s, list[0]["id"].as_str()), (200, Some(ukey_id.as_str())));
    let (s, b) = app
        .post_json(
            &format!("/users/{user}/keys"),
            json!({"name": "for-you"}),
            Some(&owner_t),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("permission_denied")));
    let (s, _, _) = app
        .send(
            "DELETE",
            &format!("/users/{user}/keys/{ukey_id}"),
            &[("Authorization", &owner_t)],
            vec![],
        )
        .await;
    assert_eq!(s, 200);

    // Another account's owner: our users are not found.
    for (m, p) in [
        ("GET", format!("/users/{user}/keys")),
        ("GET", "/users/1/keys".into()),
        ("DELETE", format!("/users/1/keys/{}", owner_key.id)),
    ] {
        let (s, _, _) = app
            .send(m, &p, &[("Authorization", &stranger_t)], vec![])
            .await;
        assert_eq!(s, 404, "{m} {p}");
    }
    let _ = stranger;
}
