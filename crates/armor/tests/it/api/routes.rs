//! API-key callers on the user-administration routes the vendor lists (and the key rename):
//! refused by the route's policy, under every spelling of the path.

use serde_json::Value;

use super::*;

/// The vendor's list, as (method, path with sample ids), plus the rename.
const RESTRICTED: &[(&str, &str)] = &[
    ("GET", "/users/1/keys"),
    (
        "DELETE",
        "/users/1/keys/20a37099-4a0b-432f-bf46-5fa690a0405c",
    ),
    ("POST", "/users/1/keys"),
    ("PUT", "/users/1/keys"),
    ("GET", "/users/1/ActivationCode"),
    ("POST", "/users/resetpassword"),
    ("POST", "/users/setpassword"),
    ("PUT", "/users/1"),
    ("POST", "/users/status"),
    ("POST", "/users/"),
    ("POST", "/users/1/invite"),
    ("GET", "/users/LockedOut/1/owner%40example.com"),
    ("POST", "/users/unlock/1/owner%40example.com"),
    ("DELETE", "/users/softDelete"),
    ("PUT", "/usersecurity/challengephrase"),
    ("GET", "/usersecurity/securityinformation/abc"),
    ("POST", "/usersecurity/securityinformation/abc"),
    ("POST", "/usersecurity/securityinformation/existing/abc"),
    ("GET", "/usersecurity/challengephrase/1"),
    ("POST", "/usersecurity/validatemfaphone"),
    ("POST", "/usersecurity/securityinformation/1/1"),
    ("POST", "/usersecurity/validatephoneapppin"),
];

/// Spellings of one path: case, doubled and dotted segments, encodings,
/// backslashes, trailing slash. Each is `(target, canonical)`: a canonical
/// spelling differs only in case or a trailing slash and routes like the
/// path itself; every other one must be refused with 400 before
/// authentication.
fn spellings(path: &str) -> Vec<(String, bool)> {
    // The last segment's first letter, percent-encoded.
    let encode_last_letter = |p: &str| {
        let start = p.rfind('/').map_or(0, |i| i + 1);
        match p[start..].find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => {
                let at = start + i;
                format!("{}%{:02X}{}", &p[..at], p.as_bytes()[at], &p[at + 1..])
            }
            None => format!("{p}%2E"),
        }
    };
    let mixed_case: String = path
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let trimmed = path.trim_end_matches('/');
    // The first segment ("/users" or "/usersecurity"), where the dotted,
    // doubled and encoded spellings go.
    let first = &path[..path[1..].find('/').map_or(path.len(), |i| i + 1)];
    let canonical = [
        path.to_owned(),
        path.to_ascii_uppercase(),
        path.to_ascii_lowercase(),
        mixed_case,
        format!("{trimmed}/"),
        format!("{}/", trimmed.to_ascii_uppercase()),
    ];
    let other = [
        path.replacen('/', "//", 1),
        format!("{trimmed}//"),
        path.replacen(first, &format!("{first}/."), 1),
        format!("{trimmed}/."),
        path.replacen(first, &format!("/x/..{first}"), 1),
        format!("{trimmed}/.."),
        path.replacen(first, &format!("{first}%2F"), 1),
        path.replacen(first, &format!("{first}%2f"), 1),
        path.replacen("/u", "/%75", 1),
        path.replacen("/u", "/%55", 1),
        encode_last_letter(path),
        path.replacen(first, &format!("{first}%5C"), 1),
        path.replacen(first, &format!("{first}%5c"), 1),
        format!("{first}\\{}", &path[first.len()..].trim_start_matches('/')),
        path.replacen('/', "\\", 1),
        path.replacen(first, &format!("{}/./", first.to_ascii_uppercase()), 1),
        path.replacen("s", "%73", 1),
        path.replacen(first, &format!("/%2E{first}"), 1),
        path.replacen(first, &format!("{first}/%2e%2e{first}"), 1),
        path.replacen(first, &format!("{first}/%2E%2E{first}"), 1),
        path.replacen(first, &format!("{first}/.%2E{first}"), 1),
    ];
    let mut out: Vec<(String, bool)> = Vec::new();
    for (t, c) in canonical
        .into_iter()
        .map(|t| (t, true))
        .chain(other.into_iter().map(|t| (t, false)))
    {
        if !out.iter().any(|(o, _)| *o == t) {
            out.push((t, c));
        }
    }
    out
}

