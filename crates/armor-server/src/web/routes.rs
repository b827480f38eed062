//! The route table: every route of the API, once. [`ROUTES`] is what the
//! front layer dispatches on ([`find`]: one match per request gives the
//! route, its `{x}` segments and who may call it), declares who may call
//! each route ([`Policy`], read before authentication), tells the gateway
//! which paths are armor's ([`is_armor_route`], handed to it at
//! start-up), and generates `/openapi.json` and `/docs`
//! ([`super::openapi`]) with its bodies' schemas ([`super::schema`]).
//!
//! The portal's HTML pages are not API routes: they sign in with their own
//! cookie and CSRF tokens, are served at `/` and under `/portal`, and are
//! registered by [`crate::portal::router`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use super::auth::RouteState;
use super::error::ApiError;
use super::path::{routing_form_in, segments, trimmed};
use super::schema::name as s;
use super::{handlers as h, openapi};
use crate::error::Error;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No credential needed.
    Public,
    /// Any credential: FH-AUTH, Bearer or ARMOR-PSK.
    Caller,
    /// FH-AUTH or Bearer only; API keys get 403 `api_key_not_allowed`.
    PasswordOnly,
    /// Anonymous or password; API keys get 403.
    NoApiKey,
}

/// What a route's 200 answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// JSON, with this component schema.
    Json(&'static str),
    /// Not JSON: this media type.
    Other(&'static str),
}

/// One route of the API.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The vendor's spelling; matching ignores case and a trailing slash.
    pub path: &'static str,
    pub policy: Policy,
    pub summary: &'static str,
    /// The component schema of the JSON body the route reads, if any.
    pub request: Option<&'static str>,
    pub reply: Reply,
    /// Calls the handler.
    pub(super) call: Call,
}

/// A route's handler, called with the request and its state.
pub(super) type Call = fn(Request, RouteState) -> Pin<Box<dyn Future<Output = Response> + Send>>;

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

use Policy::{Caller as C, NoApiKey as N, PasswordOnly as P, Public as O};
use Reply::{Json as J, Other};

macro_rules! route {
    ($method:ident $path:literal, $policy:expr, $handler:path,
     in: $req:expr, out: $reply:expr, $summary:literal) => {
        Route {
            method: stringify!($method),
            path: $path,
            policy: $policy,
            summary: $summary,
            request: $req,
            reply: $reply,
            call: |req, state| axum::handler::Handler::call($handler, req, state),
        }
    };
}

