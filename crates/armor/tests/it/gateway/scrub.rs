//! What the gateway takes out of, and puts into, the headers it forwards:
//! identity headers in any spelling, armor's cookies both ways, and the
//! forwarding headers.

use super::{gateway_with, signed};

#[tokio::test]
async fn underscore_spellings_of_identity_headers_never_reach_the_upstream() {
    let (app, up, key) = gateway_with(&["--public-path", "/public"]).await;
    let spoof = [
        ("X_Armor_User_Id", "1"),
        ("X_Armor_Permissions", "Users Manage"),
        ("x-armor_account_id", "7"),
        ("X_Forwarded_For", "10.9.8.7"),
        ("X-Kept", "yes"),
    ];
    // Anonymous, on a public path: none of them arrive.
    let (s, _, body) = app.send("GET", "/public/x", &spoof, vec![]).await;
    assert_eq!(s, 200, "{body}");
    let seen = up.last();
    let underscored: Vec<_> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.contains('_'))
        .collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert!(
        seen.headers.iter().all(|(k, _)| !k.starts_with("x-armor")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-kept"), Some("yes"));

    // Signed: the real values, exactly, and nothing merged into them.
    let (s, _, body) = signed(&app, &key, "GET", "/orders", &spoof, b"").await;
    assert_eq!(s, 200, "{body}");
    let seen = up.last();
    assert!(
        seen.headers.iter().all(|(k, _)| !k.contains('_')),
        "{:?}",
        seen.headers
    );
    let all = |name: &str| -> Vec<&str> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(all("x-armor-user-id"), ["1"]);
    assert_eq!(all("x-armor-account-id"), ["1"]);
    assert_eq!(all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn armor_cookies_never_reach_the_upstream_nor_come_back_from_it() {
    let (app, up, key) = gateway_with(&["--public-path", "/public"]).await;
    let cookie = [(
        "Cookie",
        "app=1; armor_session=stolen-session; armor_account=1; b=2",
    )];
    let (s, _, body) = app.send("GET", "/public/x", &cookie, vec![]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(up.last().header("cookie"), Some("app=1; b=2"));
    let (s, _, body) = signed(&app, &key, "GET", "/orders", &cookie, b"").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(up.last().header("cookie"), Some("app=1; b=2"));
    // Only armor's cookie: no Cookie header at all.
    let only = [("Cookie", "armor_session=stolen-session")];
    let (s, _, _) = app.send("GET", "/public/x", &only, vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(up.last().header("cookie"), None);

    // The upstream cannot plant a portal session or account.
    for (target, signed_by) in [("/public/set-cookie", None), ("/set-cookie", Some(&key))] {
        let (s, h, _) = match signed_by {
            None => app.send("GET", target, &[], vec![]).await,
            Some(key) => signed(&app, key, "GET", target, &[], b"").await,
        };
        assert_eq!(s, 200, "{target}");
        let set: Vec<_> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(set, ["app=1; Path=/"], "{target}");
    }
}

#[tokio::test]
async fn forwarding_headers_are_the_gateways_unless_the_peer_is_a_trusted_proxy() {
    let claimed = [
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Real-IP", "6.6.6.6"),
    ];
    let (app, up, _) = gateway_with(&["--public-path", "/public"]).await;
    let (s, _, _) = app.send("GET", "/public/x", &claimed, vec![]).await;
    assert_eq!(s, 200);
    let seen = up.last();
    let host = app.url.trim_start_matches("http://");
    assert_eq!(
        seen.header("forwarded"),
        Some(format!("for=127.0.0.1;host=\"{host}\";proto=http").as_str())
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some(host));
    assert_eq!(seen.header("x-real-ip"), None);

    // Behind a trusted proxy: its values stand, this hop is appended.
    let (app, up, _) =
        gateway_with(&["--public-path", "/public", "--trusted-proxy", "127.0.0.0/8"]).await;
    let (s, _, _) = app.send("GET", "/public/x", &claimed, vec![]).await;
    assert_eq!(s, 200);
    let seen = up.last();
    let host = app.url.trim_start_matches("http://");
    assert_eq!(
        seen.header("forwarded"),
        Some(format!("for=6.6.6.6;proto=https, for=127.0.0.1;host=\"{host}\";proto=http").as_str())
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("evil.example"));
}

#[tokio::test]
async fn a_trusted_proxys_list_on_several_lines_reaches_the_upstream_whole() {
    let (app, up, _) =
        gateway_with(&["--public-path", "/public", "--trusted-proxy", "127.0.0.0/8"]).await;
    let lines = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7"),
    ];
    let (s, _, _) = app.send("GET", "/public/x", &lines, vec![]).await;
    assert_eq!(s, 200);
    let seen = up.last();
    let all = |name: &str| -> Vec<String> {
        let lines = seen.headers.iter().filter(|(k, _)| k == name);
        lines.map(|(_, v)| v.clone()).collect()
    };
    let host = app.url.trim_start_matches("http://");
    assert_eq!(all("x-forwarded-for"), ["6.6.6.6, 203.0.113.7, 127.0.0.1"]);
    assert_eq!(
        all("forwarded"),
        [format!(
            "for=6.6.6.6, for=203.0.113.7, for=127.0.0.1;host=\"{host}\";proto=http"
        )]
    );
}
