//! A key's restrictions hold in front of the upstream as they do on
//! armor's own routes: the same check, on the upstream's paths (compared
//! exactly as received).

use serde_json::{json, Value};

use super::{gateway_with, signed};
use crate::api::{Key, TestApp};

async fn restricted(app: &TestApp, fields: Value) -> Key {
    let token = app.login().await;
    let mut body = json!({"name": "gw restricted"});
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        b.extend(f.clone());
    }
    app.create_key_with(&token, 1, body).await
}

#[tokio::test]
async fn key_restrictions_apply_to_upstream_paths() {
    let (app, up, _) = gateway_with(&[]).await;
    let routes = restricted(
        &app,
        json!({"allowedRoutes": ["GET /vms/*", "POST /tickets"]}),
    )
    .await;
    for (method, path) in [("GET", "/vms/7"), ("POST", "/tickets")] {
        let (s, _, v) = signed(&app, &routes, method, path, &[], b"").await;
        assert_eq!(s, 200, "{method} {path}: {v}");
    }
    let forwarded = up.seen().len();
    for (method, path) in [
        ("GET", "/VMS/7"),
        ("GET", "/vms"),
        ("DELETE", "/vms/7"),
        ("GET", "/tickets"),
        ("POST", "/tickets/1"),
    ] {
        let (s, _, v) = signed(&app, &routes, method, path, &[], b"").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("route_not_allowed")),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        up.seen().len(),
        forwarded,
        "a refused request reached the upstream"
    );

    let elsewhere = restricted(
        &app,
        json!({"allowedIps": ["192.0.2.0/24", "2001:db8::/32"]}),
    )
    .await;
    let (s, _, v) = signed(&app, &elsewhere, "GET", "/vms/7", &[], b"").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("ip_not_allowed")),
        "{v}"
    );

    let limited = restricted(
        &app,
        json!({"rateLimit": {"limit": 1, "windowSeconds": 86_400}, "permissions": []}),
    )
    .await;
    let (s, _, _) = signed(&app, &limited, "GET", "/vms/7", &[], b"").await;
    assert_eq!(s, 200);
    // The key's permissions, narrowed, are what the upstream is told.
    assert_eq!(up.last().header("x-armor-permissions"), Some(""));
    let (s, h, v) = signed(&app, &limited, "GET", "/vms/7", &[], b"").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    assert_eq!(h["ratelimit-limit"], "1");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(h.contains_key("retry-after"));
    assert_eq!(up.seen().len(), forwarded + 1);
}

#[tokio::test]
async fn an_expired_key_is_refused_before_the_upstream() {
    let (app, up, _) = gateway_with(&[]).await;
    let token = app.login().await;
    let old = restricted(&app, json!({})).await;
    assert_eq!(signed(&app, &old, "GET", "/orders", &[], b"").await.0, 200);
    let (s, v) = app
        .post_json(
            &format!("/users/1/keys/{}/roll", old.id),
            json!({"graceSeconds": 0}),
            Some(&format!("FH-AUTH {token}")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    app.remember_secret(v["apiKey"].as_str().unwrap());
    let seen = up.seen().len();
    let (s, _, v) = signed(&app, &old, "GET", "/orders", &[], b"").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("key_expired")), "{v}");
    assert_eq!(up.seen().len(), seen);
}

#[tokio::test]
async fn a_route_prefix_cannot_be_left_with_path_parameters_or_double_encoding() {
    let (app, up, _) = gateway_with(&[]).await;
    let key = restricted(&app, json!({"allowedRoutes": ["GET /public/*"]})).await;
    let (s, _, v) = signed(&app, &key, "GET", "/public/page", &[], b"").await;
    assert_eq!(s, 200, "{v}");
    let forwarded = up.seen().len();
    // Each starts with the allowed prefix, and an upstream that reads
    // `..;` as `..` (servlet containers) or decodes twice would serve
    // /admin.
    for path in [
        "/public/..;/admin",
        "/public/..;jsessionid=x/admin",
        "/public/%252e%252e/admin",
        "/public/%252E%252E%252Fadmin",
    ] {
        let (s, _, v) = signed(&app, &key, "GET", path, &[], b"").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("malformed_request_target")),
            "{path}: {v}"
        );
    }
    assert_eq!(up.seen().len(), forwarded, "a refused path was forwarded");
}