/// Every route the API answers.
pub const ROUTES: &[Route] = &[
    route!(GET "/health", O, h::health, in: None, out: J(s::HEALTH),
        "200 once the store answers, 503 otherwise"),
    route!(GET "/ping", O, h::ping, in: None, out: J(s::PONG),
        "A fixed answer, touching nothing: liveness, and the benchmarks' baseline"),
    route!(GET "/metrics", O, h::metrics, in: None, out: Other("text/plain"),
        "Prometheus text metrics (404 when served on a listener of their own)"),
    route!(GET "/openapi.json", O, openapi::json, in: None, out: J(s::OPENAPI),
        "This description"),
    route!(GET "/docs", O, openapi::docs, in: None, out: Other("text/html"),
        "The API reference, rendered"),
    route!(POST "/auth/authorize", O, h::authorize,
        in: Some(s::AUTHORIZE_REQUEST), out: J(s::AUTHORIZE_RESPONSE),
        "Password login step 1: a single-use code"),
    route!(POST "/auth/token", O, h::token,
        in: Some(s::TOKEN_REQUEST), out: J(s::TOKEN),
        "Password login step 2: an FH-AUTH token"),
    route!(POST "/auth/token/reissue", O, h::reissue,
        in: Some(s::REISSUE_REQUEST), out: J(s::TOKEN),
        "A fresh token for a valid one, which is revoked; same absolute expiry"),
    route!(POST "/auth/logout", P, h::logout, in: None, out: J(s::DONE),
        "Revoke the caller's token"),
    route!(GET "/auth/whoami", C, h::whoami, in: None, out: J(s::WHOAMI),
        "Who the server takes the caller to be, and what it verified"),
    route!(POST "/auth/whoami", C, h::whoami, in: None, out: J(s::WHOAMI),
        "As GET, for a request with a body (any bytes): its length and SHA-256"),
    route!(GET "/me", C, h::me, in: None, out: J(s::ME),
        "The caller, their accounts and permissions"),
    route!(GET "/permissions", C, h::permissions, in: None, out: J(s::PERMISSIONS),
        "The caller's permissions in the account"),
    route!(GET "/accounts", C, h::accounts, in: None, out: J(s::ACCOUNTS),
        "Accounts the caller belongs to"),
    route!(GET "/accounts/{id}", C, h::account, in: None, out: J(s::ACCOUNT),
        "One account the caller belongs to"),
    route!(GET "/users", C, h::users, in: None, out: J(s::USERS),
        "Users of the account (Users Read)"),
    route!(GET "/users/{id}", C, h::user, in: None, out: J(s::USER),
        "One user of the account (self, or Users Read)"),
    route!(GET "/users/{id}/keys", P, h::list_keys, in: None, out: J(s::API_KEYS),
        "List API keys (never the secret)"),
    route!(POST "/users/{id}/keys", P, h::create_key,
        in: Some(s::CREATE_KEY_REQUEST), out: J(s::NEW_API_KEY),
        "Create an API key: the only time the secret is shown"),
    route!(PUT "/users/{id}/keys", P, h::rename_key,
        in: Some(s::RENAME_KEY_REQUEST), out: J(s::API_KEY),
        "Rename an API key"),
    route!(DELETE "/users/{id}/keys/{key}", P, h::delete_key, in: None, out: J(s::DONE),
        "Delete an API key; it stops working at once"),
    route!(POST "/users/{id}/keys/{key}/roll", P, h::roll_key,
        in: Some(s::ROLL_KEY_REQUEST), out: J(s::NEW_API_KEY),
        "Roll an API key: a new key with the same name and restrictions; the old one works for graceSeconds more"),
    route!(GET "/users/{id}/keys/{key}/usage", P, h::key_usage, in: None, out: J(s::KEY_USAGE),
        "A key's requests per minute, hour or day: accepted, and refused by error code"),
    route!(GET "/users/{id}/ActivationCode", P, h::activation_code,
        in: None, out: J(s::ACTIVATION_CODE),
        "A fresh activation code of an invited user, to read out (Users Manage)"),
    route!(POST "/users/resetpassword", N, h::reset_password,
        in: Some(s::RESET_REQUEST), out: J(s::RESET_RESPONSE),
        "Start a password reset by email (same answer for any address)"),
    route!(POST "/users/setpassword", N, h::set_password,
        in: Some(s::SET_PASSWORD_REQUEST), out: J(s::DONE),
        "Set a password with an activation or reset code (single-use)"),
    route!(PUT "/users/{id}", P, h::update_user,
        in: Some(s::USER_REQUEST), out: J(s::USER),
        "Edit a user's names, email and role (Users Manage; names: self)"),
    route!(POST "/users/status", P, h::user_status,
        in: Some(s::STATUS_REQUEST), out: J(s::STATUS_RESPONSE),
        "Enable or disable a user (Users Manage)"),
    route!(POST "/users/", P, h::create_user,
        in: Some(s::NEW_USER_REQUEST), out: J(s::USER),
        "Create a user, invited, and send the invitation (Users Manage)"),
    route!(POST "/users/{id}/invite", P, h::invite_user, in: None, out: J(s::DONE),
        "(Re)send an invitation with a fresh code (Users Manage)"),
    route!(GET "/users/LockedOut/{accountId}/{email}", P, h::locked_out,
        in: None, out: J(s::LOCK_STATE),
        "Whether a login is locked out, and until when (Users Read)"),
    route!(POST "/users/unlock/{accountId}/{email}", P, h::unlock,
        in: None, out: J(s::UNLOCKED),
        "Unlock a login (Users Manage)"),
    route!(DELETE "/users/softDelete", P, h::soft_delete,
        in: Some(s::SOFT_DELETE_REQUEST), out: J(s::DONE),
        "Soft-delete a user: keys deleted, tokens revoked (Users Manage)"),
    route!(PUT "/usersecurity/challengephrase", P, h::set_challenge_phrase,
        in: Some(s::CHALLENGE_REQUEST), out: J(s::DONE),
        "Set one's challenge phrase (another's: Users Manage)"),
    route!(GET "/usersecurity/challengephrase/{userId}", P, h::challenge_phrase,
        in: None, out: J(s::CHALLENGE_RESPONSE),
        "Read a challenge phrase (self, or Users Manage)"),
    route!(GET "/usersecurity/securityinformation/{referencekey}", P, h::security_info,
        in: None, out: J(s::INFO),
        "Read one's security information under a reference key"),
    route!(POST "/usersecurity/securityinformation/{referencekey}", P, h::add_security_info,
        in: Some(s::INFO_REQUEST), out: J(s::INFO),
        "Add security information under a new reference key"),
    route!(POST "/usersecurity/securityinformation/existing/{referencekey}", P,
        h::update_security_info, in: Some(s::INFO_REQUEST), out: J(s::INFO),
        "Update existing security information"),
    route!(POST "/usersecurity/securityinformation/{accountId}/{userId}", P, h::user_security,
        in: Some(s::USER_SECURITY_REQUEST), out: J(s::USER_SECURITY),
        "A user's security settings; clearSecondFactors resets MFA (Users Manage)"),
    route!(POST "/usersecurity/validatemfaphone", P, h::validate_mfa_phone,
        in: Some(s::PHONE_REQUEST), out: J(s::PHONE_RESPONSE),
        "Send a code to a phone number, or verify it: the phone becomes a second factor"),
    route!(POST "/usersecurity/validatephoneapppin", P, h::validate_app_pin,
        in: Some(s::APP_PIN_REQUEST), out: J(s::APP_PIN_RESPONSE),
        "Enrol an authenticator app (TOTP, otpauth URI), or verify its code"),
    route!(GET "/auditlog", P, h::audit_log, in: None, out: J(s::AUDIT_ENTRIES),
        "The account's audit log, filtered by user, event, since, until; paged by before (Audit Log Read)"),
];

