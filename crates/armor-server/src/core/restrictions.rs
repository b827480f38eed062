//! What a key may do, besides what its user may: its expiry, its routes,
//! the networks it may be used from, its permissions and its rate. Read
//! from the stored columns ([`KeyRules`]) once, when the key enters the
//! verifier's cache, and checked by [`check`] for every request the key
//! signs, after its signature has verified and its replay claim was taken
//! (see `KeyVerifier::psk_finish`, the one caller, used by the API and the
//! gateway alike).
//!
//! A key without restrictions has none of this: its cached entry holds
//! `None`, and the request pays nothing.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;
use crate::ports::{KeyRateLimit, RateWindow};
use crate::store::KeyRules;

/// A method and a path, or a path prefix, a key may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// `None`: any method (`*`).
    pub method: Option<String>,
    /// The exact path, or the prefix (with its trailing `/`) when
    /// `prefix`.
    pub path: String,
    pub prefix: bool,
}

impl RoutePattern {
    /// `METHOD /path`, `METHOD /prefix/*`, or `*` for the method. The
    /// method is upper case letters; the path starts with `/`, has no
    /// space, `?`, `#`, `%`, `//`, `.` or `..` segment, and no `*` but a
    /// final `/*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("allowedRoutes: {text:?} {why}");
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("must be a method (or *), a space and a path"))?;
        let path = path.trim();
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.len() <= 20 && m.bytes().all(|b| b.is_ascii_uppercase()) => {
                Some(m.to_owned())
            }
            _ => {
                return Err(bad(
                    "must start with an upper-case method such as GET, or *",
                ))
            }
        };
        if text.len() > 300 {
            return Err(bad("is longer than 300 characters"));
        }
        let (path, prefix) = match path.strip_suffix("/*") {
            Some(p) => (format!("{p}/"), true),
            None => (path.to_owned(), false),
        };
        if !path.starts_with('/')
            || path.contains(['*', '?', '#', ' ', '\\'])
            || path.chars().any(char::is_control)
        {
            return Err(bad(
                "needs a path starting with '/', without spaces, '?', '#' or '*' (but a final /*)",
            ));
        }
        let inner = path.trim_end_matches('/');
        let bad_segment = inner
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if bad_segment || inner.contains('%') {
            return Err(bad("has an empty, '.' or '..' segment, or a '%'"));
        }
        Ok(RoutePattern {
            method,
            path,
            prefix,
        })
    }

    /// Whether this pattern allows `method` on `path`. On armor's own
    /// routes (`fold`), paths compare as the route table matches them: without
    /// regard to ASCII case, and without a trailing `/`. Upstream paths
    /// compare exactly.
    fn allows(&self, method: &str, path: &str, fold: bool) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        if fold {
            let path = path.trim_end_matches('/');
            if self.prefix {
                path.len() >= self.path.len()
                    && path.as_bytes()[..self.path.len()].eq_ignore_ascii_case(self.path.as_bytes())
            } else {
                path.eq_ignore_ascii_case(self.path.trim_end_matches('/'))
            }
        } else if self.prefix {
            path.starts_with(&self.path)
        } else {
            path == self.path
        }
    }

    /// As written when created (`GET /vms/*`).
    pub fn text(&self) -> String {
        let method = self.method.as_deref().unwrap_or("*");
        if self.prefix {
            format!("{method} {}*", self.path)
        } else {
            format!("{method} {}", self.path)
        }
    }
}

/// A request count per window of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    pub limit: u32,
    pub window_secs: u64,
}

/// A key's restrictions, as the verifier holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// The first second the key is refused: its own expiry or, once it is
    /// rolled, the end of its grace period, whichever comes first.
    pub expires_at: Option<u64>,
    /// The permissions the key may use (its user's still apply).
    pub permissions: Option<Vec<String>>,
    pub routes: Option<Vec<RoutePattern>>,
    pub ips: Option<Vec<IpNet>>,
    pub rate: Option<RateRule>,
}

/// Why a key's request was refused by its restrictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 `key_expired`.
    Expired,
    /// 403 `ip_not_allowed`.
    IpNotAllowed,
    /// 403 `route_not_allowed`.
    RouteNotAllowed,
}

/// The request, as far as restrictions look at it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a str,
    /// The path as received (no query).
    pub path: &'a str,
    /// The TCP peer's address (see `docs/keys.md` on proxies).
    pub peer: Option<IpAddr>,
    /// Whether a path is one of armor's own routes (compared as the route
    /// table does) rather than an upstream's (compared exactly). Asked only of
    /// keys with allowed routes.
    pub armor_route: fn(&str) -> bool,
}

