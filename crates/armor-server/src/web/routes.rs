//! The route table: every route of the API, once. [`ROUTES`] registers
//! each route on the router ([`register`]), declares who may call it
//! ([`Policy`], read by [`is_public`](super::is_public) before
//! authentication and by the gateway's
//! [`is_armor_route`], handed to it at start-up), and generates
//! `/openapi.json` and `/docs` ([`super::openapi`]) with its bodies'
//! schemas ([`super::schema`]).
//!
//! The portal's HTML pages are not API routes: they sign in with their own
//! cookie and CSRF tokens, and are registered by
//! [`crate::portal::router`]. The table names only where they are mounted
//! ([`PORTAL_ROOTS`]), which is what `is_public` needs.

use std::collections::BTreeMap;

use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use super::path::{segments, trimmed};
use super::schema::name as s;
use super::{handlers as h, openapi, AppState};

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
    filter: MethodFilter,
    /// The handler, on the route's method.
    serve: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Where the portal is mounted: `/` and everything under `/portal`. Its
/// pages authenticate with their own session cookie, so the API's
/// authentication skips them.
pub const PORTAL_ROOTS: &[&str] = &["/", "/portal"];

use Policy::{Caller as C, NoApiKey as N, PasswordOnly as P, Public as O};
use Reply::{Json as J, Other};

macro_rules! route {
    ($method:ident $path:literal, $policy:expr, $handler:path,
     in: $req:expr, out: $reply:expr, $summary:literal) => {
        Route {
            method: stringify!($method),
            filter: MethodFilter::$method,
            path: $path,
            policy: $policy,
            summary: $summary,
            request: $req,
            reply: $reply,
            serve: |m| on(m, $handler),
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

/// The path the router registers for a table path: the routing form
/// (lowercase, no trailing slash) with its parameters named by position,
/// as the handlers read them by position.
pub fn router_path(path: &str) -> String {
    let mut n = 0;
    super::path::routing_form(path)
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                n += 1;
                format!("{{p{n}}}")
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the router would take `path` as one of armor's own routes
/// (case-insensitive, trailing slash ignored, `{x}` any one segment): the
/// gateway never forwards these, nor treats them as public.
pub fn is_armor_route(path: &str) -> bool {
    /// Most segments a route has (a test checks it): a longer path is
    /// none of them.
    const MAX: usize = 16;
    type Pattern = Vec<Option<&'static str>>;
    /// `ROUTES`' paths as segments (`None`: a `{x}` placeholder), and their
    /// distinct first segments, built once. Most paths the gateway sees
    /// start with none of those, and are told apart on that alone.
    static PATTERNS: std::sync::OnceLock<(Vec<Pattern>, Vec<Option<&'static str>>)> =
        std::sync::OnceLock::new();
    let (patterns, firsts) = PATTERNS.get_or_init(|| {
        let patterns: Vec<Pattern> = ROUTES
            .iter()
            .map(|r| {
                // As `path::routing_form` on both sides, without allocating.
                trimmed(r.path)
                    .split('/')
                    .map(|seg| (!(seg.starts_with('{') && seg.ends_with('}'))).then_some(seg))
                    .collect()
            })
            .collect();
        // (`None`, a placeholder or no segment at all, lets every path on.)
        let mut firsts: Vec<Option<&str>> = patterns
            .iter()
            .map(|p| p.get(1).copied().flatten())
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        (patterns, firsts)
    });
    // The first segment alone, before the whole path is split: most paths
    // end here.
    let first = segments(trimmed(path)).nth(1).unwrap_or_default();
    let known = |f: &Option<&str>| f.is_none_or(|f| f.eq_ignore_ascii_case(first));
    if !firsts.iter().any(known) {
        return false;
    }
    let mut segs = [""; MAX];
    let mut n = 0;
    for seg in segments(trimmed(path)) {
        if n == MAX {
            return false;
        }
        segs[n] = seg;
        n += 1;
    }
    let segs = &segs[..n];
    patterns.iter().any(|pat| {
        pat.len() == n
            && pat.iter().zip(segs).all(|(p, s)| match p {
                None => !s.is_empty(),
                Some(p) => p.eq_ignore_ascii_case(s),
            })
    })
}

/// Registers every route of [`ROUTES`] on `router`. `with_metrics`: serve
/// `/metrics` here (else it answers 404, being served by
/// [`super::metrics_app`] on a listener of its own).
pub fn register(mut router: Router<AppState>, with_metrics: bool) -> Router<AppState> {
    let mut by_path: BTreeMap<String, MethodRouter<AppState>> = BTreeMap::new();
    for r in ROUTES {
        let filter = r.filter;
        let mr = if r.path == "/metrics" && !with_metrics {
            on(filter, h::not_found)
        } else {
            (r.serve)(filter)
        };
        let path = router_path(r.path);
        let merged = match by_path.remove(&path) {
            Some(prev) => prev.merge(mr),
            None => mr,
        };
        by_path.insert(path, merged);
    }
    for (path, mr) in by_path {
        router = router.route(&path, mr);
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armor_routes() {
        assert!(ROUTES.iter().all(|r| r.path.split('/').count() <= 16));
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

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[..i] {
                assert!(
                    !(a.method == b.method && router_path(a.path) == router_path(b.path)),
                    "{a:?} and {b:?} are one route"
                );
            }
        }
    }

    #[test]
    fn the_router_is_built_from_the_table_alone() {
        // A route registered by hand beside the table would be served but
        // not listed: the web layer registers routes in `register` only.
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
            let expected = usize::from(file == "web/routes.rs");
            assert_eq!(calls, expected, "{file} registers routes by hand");
        }
    }

    #[test]
    fn positional_parameters() {
        assert_eq!(
            router_path("/users/LockedOut/{accountId}/{email}"),
            "/users/lockedout/{p1}/{p2}"
        );
        assert_eq!(router_path("/users/"), "/users");
    }
}