/// Most segments a route's path has, and most `{x}` segments (a test
/// checks both): a longer path is none of the routes.
const MAX_SEGMENTS: usize = 16;
const MAX_PARAMS: usize = 2;

/// Where a matched route's `{x}` segments are in the path it was matched
/// on, in order: byte ranges, read (and percent-decoded) by [`Path`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Params {
    at: [(usize, usize); MAX_PARAMS],
    n: usize,
}

/// What the table holds for a request's method and path.
#[derive(Debug)]
pub enum Found {
    /// This route, with its `{x}` segments. A `GET` route takes `HEAD`
    /// too, unless the path has a `HEAD` route of its own.
    Route(&'static Route, Params),
    /// A path of the table, not on this method: 405, with this `Allow`.
    OtherMethod(&'static HeaderValue),
    /// None of the table's paths.
    Nothing,
}

/// The routes of one path, as the matcher reads them.
struct Group {
    /// The path's segments, lowercase; `None` for a `{x}`.
    pattern: Vec<Option<String>>,
    routes: Vec<&'static Route>,
    /// The methods the path takes, for a 405.
    allow: HeaderValue,
}

/// [`ROUTES`] grouped by path, as the matcher reads them. A path without
/// a `{x}` is found by its routing form; the others are kept by number of
/// segments, the more specific first: where two paths could both match,
/// the first segment where they differ is a literal in the one taken
/// (`/users/status` before `/users/{id}`), as a router's static segments
/// win over its parameters.
struct Table {
    groups: Vec<Group>,
    exact: HashMap<String, usize, foldhash::fast::RandomState>,
    by_len: Vec<Vec<usize>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut groups: Vec<Group> = Vec::new();
        for r in ROUTES {
            let pattern: Vec<Option<String>> = segments(trimmed(r.path))
                .map(|seg| {
                    let param = seg.starts_with('{') && seg.ends_with('}');
                    (!param).then(|| seg.to_ascii_lowercase())
                })
                .collect();
            match groups.iter_mut().find(|g| g.pattern == pattern) {
                Some(g) => g.routes.push(r),
                None => groups.push(Group {
                    pattern,
                    routes: vec![r],
                    allow: HeaderValue::from_static(""),
                }),
            }
        }
        let mut exact = HashMap::default();
        let mut by_len: Vec<Vec<usize>> = Vec::new();
        for (i, g) in groups.iter_mut().enumerate() {
            let mut methods: Vec<&str> = Vec::new();
            for r in &g.routes {
                methods.push(r.method);
                if r.method == "GET" && !g.routes.iter().any(|o| o.method == "HEAD") {
                    methods.push("HEAD");
                }
            }
            // Method names are tokens, always a valid value (a test reads
            // them back).
            let allow = HeaderValue::from_str(&methods.join(","));
            g.allow = allow.unwrap_or(HeaderValue::from_static(""));
            let literal: Option<Vec<&str>> = g.pattern.iter().map(Option::as_deref).collect();
            match literal {
                Some(segs) => {
                    exact.insert(segs.join("/"), i);
                }
                None => {
                    let n = g.pattern.len();
                    if by_len.len() <= n {
                        by_len.resize_with(n + 1, Vec::new);
                    }
                    by_len[n].push(i);
                }
            }
        }
        for ids in &mut by_len {
            ids.sort_by_key(|&i| {
                let pattern = &groups[i].pattern;
                pattern.iter().map(Option::is_none).collect::<Vec<_>>()
            });
        }
        Table {
            groups,
            exact,
            by_len,
        }
    })
}