/// Where a request came from, as the front layer knows it.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: Option<IpAddr>,
    pub armor_route: fn(&str) -> bool,
}

impl Default for Origin {
    /// No known peer (a key bound to networks is refused), every path read
    /// as one of armor's own routes.
    fn default() -> Self {
        Origin {
            peer: None,
            armor_route: |_| true,
        }
    }
}

impl Origin {
    pub fn target<'a>(&self, method: &'a str, path: &'a str) -> Target<'a> {
        Target {
            method,
            path,
            peer: self.peer,
            armor_route: self.armor_route,
        }
    }
}

impl Refusal {
    /// The stable `error` code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Expired => "key_expired",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::RouteNotAllowed => "route_not_allowed",
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Expired => Error::KeyExpired,
            Refusal::IpNotAllowed => Error::IpNotAllowed,
            Refusal::RouteNotAllowed => Error::RouteNotAllowed,
        }
    }
}

/// Applies a key's restrictions to a verified request: [`check`], then
/// its rate, counted in `limit`. A refusal comes with its `error` code.
pub async fn admit(
    r: &Restrictions,
    key_id: &str,
    t: &Target<'_>,
    now: u64,
    limit: &dyn KeyRateLimit,
) -> Result<(), (Error, &'static str)> {
    check(r, t, now).map_err(|refusal| (refusal.into(), refusal.code()))?;
    if let Some(rate) = r.rate {
        match limit.hit(key_id, rate.limit, rate.window_secs, now).await {
            Ok(RateWindow { allowed: true, .. }) => {}
            Ok(w) => {
                return Err((
                    Error::KeyRateLimited {
                        limit: w.limit,
                        reset: w.reset,
                    },
                    "rate_limited",
                ))
            }
            Err(_) => {
                let err = armor_psk::Error::ReplayStoreUnavailable;
                return Err((err.into(), err.code()));
            }
        }
    }
    Ok(())
}

/// Checks a verified request against its key's restrictions at `now`:
/// expiry, then the peer's address, then the route. The rate, which needs
/// a counter, is the caller's (it comes last).
pub fn check(r: &Restrictions, t: &Target<'_>, now: u64) -> Result<(), Refusal> {
    if r.expires_at.is_some_and(|at| now >= at) {
        return Err(Refusal::Expired);
    }
    if let Some(nets) = &r.ips {
        let allowed = t.peer.is_some_and(|ip| {
            let ip = ip.to_canonical();
            nets.iter().any(|n| n.contains(&ip))
        });
        if !allowed {
            return Err(Refusal::IpNotAllowed);
        }
    }
    if let Some(routes) = &r.routes {
        let fold = (t.armor_route)(t.path);
        if !routes.iter().any(|p| p.allows(t.method, t.path, fold)) {
            return Err(Refusal::RouteNotAllowed);
        }
    }
    Ok(())
}

/// A key's status as shown: `Rolled` once it was rolled (in its grace
/// period and after), else `Expired` from its expiry on, else `Active`.
pub fn status(rules: &KeyRules, now: u64) -> &'static str {
    if rules.rolled_until.is_some() {
        "Rolled"
    } else if rules.expires_at.is_some_and(|at| now as i64 >= at) {
        "Expired"
    } else {
        "Active"
    }
}

