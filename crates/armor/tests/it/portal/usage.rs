//! A key's page and its usage chart in Chromium: the counts drawn match
//! what was sent, each period shows its buckets, the chart reads without
//! colour (a title per bar, a hatched pattern, a table) and holds no
//! inline style; another user's key is not found.

use super::*;

#[tokio::test]
async fn a_keys_page_charts_its_usage_in_a_real_browser() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "Chart me").await;
    for _ in 0..3 {
        assert_eq!(app.psk(&key, "GET", "/me", b"").await.0, 200);
    }
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    for _ in 0..2 {
        assert_eq!(app.psk(&wrong, "GET", "/me", b"").await.0, 401);
    }

    let b = Browser::start().await;
    sign_in(&b, &app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.goto(&format!("{}/portal/keys", app.url)).await;
    b.click(&format!("a.key-link[href='/portal/keys/{}']", key.id))
        .await;
    b.wait_path(&format!("/portal/keys/{}", key.id)).await;
    assert_eq!(b.text("#key-name").await, "Chart me");
    assert_eq!(b.text("#key-id").await, key.id);
    let totals = b.text("#usage-totals").await;
    assert_eq!(
        totals,
        "3 accepted, 2 refused (invalid_signature 2) in the last 24 hours."
    );
    assert_eq!(b.count("#usage-chart g.bucket").await, 24);
    // The bar of the hour the requests were made in (the last one with
    // any, should the page render in the next hour): its numbers in its
    // title and its data.
    let last = b
        .script(
            "const g = [...document.querySelectorAll('#usage-chart g.bucket')]
               .filter(g => g.dataset.accepted !== '0' || g.dataset.refused !== '0').pop();
             return [g.querySelector('title').textContent, g.dataset.accepted, g.dataset.refused,
                     g.querySelectorAll('.bar-ok').length, g.querySelectorAll('.bar-refused').length];",
        )
        .await;
    let title = last[0].as_str().unwrap();
    assert!(
        title.ends_with("UTC: 3 accepted, 2 refused (invalid_signature 2)"),
        "{title}"
    );
    assert_eq!(
        last.as_array().unwrap()[1..],
        [json!("3"), json!("2"), json!(1), json!(1)]
    );
    // Refused bars are hatched (a pattern, not only a colour); nothing on
    // the page uses a style attribute (the CSP forbids inline style).
    let fill = b
        .script("return document.querySelector('.bar-refused').getAttribute('fill');")
        .await;
    assert_eq!(fill, "url(#usage-hatch)");
    assert_eq!(
        b.script("return document.querySelectorAll('[style]').length;")
            .await,
        0
    );
    assert!(b
        .text(".chart-legend")
        .await
        .contains("Refused (hatched, above)"));
    b.script("document.querySelector('#usage').scrollIntoView();")
        .await;
    b.screenshot("13-key-usage-24h").await;
    // The numbers as a table.
    b.click("#usage-table-box summary").await;
    let table = b.text("#usage-table").await;
    assert!(table.contains("3 2 invalid_signature 2"), "{table}");
    b.screenshot("13-key-usage-table").await;

    b.click("#range-7d").await;
    b.wait_text("#usage-totals", |t| t.ends_with("in the last 7 days."))
        .await;
    assert_eq!(b.count("#usage-chart g.bucket").await, 168);
    b.script("document.querySelector('#usage').scrollIntoView();")
        .await;
    b.screenshot("14-key-usage-7d").await;
    b.click("#range-90d").await;
    let totals = b
        .wait_text("#usage-totals", |t| t.ends_with("in the last 90 days."))
        .await;
    assert!(totals.starts_with("3 accepted, 2 refused"), "{totals}");
    assert_eq!(b.count("#usage-chart g.bucket").await, 90);
    b.script("document.querySelector('#usage').scrollIntoView();")
        .await;
    b.screenshot("15-key-usage-90d").await;
    b.resize(390, 844).await;
    b.script("document.querySelector('#usage').scrollIntoView();")
        .await;
    b.screenshot("15-key-usage-90d-phone").await;
}

#[tokio::test]
async fn a_keys_page_is_refused_to_who_may_not_read_it_and_shows_nothing_of_it() {
    let app = spawn_app().await;
    let token = app.login().await;
    let owner_key = app.create_key(&token, 1, "owner's").await;
    app.add_user("user@example.com", "User", 1);
    let mut p = Portal::new(&app);
    let (s, _, _) = p.login("user@example.com", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    // The same rule as the API's key routes: a key of the caller's
    // account they may not read is forbidden, any other is not found.
    let (s, _, page) = p.get(&format!("/portal/keys/{}", owner_key.id)).await;
    assert_eq!(s, 403, "{page}");
    assert!(
        !page.contains("owner&#39;s") && !page.contains("owner's"),
        "{page}"
    );
    let (s, _, _) = p.get("/portal/keys/not-a-key").await;
    assert_eq!(s, 404);
    // The owner sees it; an unknown period is refused.
    let mut o = Portal::new(&app);
    o.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, _, page) = o.get(&format!("/portal/keys/{}", owner_key.id)).await;
    assert_eq!(s, 200);
    assert!(page.contains("0 accepted, 0 refused"), "{page}");
    assert!(page.contains("No requests in this period."), "{page}");
    let (s, _, _) = o
        .get(&format!("/portal/keys/{}?range=1y", owner_key.id))
        .await;
    assert_eq!(s, 400);
}