/// The table's path that `routed` is (a routing form, `{x}` any one
/// non-empty segment), and where its `{x}` segments are in `routed`.
fn matched(routed: &str) -> Option<(&'static Group, Params)> {
    let table = table();
    if let Some(&i) = table.exact.get(routed) {
        return Some((&table.groups[i], Params::default()));
    }
    let mut segs = [""; MAX_SEGMENTS];
    let mut n = 0;
    for seg in segments(routed) {
        *segs.get_mut(n)? = seg;
        n += 1;
    }
    let segs = &segs[..n];
    let group = table
        .by_len
        .get(n)?
        .iter()
        .map(|&i| &table.groups[i])
        .find(|g| {
            g.pattern.iter().zip(segs).all(|(p, s)| match p {
                None => !s.is_empty(),
                Some(p) => p == s,
            })
        })?;
    let mut params = Params::default();
    for (p, s) in group.pattern.iter().zip(segs) {
        if p.is_none() {
            let start = s.as_ptr() as usize - routed.as_ptr() as usize;
            params.at[params.n] = (start, start + s.len());
            params.n += 1;
        }
    }
    Some((group, params))
}

/// The route for `method` on `routed`, a path's routing form
/// ([`super::path::routing_form`]: what the front layer has already made).
/// The places of the `{x}` segments are the same in the path as received,
/// which only differs from it by case and a trailing slash.
pub fn find(method: &Method, routed: &str) -> Found {
    let Some((group, params)) = matched(routed) else {
        return Found::Nothing;
    };
    let on = |m: &str| group.routes.iter().copied().find(|r| r.method == m);
    let route = on(method.as_str()).or_else(|| {
        let head = method == Method::HEAD;
        head.then(|| on("GET")).flatten()
    });
    match route {
        Some(route) => Found::Route(route, params),
        None => Found::OtherMethod(&group.allow),
    }
}

