//! The portal session is a credential of its own: not an FH-AUTH token in
//! either direction, scoped to the portal's path, and ended by sign-out,
//! disabling the user and a new password.

use reqwest::header::LOCATION;
use serde_json::{json, Value};

use super::{csrf_in, set_cookies, Portal};
use crate::api::{spawn_app, spawn_app_with, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};

/// The session cookie's value, as the browser keeps it.
fn session_of(p: &Portal) -> String {
    p.cookies
        .iter()
        .find(|(k, _)| k == "armor_session")
        .map(|(_, v)| v.clone())
        .expect("a session cookie")
}

/// `GET /me` with `Authorization: {scheme} {token}`.
async fn me_with(app: &TestApp, scheme: &str, token: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}/me", app.url))
        .header("Authorization", format!("{scheme} {token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Where `GET /portal/keys` leads: 200 when signed in, else the sign-in page.
async fn keys_page(p: &mut Portal) -> (u16, Option<String>) {
    let (s, h, _) = p.get("/portal/keys").await;
    let to = h.get(LOCATION).map(|v| v.to_str().unwrap().to_owned());
    (s, to)
}

#[tokio::test]
async fn the_portal_session_cookie_is_refused_as_an_api_token() {
    let app = spawn_app().await;
    let mut p = Portal::new(&app);
    let (s, _, _) = p.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    let session = session_of(&p);
    app.remember_secret(&session);
    assert_eq!(keys_page(&mut p).await, (200, None), "a live session");

    for scheme in ["FH-AUTH", "Bearer"] {
        let (s, body) = me_with(&app, scheme, &session).await;
        assert_eq!(s, 401, "{scheme}: {body}");
        assert_eq!(body["error"], "invalid_token", "{scheme}: {body}");
    }
    // Nor can it be reissued into a token.
    let (s, body) = app
        .post_json("/auth/token/reissue", json!({ "token": session }), None)
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    // The session still works in the portal, and a real token in the API.
    assert_eq!(keys_page(&mut p).await, (200, None));
    let token = app.login().await;
    assert_eq!(me_with(&app, "FH-AUTH", &token).await.0, 200);
}

#[tokio::test]
async fn an_api_token_in_the_session_cookie_is_no_session() {
    let app = spawn_app().await;
    let token = app.login().await;
    let mut p = Portal::new(&app);
    p.cookies.push(("armor_session".into(), token.clone()));
    let (s, to) = keys_page(&mut p).await;
    assert_eq!((s, to.as_deref()), (303, Some("/portal/login")));
    // The sign-in page shows its form instead of moving on.
    let mut p = Portal::new(&app);
    p.cookies.push(("armor_session".into(), token.clone()));
    let (s, _, page) = p.get("/portal/login").await;
    assert_eq!(s, 200);
    assert!(page.contains("id=\"sign-in\""));
    // The token itself is untouched.
    assert_eq!(me_with(&app, "FH-AUTH", &token).await.0, 200);
}

/// The `Path=` of each `Set-Cookie` for `name`.
fn cookie_paths(h: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    set_cookies(h)
        .iter()
        .filter(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            c.split(';')
                .map(str::trim)
                .find_map(|a| a.strip_prefix("Path="))
                .expect("a path")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn session_cookies_are_scoped_to_the_portal_path() {
    for args in [vec![], vec!["--upstream", "http://127.0.0.1:9"]] {
        let app = spawn_app_with(&args).await;
        let mut p = Portal::new(&app);
        let (s, h, _) = p.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(s, 303, "{args:?}");
        assert_eq!(cookie_paths(&h, "armor_session"), ["/portal"], "{args:?}");
        assert_eq!(cookie_paths(&h, "armor_account"), ["/portal"], "{args:?}");
        assert_eq!(keys_page(&mut p).await, (200, None), "{args:?}");
        let (_, _, page) = p.get("/portal/account").await;
        let csrf = csrf_in(&page);
        let (s, h, _) = p.post("/portal/logout", &[("_csrf", &csrf)]).await;
        assert_eq!(s, 303, "{args:?}");
        assert_eq!(cookie_paths(&h, "armor_session"), ["/portal"], "{args:?}");
        assert_eq!(cookie_paths(&h, "armor_account"), ["/portal"], "{args:?}");
    }
}

#[tokio::test]
async fn sign_out_disabling_and_a_new_password_end_portal_sessions() {
    let app = spawn_app().await;
    let admin = app.login().await;
    let email = "worker@example.com";
    let uid = app.add_user(email, "User", 1);
    let signed_in = (200, None);
    let to_login = (303, Some("/portal/login".to_owned()));

    // Sign-out: the old cookie no longer opens a page.
    let mut p = Portal::new(&app);
    p.login(email, ADMIN_PASSWORD).await;
    let old = p.cookies.clone();
    let (_, _, page) = p.get("/portal/keys").await;
    p.post("/portal/logout", &[("_csrf", &csrf_in(&page))])
        .await;
    p.cookies = old;
    assert_eq!(keys_page(&mut p).await, to_login);

    // Disabling ends the session; enabling does not bring it back.
    let mut p = Portal::new(&app);
    p.login(email, ADMIN_PASSWORD).await;
    let cookies = p.cookies.clone();
    assert_eq!(keys_page(&mut p).await, signed_in);
    let status = |enabled: bool| json!({"userId": uid, "enabled": enabled});
    let auth = format!("FH-AUTH {admin}");
    let (s, b) = app
        .post_json("/users/status", status(false), Some(&auth))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys_page(&mut p).await, to_login);
    let (s, b) = app
        .post_json("/users/status", status(true), Some(&auth))
        .await;
    assert_eq!(s, 200, "{b}");
    p.cookies = cookies;
    assert_eq!(keys_page(&mut p).await, to_login);

    // A new password (by reset) ends every session.
    let mut p = Portal::new(&app);
    p.login(email, ADMIN_PASSWORD).await;
    assert_eq!(keys_page(&mut p).await, signed_in);
    let (s, _) = app
        .post_json("/users/resetpassword", json!({ "email": email }), None)
        .await;
    assert_eq!(s, 200);
    let code = app.code_sent_to(email);
    let (s, b) = app
        .post_json(
            "/users/setpassword",
            json!({"resetCode": code, "password": "a whole new passphrase"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys_page(&mut p).await, to_login);
}