#[tokio::test]
async fn api_keys_are_refused_on_every_restricted_route_and_spelling() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "probe").await;
    let mut tried = 0;
    let mut per_route = usize::MAX;
    for (method, path) in RESTRICTED {
        let all = spellings(path);
        per_route = per_route.min(all.len());
        for (target, canonical) in all {
            let body = br#"{"name":"x"}"#;
            let auth = sign(&key, method, &target, body, &fresh_nonce(), now());
            let (s, _, b) = app
                .send(
                    method,
                    &target,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    body.to_vec(),
                )
                .await;
            tried += 1;
            assert!(
                !(200..300).contains(&s),
                "{method} {target} succeeded with an API key: {b}"
            );
            if canonical {
                assert_eq!(
                    (s, b["error"].as_str()),
                    (403, Some("api_key_not_allowed")),
                    "{method} {target}: {b}"
                );
                continue;
            }
            // Non-canonical: 400 before authentication, with the key's
            // signature and without any credential alike.
            assert_eq!(s, 400, "{method} {target}: {b}");
            let (s2, _, b2) = app
                .send(
                    method,
                    &target,
                    &[("Content-Type", "application/json")],
                    body.to_vec(),
                )
                .await;
            assert_eq!(s2, 400, "{method} {target} (anonymous): {b2}");
            for b in [&b, &b2] {
                // A target the HTTP layer itself refuses has no JSON body.
                if b.is_object() {
                    assert_eq!(b["error"], "malformed_request_target", "{target}");
                }
            }
        }
    }
    assert!(per_route >= 20, "{per_route} spellings");
    assert!(tried >= RESTRICTED.len() * 20, "{tried}");
    // The same routes reach their handlers for a password caller: each
    // answers what its handler says to `{"name":"x"}` from the owner, never
    // api_key_not_allowed, a missing route (404 "route not found"), a 405
    // or a 5xx.
    let auth = format!("FH-AUTH {token}");
    assert_eq!(RESTRICTED.len(), PASSWORD_CALLER.len());
    for ((method, path), (status, code)) in RESTRICTED.iter().zip(PASSWORD_CALLER) {
        let (s, _, b) = app
            .send(
                method,
                path,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                br#"{"name":"x"}"#.to_vec(),
            )
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (*status, *code),
            "{method} {path}: {b}"
        );
        assert_ne!(b["error_description"], "route not found", "{method} {path}");
    }
}

/// What each route of [`RESTRICTED`], in order, answers the owner (FH-AUTH)
/// sending `{"name":"x"}`: its handler's own answer.
const PASSWORD_CALLER: &[(u16, Option<&str>)] = &[
    (200, None),                    // list keys
    (404, Some("not_found")),       // delete a key that is not there
    (200, None),                    // create a key named x
    (400, Some("invalid_request")), // rename: apiKeyId and newApiKeyName missing
    (409, Some("conflict")),        // activation code of an active user
    (400, Some("invalid_request")), // reset: email missing
    (400, Some("invalid_request")), // set password: code missing
    (200, None),                    // edit user 1: nothing to change
    (400, Some("invalid_request")), // status: userId missing
    (400, Some("invalid_request")), // create user: email missing
    (409, Some("conflict")),        // invite an active user
    (200, None),                    // locked out?
    (200, None),                    // unlock
    (400, Some("invalid_request")), // soft delete: userId or email missing
    (400, Some("invalid_request")), // challenge phrase missing
    (404, Some("not_found")),       // no security information under abc
    (400, Some("invalid_request")), // value missing
    (400, Some("invalid_request")), // value missing
    (200, None),                    // read one's challenge phrase
    (400, Some("invalid_request")), // phoneNumber missing
    (200, None),                    // one's security settings
    (200, None),                    // enrol an authenticator app
];