/// Whether `path` is one of armor's own routes, on any method, in any
/// spelling that routes to it (ASCII case, a trailing slash): the gateway
/// never forwards these, nor treats them as public.
pub fn is_armor_route(path: &str) -> bool {
    let mut buf = [0u8; 128];
    matched(&routing_form_in(path, &mut buf)).is_some()
}

/// A route's `{x}` segments, percent-decoded, by position: `String` for
/// one, `(String, String)` for two. The front layer hands their places
/// ([`Params`]) to the handler in its state ([`RouteState`]).
pub struct Path<T>(pub T);

/// The `N` `{x}` segments at `params` in `path` (the request's path as
/// routed), percent-decoded.
fn path_segments<const N: usize>(path: &str, params: &Params) -> Result<[String; N], ApiError> {
    if params.n != N {
        // A handler reading more or fewer segments than its route has.
        return Err(ApiError(Error::Internal(format!(
            "the route of {path} has not {N} path segments"
        ))));
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, &(start, end)) in out.iter_mut().zip(&params.at) {
        let Some(raw) = path.get(start..end) else {
            return Err(ApiError(Error::Internal(format!(
                "no path segment at {start}..{end} of {path}"
            ))));
        };
        *slot = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError(Error::MalformedTarget("a path segment is not UTF-8")))?
            .into_owned();
    }
    Ok(out)
}

impl FromRequestParts<RouteState> for Path<String> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &RouteState) -> Result<Self, ApiError> {
        let [a] = path_segments(parts.uri.path(), &s.params)?;
        Ok(Path(a))
    }
}

