//! The new-key form's expiry and restrictions, the keys table's expiry and
//! status, and a key's page with Roll, in headless Chromium (screenshots
//! `20-…` to `26-…` in `target/portal-artifacts/`).

use super::webdriver::Browser;
use super::{sign_in, Key};
use crate::api::{spawn_app, ADMIN_EMAIL, ADMIN_PASSWORD};

#[tokio::test]
async fn a_restricted_key_is_made_shown_and_rolled_in_the_browser() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    sign_in(&b, &app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // The form: expiry in 30 days, only Users Read, two routes.
    b.goto(&format!("{}/portal/keys/new", app.url)).await;
    b.wait_path("/portal/keys/new").await;
    b.type_into("#key-name", "Reporting").await;
    b.click("#key-restrictions summary").await;
    b.click("#key-expiry option[value='2592000']").await;
    b.click("#perm-some").await;
    b.click("input[name=permission][value='Users Read']").await;
    b.type_into("#key-routes", "GET /users\nGET /me").await;
    b.type_into("#key-rate", "100").await;
    b.click("#key-rate-window option[value='60']").await;
    b.screenshot("20-restricted-key-form").await;
    b.click("#create-key").await;
    b.find("#key-created").await;
    let old = Key {
        id: b.text("#new-key-id").await,
        secret: b.text("#new-key-secret").await,
    };
    app.remember_secret(&old.secret);
    assert_eq!(app.psk(&old, "GET", "/users", b"").await.0, 200);
    let (s, v) = app.psk(&old, "GET", "/accounts", b"").await;
    assert_eq!((s, v["error"].as_str()), (403, Some("route_not_allowed")));
    let (_, v) = app.psk(&old, "GET", "/me", b"").await;
    assert!(v["error"].is_null(), "{v}");

    // The table: its expiry and status.
    b.click("#close").await;
    b.wait_path("/portal/keys").await;
    let row = format!("tr[data-key-id='{}']", old.id);
    let text = b.text(&row).await;
    assert!(text.contains("Active"), "{text}");
    // The day 30 days on (the key was made a moment ago: either side of
    // a midnight).
    let day = |t: u64| armor_server::clock::rfc3339(t + 30 * 86_400)[..10].to_owned();
    let now = crate::api::now();
    assert!(
        text.contains(&day(now)) || text.contains(&day(now - 120)),
        "the expiry date: {text}"
    );
    b.screenshot("21-keys-expiry-and-status").await;

    // The key's page shows its restrictions, and rolls it.
    b.click(&format!("{row} a.key-link")).await;
    b.wait_path(&format!("/portal/keys/{}", old.id)).await;
    assert!(b.text("#key-permissions").await.contains("Users Read"));
    assert!(b.text("#key-routes").await.contains("GET /me"));
    assert!(b.text("#key-rate").await.contains("100 requests per 60 s"));
    b.screenshot("22-key-page").await;
    b.resize(390, 844).await;
    b.screenshot("22-key-page-phone").await;
    b.resize(1280, 900).await;
    b.click("#roll-grace option[value='3600']").await;
    b.click("#roll-key").await;
    b.find("#key-created").await;
    assert!(b.text("#rolled-note").await.contains(&old.id));
    let new = Key {
        id: b.text("#new-key-id").await,
        secret: b.text("#new-key-secret").await,
    };
    app.remember_secret(&new.secret);
    assert_ne!(new.id, old.id);
    b.screenshot("23-rolled").await;
    // Both work during the hour of grace; the new one has the same rules.
    assert_eq!(app.psk(&old, "GET", "/users", b"").await.0, 200);
    assert_eq!(app.psk(&new, "GET", "/users", b"").await.0, 200);
    let (s, _) = app.psk(&new, "GET", "/accounts", b"").await;
    assert_eq!(s, 403);

    b.click("#close").await;
    b.wait_path("/portal/keys").await;
    let text = b.text(&row).await;
    assert!(text.contains("Rolled"), "{text}");
    b.screenshot("24-rolled-in-table").await;
    // A rolled key's page offers no second roll.
    b.goto(&format!("{}/portal/keys/{}", app.url, old.id)).await;
    b.find("#key-facts").await;
    assert_eq!(b.count("#roll-key").await, 0);

    // A bad range is refused on the form, naming it.
    b.goto(&format!("{}/portal/keys/new", app.url)).await;
    b.type_into("#key-name", "Bad range").await;
    b.click("#key-restrictions summary").await;
    b.type_into("#key-ips", "10.0.0.0/33").await;
    b.click("#create-key").await;
    let err = b.text("#key-error").await;
    assert!(err.contains("10.0.0.0/33"), "{err}");
    b.screenshot("25-bad-range").await;
}