#[tokio::test]
async fn every_password_only_route_in_the_description_refuses_keys() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "walker").await;
    let (_, _, doc) = app.send("GET", "/openapi.json", &[], vec![]).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let policy = op["x-armor-policy"].as_str().unwrap();
            if policy != "password-only" && policy != "no-api-key" {
                continue;
            }
            let target = sample(path);
            let method = method.to_ascii_uppercase();
            let auth = sign(&key, &method, &target, b"", &fresh_nonce(), now());
            let (s, _, b) = app
                .send(&method, &target, &[("Authorization", &auth)], vec![])
                .await;
            assert_eq!(
                (s, b["error"].as_str()),
                (403, Some("api_key_not_allowed")),
                "{method} {target}: {b}"
            );
            checked += 1;
        }
    }
    // The vendor's 21 routes, the rename, logout and the audit log.
    assert!(checked >= 24, "{checked}");
    // And every route the vendor restricts is among them.
    for (method, path) in RESTRICTED {
        let found = doc["paths"].as_object().unwrap().iter().any(|(p, ops)| {
            matches_template(p, path)
                && ops
                    .get(method.to_ascii_lowercase())
                    .is_some_and(|op: &Value| {
                        matches!(
                            op["x-armor-policy"].as_str(),
                            Some("password-only" | "no-api-key")
                        )
                    })
        });
        assert!(
            found,
            "{method} {path} is not documented as refusing API keys"
        );
    }
}

#[tokio::test]
async fn every_route_in_the_description_is_served_and_other_methods_are_405() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = format!("FH-AUTH {token}");
    let (_, _, doc) = app.send("GET", "/openapi.json", &[], vec![]).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut served = 0;
    for (path, ops) in paths {
        let target = sample(path);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let listed = ops.get(method.to_ascii_lowercase()).is_some();
            // Logging out would end this test's token: a token of its own.
            let auth = if path == "/auth/logout" {
                format!("FH-AUTH {}", app.login().await)
            } else {
                auth.clone()
            };
            let (s, headers, b) = app
                .send(
                    method,
                    &target,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    b"{}".to_vec(),
                )
                .await;
            if listed {
                // Reaches its handler: neither the router's 404 nor a 405.
                assert!(
                    s != 405 && s < 500 && b["error_description"] != "route not found",
                    "{method} {target} is listed but not served: {s} {b}"
                );
                served += 1;
            } else {
                assert_eq!(
                    (s, b["error"].as_str(), b["Message"].as_str()),
                    (
                        405,
                        Some("method_not_allowed"),
                        Some("The requested resource does not support this method.")
                    ),
                    "{method} {target}: {b}"
                );
                assert_eq!(b["status"], 405, "{method} {target}");
                let allow = headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                for m in ops.as_object().unwrap().keys() {
                    assert!(
                        allow.contains(&m.to_ascii_uppercase()),
                        "{method} {target}: Allow {allow:?} lacks {m}"
                    );
                }
            }
        }
    }
    assert!(served >= 40, "{served}");
}

fn sample(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{email}" => "owner%40example.com",
            s if s.starts_with('{')
                && s.to_ascii_lowercase().contains("key")
                && s != "{referencekey}" =>
            {
                "20a37099-4a0b-432f-bf46-5fa690a0405c"
            }
            s if s.starts_with('{') => "1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| a.starts_with('{') || a.eq_ignore_ascii_case(b))
}

