//! With an upstream, armor's own paths stay armor's: every spelling and
//! method of a path in the route table, and everything under `/portal`,
//! is answered by armor (a route of its table, or the portal) and never
//! forwarded.

use armor_server::web::{Policy, ROUTES};

use super::{gateway_with, signed};

#[tokio::test]
async fn no_spelling_or_method_of_armors_own_paths_reaches_the_upstream() {
    let (app, up, key) = gateway_with(&[]).await;
    let long = "l".repeat(130);
    let mut asked = 0;
    for route in ROUTES {
        // Placeholder values no entity has: a handler may look them up,
        // none changes anything. One is longer than the routing form's
        // stack buffer.
        for filler in ["x0none", "a;b", "%C3%A9", long.as_str()] {
            let path: Vec<&str> = route
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { filler } else { s })
                .collect();
            let path = path.join("/");
            let path = path.strip_suffix('/').unwrap_or(&path);
            for target in [
                path.to_owned(),
                path.to_ascii_uppercase(),
                format!("{path}/"),
            ] {
                // Its own method, and methods no route of it has.
                for method in [route.method, "PATCH", "OPTIONS", "HEAD"] {
                    let (s, _, body) = signed(&app, &key, method, &target, &[], b"").await;
                    let what = format!("{method} {target}: {s} {body}");
                    assert!(!matches!(s, 500 | 502 | 504), "{what}");
                    // Public, so its credentials go unread: handed to the
                    // gateway it would be refused, not answered.
                    if route.policy == Policy::Public && method == route.method {
                        assert_ne!(s, 401, "{what}");
                    }
                    asked += 1;
                }
            }
        }
    }
    for target in [
        "/portal",
        "/portal/",
        "/PORTAL/Login",
        "/portal/no/such/page/",
        "/portal/keys/x/roll/y",
    ] {
        let (s, h, _) = signed(&app, &key, "GET", target, &[], b"").await;
        assert!(matches!(s, 200 | 303 | 404), "GET {target}: {s}");
        // A page of the portal's, or its redirect to one.
        let page = h
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap());
        let redirect = h
            .get(reqwest::header::LOCATION)
            .map(|v| v.to_str().unwrap());
        assert!(
            page.is_some_and(|t| t.starts_with("text/html"))
                || redirect.is_some_and(|l| l.starts_with("/portal")),
            "GET {target}: {s} {page:?} {redirect:?}"
        );
        asked += 1;
    }
    assert!(asked > 500, "{asked}");
    let forwarded: Vec<String> = up
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(forwarded.is_empty(), "forwarded: {forwarded:?}");
}
