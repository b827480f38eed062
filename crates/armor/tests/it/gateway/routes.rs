//! With an upstream, armor's own paths stay armor's: no spelling or method
//! of a path in the route table, and nothing under `/portal`, is forwarded.

use armor_server::web::ROUTES;

use super::{gateway_with, signed};

#[tokio::test]
async fn no_spelling_or_method_of_armors_own_paths_reaches_the_upstream() {
    let (app, up, key) = gateway_with(&[]).await;
    let mut asked = Vec::new();
    for route in ROUTES {
        // An id no entity has: a handler may look it up, none changes.
        let path: Vec<&str> = route
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "x0none" } else { s })
            .collect();
        let path = path.join("/");
        let path = path.strip_suffix('/').unwrap_or(&path);
        for target in [
            path.to_owned(),
            path.to_ascii_uppercase(),
            format!("{path}/"),
        ] {
            // Its own method, and one no route has.
            for method in [route.method, "PATCH"] {
                let (s, _, body) = signed(&app, &key, method, &target, &[], b"").await;
                assert!(
                    !matches!(s, 500 | 502 | 504),
                    "{method} {target}: {s} {body}"
                );
                asked.push(format!("{method} {target}"));
            }
        }
    }
    for target in [
        "/portal",
        "/portal/",
        "/PORTAL/Login",
        "/portal/no/such/page/",
    ] {
        // Public, so the credentials go unread: handed to the gateway, it
        // would be refused (401) rather than forwarded.
        let (s, _, _) = signed(&app, &key, "GET", target, &[], b"").await;
        assert!(matches!(s, 200 | 303 | 404), "GET {target}: {s}");
        asked.push(format!("GET {target}"));
    }
    assert!(asked.len() > 200, "{}", asked.len());
    let forwarded: Vec<String> = up
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(forwarded.is_empty(), "forwarded: {forwarded:?}");
}