impl FromRequestParts<RouteState> for Path<(String, String)> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &RouteState) -> Result<Self, ApiError> {
        let [a, b] = path_segments(parts.uri.path(), &s.params)?;
        Ok(Path((a, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armor_routes() {
        assert!(ROUTES
            .iter()
            .all(|r| r.path.split('/').count() <= MAX_SEGMENTS));
        let params = |r: &Route| r.path.split('/').filter(|s| s.starts_with('{')).count();
        assert!(ROUTES.iter().all(|r| params(r) <= MAX_PARAMS));
        assert!(is_armor_route("/me"));
        assert!(is_armor_route("/USERS/12/keys/"));
        assert!(is_armor_route("/users/12/ActivationCode"));
        assert!(!is_armor_route("/users/12/orders"));
        assert!(!is_armor_route("/api/me"));
        assert!(!is_armor_route("/users//keys"));
        assert!(!is_armor_route(&"/a".repeat(40)));
    }

    #[test]
    fn every_route_is_an_armor_route_in_any_case_and_with_a_trailing_slash() {
        for r in ROUTES {
            let filled: String = r
                .path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "12" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let slashed = format!("{}/", filled.trim_end_matches('/'));
            for p in [filled.clone(), filled.to_uppercase(), slashed] {
                assert!(is_armor_route(&p), "{p}");
            }
            // One more segment, or an unknown first one, is none.
            assert!(!is_armor_route(&format!("{filled}/x/y")), "{filled}");
            assert!(!is_armor_route(&format!("/app{filled}")), "{filled}");
        }
        assert!(!is_armor_route("/"));
        assert!(!is_armor_route(""));
    }

    /// The table's path for a route, parameters unnamed.
    fn shape(path: &str) -> Vec<Option<String>> {
        trimmed(path)
            .split('/')
            .map(|seg| (!seg.starts_with('{')).then(|| seg.to_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[..i] {
                assert!(
                    !(a.method == b.method && shape(a.path) == shape(b.path)),
                    "{a:?} and {b:?} are one route"
                );
            }
        }
    }

    #[test]
    fn every_route_is_found_on_its_method_with_its_segments() {
        for r in ROUTES {
            let mut n = 0;
            let filled: String = r
                .path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        n += 1;
                        format!("v{n}")
                    } else {
                        seg.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method: Method = r.method.parse().unwrap();
            let filled = filled.to_ascii_lowercase();
            let Found::Route(found, params) = find(&method, trimmed(&filled)) else {
                panic!("{r:?} not found");
            };
            assert_eq!((found.method, found.path), (r.method, r.path));
            let got: Vec<&str> = params.at[..params.n]
                .iter()
                .map(|&(s, e)| &filled[s..e])
                .collect();
            let want: Vec<String> = (1..=n).map(|i| format!("v{i}")).collect();
            assert_eq!(got, want, "{r:?}");
        }
    }

    #[test]
    fn literal_segments_win_over_parameters_and_other_methods_get_their_allow() {
        // `/users/status` is a path of its own (POST), not `/users/{id}`
        // (PUT), whatever the method.
        match find(&Method::PUT, "/users/status") {
            Found::OtherMethod(allow) => assert_eq!(allow, "POST"),
            other => panic!("{other:?}"),
        }
        let Found::Route(r, _) = find(&Method::PUT, "/users/7") else {
            panic!()
        };
        assert_eq!(r.path, "/users/{id}");
        let Found::Route(r, _) = find(&Method::POST, "/users/status") else {
            panic!()
        };
        assert_eq!(r.path, "/users/status");
        // A GET route takes HEAD, and a 405 lists both.
        let Found::Route(r, _) = find(&Method::HEAD, "/auth/whoami") else {
            panic!()
        };
        assert_eq!((r.method, r.path), ("GET", "/auth/whoami"));
        match find(&Method::DELETE, "/auth/whoami") {
            Found::OtherMethod(allow) => assert_eq!(allow, "GET,HEAD,POST"),
            other => panic!("{other:?}"),
        }
        match find(&Method::PATCH, "/users/7/keys") {
            Found::OtherMethod(allow) => assert_eq!(allow, "GET,HEAD,POST,PUT"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            find(&Method::GET, "/users/7/orders"),
            Found::Nothing
        ));
        assert!(matches!(find(&Method::GET, "/"), Found::Nothing));
    }

    #[test]
    fn path_segments_are_percent_decoded_and_must_be_utf8() {
        let params = |path: &str| match find(&Method::GET, path) {
            Found::Route(_, params) => params,
            other => panic!("{path}: {other:?}"),
        };
        let path = "/users/lockedout/3/a%40b.example";
        let [account, email] = path_segments(path, &params(path)).unwrap();
        assert_eq!((account.as_str(), email.as_str()), ("3", "a@b.example"));
        let refused = path_segments::<1>("/users/%FF", &params("/users/%FF"));
        assert!(matches!(refused, Err(ApiError(Error::MalformedTarget(_)))));
        // A handler reading two segments of a one-segment route.
        let refused = path_segments::<2>("/users/7", &params("/users/7"));
        assert!(matches!(refused, Err(ApiError(Error::Internal(_)))));
    }

    #[test]
    fn api_routes_are_served_from_the_table_alone() {
        // A route registered by hand beside the table would be served but
        // not listed: API routes are served from `ROUTES` alone.
        // `metrics_app` is the metrics listener's router, not the API's.
        let web = include_str!("mod.rs");
        let start = web.find("pub fn metrics_app").unwrap();
        let end = start + web[start..].find("\n}\n").unwrap();
        let web = format!("{}{}", &web[..start], &web[end..]);
        for (file, text) in [
            ("web/mod.rs", web.as_str()),
            ("web/routes.rs", include_str!("routes.rs")),
            ("web/handlers.rs", include_str!("handlers.rs")),
            ("web/handlers/users.rs", include_str!("handlers/users.rs")),
            ("web/openapi.rs", include_str!("openapi.rs")),
        ] {
            let calls = text.matches(concat!(".route", "(")).count();
            assert_eq!(calls, 0, "{file} registers routes by hand");
        }
    }
}