#[tokio::test]
async fn non_canonical_targets_are_refused_before_authentication() {
    let app = spawn_app().await;
    for target in [
        "/users//1/keys",
        "/users/./1",
        "/x/../me",
        "/m%65",
        "/users%2F1",
        "/a\\b",
    ] {
        let (s, _, b) = app.send("GET", target, &[], vec![]).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("malformed_request_target")),
            "{target}"
        );
    }
    // Case and a trailing slash route like the canonical path.
    let token = app.login().await;
    for target in ["/ME", "/me/", "/Me"] {
        let (s, _, _) = app
            .send(
                "GET",
                target,
                &[("Authorization", &format!("FH-AUTH {token}"))],
                vec![],
            )
            .await;
        assert_eq!(s, 200, "{target}");
    }
}

#[tokio::test]
async fn a_query_the_server_cannot_read_is_refused_with_the_error_body() {
    let app = spawn_app().await;
    let token = app.login().await;
    let auth = format!("FH-AUTH {token}");
    for target in [
        "/auditlog?user=9223372036854775808",
        "/auditlog?limit=ten",
        "/auditlog?since=1.5",
    ] {
        let (s, headers, b) = app
            .send("GET", target, &[("Authorization", &auth)], vec![])
            .await;
        assert_eq!(
            (s, b["error"].as_str(), b["status"].as_u64()),
            (400, Some("invalid_request"), Some(400)),
            "{target}: {b}"
        );
        assert_eq!(headers["content-type"], "application/json", "{target}");
    }
}

/// The table's policy and the handler's extractor say the same: every
/// route the description opens to any credential takes an API key.
#[tokio::test]
async fn every_route_open_to_any_credential_takes_an_api_key() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "any").await;
    let (_, _, doc) = app.send("GET", "/openapi.json", &[], vec![]).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["x-armor-policy"] != "any-credential" {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let target = sample(path);
            let body = if method == "GET" {
                vec![]
            } else {
                b"{}".to_vec()
            };
            let path_only = target.split('?').next().unwrap();
            let auth = sign(&key, &method, path_only, &body, &fresh_nonce(), now());
            let (s, _, b) = app
                .send(
                    &method,
                    &target,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    body,
                )
                .await;
            assert!(
                s != 401 && b["error"] != "api_key_not_allowed" && s < 500,
                "{method} {target} is open to any credential but refused a key: {s} {b}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
}

/// `HEAD` on a `GET` route is that route, answered without its body: the
/// same status and `Content-Length`, public where the `GET` is public.
#[tokio::test]
async fn head_is_answered_as_get_without_the_body() {
    let app = spawn_app().await;
    let token = app.login().await;
    let key = app.create_key(&token, 1, "head").await;
    let (s, get, body) = app.send("GET", "/ping", &[], vec![]).await;
    assert_eq!((s, &body["pong"]), (200, &Value::Bool(true)));
    let (s, head, body) = app.send("HEAD", "/PING/", &[], vec![]).await;
    assert_eq!((s, body), (200, Value::String(String::new())));
    assert_eq!(head.get("content-length"), get.get("content-length"));
    for method in ["GET", "HEAD"] {
        let auth = sign(&key, method, "/auth/whoami", b"", &fresh_nonce(), now());
        let (s, headers, body) = app
            .send(method, "/auth/whoami", &[("Authorization", &auth)], vec![])
            .await;
        assert_eq!(s, 200, "{method}: {body}");
        let len: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
        assert!(len > 0, "{method}");
        assert_eq!(body == Value::String(String::new()), method == "HEAD");
    }
    // Not public where the GET is not.
    let (s, _, body) = app.send("HEAD", "/me", &[], vec![]).await;
    assert_eq!((s, body), (401, Value::String(String::new())));
}

/// A route's `{x}` segment is read percent-decoded, and must then be
/// UTF-8: otherwise 400 with the error body, whatever the spelling.
#[tokio::test]
async fn a_path_segment_that_is_not_utf8_once_decoded_is_refused_with_the_error_body() {
    let app = spawn_app().await;
    let auth = format!("FH-AUTH {}", app.login().await);
    for target in ["/users/%FF", "/USERS/%ff/keys/"] {
        let (s, _, b) = app
            .send("GET", target, &[("Authorization", &auth)], vec![])
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("malformed_request_target")),
            "{target}: {b}"
        );
    }
}