/// When a key stops working: its expiry, or the end of its grace period
/// if it was rolled, whichever is first.
pub fn effective_expiry(rules: &KeyRules) -> Option<u64> {
    let end = match (rules.expires_at, rules.rolled_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    end.map(|t| t.max(0) as u64)
}

/// A stored JSON list of strings (`None`: no list, or unreadable, which
/// [`Restrictions::from_rules`] treats as refusing everything).
pub fn list(text: &Option<String>) -> Option<Result<Vec<String>, ()>> {
    text.as_deref()
        .map(|t| serde_json::from_str::<Vec<String>>(t).map_err(|_| ()))
}

impl Restrictions {
    /// The restrictions of a stored key; `None` when it has none. A list
    /// that cannot be read (never written so by this server) restricts to
    /// nothing rather than to everything.
    pub fn from_rules(rules: &KeyRules) -> Option<Self> {
        let r = Restrictions {
            expires_at: effective_expiry(rules),
            permissions: list(&rules.permissions).map(|l| l.unwrap_or_default()),
            routes: list(&rules.allowed_routes).map(|l| {
                l.unwrap_or_default()
                    .iter()
                    .filter_map(|t| RoutePattern::parse(t).ok())
                    .collect()
            }),
            ips: list(&rules.allowed_ips).map(|l| {
                l.unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.parse::<IpNet>().ok())
                    .collect()
            }),
            rate: match (rules.rate_limit, rules.rate_window) {
                (Some(limit), Some(window)) => Some(RateRule {
                    limit: u32::try_from(limit.max(0)).unwrap_or(u32::MAX),
                    window_secs: window.max(1) as u64,
                }),
                _ => None,
            },
        };
        (r != Restrictions::default()).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(_: &str) -> bool {
        true
    }
    fn upstream(_: &str) -> bool {
        false
    }

    fn target<'a>(method: &'a str, path: &'a str, armor_route: fn(&str) -> bool) -> Target<'a> {
        Target {
            method,
            path,
            peer: Some("127.0.0.1".parse().unwrap()),
            armor_route,
        }
    }

    fn routes(list: &[&str]) -> Restrictions {
        Restrictions {
            routes: Some(
                list.iter()
                    .map(|t| RoutePattern::parse(t).unwrap())
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn route_patterns_parse_and_match() {
        let r = routes(&["GET /me", "GET /vms/*", "* /tickets"]);
        for (m, p, f) in [
            ("GET", "/me", own as fn(&str) -> bool),
            ("GET", "/ME/", own),
            ("GET", "/vms/1", upstream),
            ("GET", "/vms/", upstream),
            ("DELETE", "/tickets", upstream),
        ] {
            assert_eq!(check(&r, &target(m, p, f), 0), Ok(()), "{m} {p}");
        }
        for (m, p, f) in [
            ("POST", "/me", own as fn(&str) -> bool),
            ("GET", "/me/x", own),
            ("GET", "/vms", upstream),
            ("GET", "/VMS/1", upstream),
            ("GET", "/tickets/1", upstream),
        ] {
            assert_eq!(
                check(&r, &target(m, p, f), 0),
                Err(Refusal::RouteNotAllowed),
                "{m} {p}"
            );
        }
        for bad in [
            "GET",
            "get /me",
            "GET me",
            "GET /a/*/b",
            "GET /a*",
            "GET /a/../b",
            "GET /a//b",
            "GET /a?x=1",
            "GET /a%2Fb",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RoutePattern::parse("* /vms/*").unwrap().text(), "* /vms/*");
    }

    #[test]
    fn expiry_then_address() {
        let r = Restrictions {
            expires_at: Some(100),
            ips: Some(vec![
                "::1/128".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]),
            ..Default::default()
        };
        let mut t = target("GET", "/me", own);
        assert_eq!(check(&r, &t, 99), Err(Refusal::IpNotAllowed));
        assert_eq!(check(&r, &t, 100), Err(Refusal::Expired));
        t.peer = Some("::1".parse().unwrap());
        assert_eq!(check(&r, &t, 99), Ok(()));
        t.peer = Some("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(check(&r, &t, 99), Ok(()));
        t.peer = None;
        assert_eq!(check(&r, &t, 99), Err(Refusal::IpNotAllowed));
    }

    #[tokio::test]
    async fn only_requests_that_pass_the_other_checks_use_the_rate() {
        let windows = crate::limit::KeyWindows::new();
        let r = Restrictions {
            rate: Some(RateRule {
                limit: 1,
                window_secs: 60,
            }),
            ..routes(&["GET /me"])
        };
        let refused = admit(&r, "k", &target("GET", "/users", own), 0, &windows).await;
        assert_eq!(refused.map_err(|(_, code)| code), Err("route_not_allowed"));
        assert!(admit(&r, "k", &target("GET", "/me", own), 0, &windows)
            .await
            .is_ok());
        let over = admit(&r, "k", &target("GET", "/me", own), 1, &windows).await;
        match over {
            Err((
                Error::KeyRateLimited {
                    limit: 1,
                    reset: 59,
                },
                "rate_limited",
            )) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_and_expiry_of_stored_rules() {
        let mut rules = KeyRules::default();
        assert_eq!(Restrictions::from_rules(&rules), None);
        assert_eq!(status(&rules, 10), "Active");
        rules.expires_at = Some(50);
        assert_eq!(status(&rules, 49), "Active");
        assert_eq!(status(&rules, 50), "Expired");
        rules.rolled_until = Some(20);
        assert_eq!(status(&rules, 10), "Rolled");
        assert_eq!(effective_expiry(&rules), Some(20));
        rules.permissions = Some("not json".into());
        let r = Restrictions::from_rules(&rules).unwrap();
        assert_eq!(r.permissions, Some(vec![]));
        assert_eq!(r.expires_at, Some(20));
    }
}
