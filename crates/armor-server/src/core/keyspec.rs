//! The optional fields of a new key (`POST /users/{id}/keys`, the portal's
//! form), checked and turned into the stored [`KeyRules`]. Every refusal
//! is `invalid_request` naming the field (and the value) at fault.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::restrictions::RoutePattern;
use crate::error::Error;
use crate::store::KeyRules;

/// Shortest lifetime a key may be given (seconds).
pub const MIN_LIFETIME: u64 = 60;
/// Longest: ten years of 365.25 days.
pub const MAX_LIFETIME: u64 = 3_652 * 86_400 + 43_200;
/// Longest grace period of a roll, and its default (seconds).
pub const MAX_GRACE: u64 = 7 * 86_400;
pub const DEFAULT_GRACE: u64 = 86_400;
/// Most entries in `allowedRoutes` or `allowedIps`.
pub const MAX_LIST: usize = 100;
/// Bounds of `rateLimit`.
pub const MAX_RATE_LIMIT: i64 = 1_000_000;
pub const MAX_RATE_WINDOW: i64 = 86_400;

/// `rateLimit`: `{"limit": N, "windowSeconds": S}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    pub limit: i64,
    pub window_seconds: i64,
}

/// The optional fields of a new key, as received.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    pub expires_at: Option<String>,
    pub expires_in: Option<i64>,
    pub permissions: Option<Vec<String>>,
    pub allowed_routes: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitSpec>,
}

fn bad(text: String) -> Error {
    Error::BadRequest(text)
}

impl KeySpec {
    /// The stored rules, if every field is valid at `now` for an owner
    /// holding `held`.
    pub fn validate(&self, held: &[String], now: u64) -> Result<KeyRules, Error> {
        let mut rules = KeyRules::default();
        let expires = match (&self.expires_at, self.expires_in) {
            (Some(_), Some(_)) => {
                return Err(bad("give expiresAt or expiresIn, not both".into()));
            }
            (Some(at), None) => {
                let at = parse_rfc3339(at).ok_or_else(|| {
                    bad(format!(
                        "expiresAt: {at:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z"
                    ))
                })?;
                Some(("expiresAt", at.saturating_sub(now as i64)))
            }
            (None, Some(secs)) => Some(("expiresIn", secs)),
            (None, None) => None,
        };
        if let Some((field, life)) = expires {
            if life < MIN_LIFETIME as i64 || life > MAX_LIFETIME as i64 {
                return Err(bad(format!(
                    "{field}: the key must live between {MIN_LIFETIME} seconds and 10 years from now"
                )));
            }
            rules.expires_at = Some(now as i64 + life);
        }
        if let Some(perms) = &self.permissions {
            let mut set = BTreeSet::new();
            for p in perms {
                let p = p.trim();
                if !held.iter().any(|h| h == p) {
                    return Err(bad(format!(
                        "permissions: the key's user does not hold '{p}'; a key can only have permissions its user has"
                    )));
                }
                set.insert(p.to_owned());
            }
            rules.permissions = Some(json(set.into_iter().collect()));
        }
        if let Some(routes) = &self.allowed_routes {
            check_len("allowedRoutes", routes)?;
            let texts = routes
                .iter()
                .map(|r| RoutePattern::parse(r).map(|p| p.text()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            rules.allowed_routes = Some(json(dedup(texts)));
        }
        if let Some(ips) = &self.allowed_ips {
            check_len("allowedIps", ips)?;
            let nets = ips
                .iter()
                .map(|t| parse_net(t).map(|n| n.trunc().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            rules.allowed_ips = Some(json(dedup(nets)));
        }
        if let Some(rate) = self.rate_limit {
            if !(1..=MAX_RATE_LIMIT).contains(&rate.limit) {
                return Err(bad(format!(
                    "rateLimit.limit must be 1 to {MAX_RATE_LIMIT}"
                )));
            }
            if !(1..=MAX_RATE_WINDOW).contains(&rate.window_seconds) {
                return Err(bad(format!(
                    "rateLimit.windowSeconds must be 1 to {MAX_RATE_WINDOW}"
                )));
            }
            rules.rate_limit = Some(rate.limit);
            rules.rate_window = Some(rate.window_seconds);
        }
        Ok(rules)
    }
}

fn check_len(field: &str, list: &[String]) -> Result<(), Error> {
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(bad(format!(
            "{field}: give 1 to {MAX_LIST} entries, or leave it out for no restriction"
        )));
    }
    Ok(())
}

fn dedup(mut list: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    list.retain(|x| seen.insert(x.clone()));
    list
}

fn json(list: Vec<String>) -> String {
    serde_json::Value::from(list).to_string()
}

/// A network (`10.0.0.0/8`, `2001:db8::/32`) or one address.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    let net = t
        .parse::<IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("allowedIps: {text:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32")
        })?;
    // Peers are compared as IPv4 when they are IPv4-mapped, so a mapped
    // network would never match: it is asked for as IPv4.
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 && n.addr().to_ipv4_mapped().is_some() => Err(format!(
            "allowedIps: {text:?} is an IPv4-mapped range; write it as IPv4 (peers are compared as IPv4)"
        )),
        net => Ok(net),
    }
}

/// Unix seconds of an RFC 3339 date-time (`2027-01-31T12:00:00Z`,
/// `2027-01-31T13:00:00.5+01:00`); fractions of a second are dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(s).ok()?.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_refuses_garbage() {
        for t in [0u64, 951_782_400, 1_528_140_529, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&crate::clock::rfc3339(t)), Some(t as i64));
        }
        assert_eq!(
            parse_rfc3339("2018-06-04T21:28:49.123+02:00"),
            Some(1_528_140_529)
        );
        for bad in [
            "",
            "2018-06-04",
            "2018-02-30T00:00:00Z",
            "2018-06-04T19:28:49",
            "2018-06-04T19:28:49+0200",
            "2018-06-04T19:28:49Zjunk",
            "2018-06-04T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_are_checked_and_named() {
        let held = vec!["Users Read".to_owned()];
        let now = 1_000_000;
        let err = |spec: KeySpec| match spec.validate(&held, now) {
            Err(Error::BadRequest(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(err(KeySpec {
            expires_in: Some(59),
            ..Default::default()
        })
        .starts_with("expiresIn"));
        assert!(err(KeySpec {
            permissions: Some(vec!["Users Manage".into()]),
            ..Default::default()
        })
        .contains("'Users Manage'"));
        assert!(err(KeySpec {
            allowed_ips: Some(vec!["10.0.0.0/33".into()]),
            ..Default::default()
        })
        .contains("10.0.0.0/33"));
        assert!(err(KeySpec {
            allowed_ips: Some(vec!["::ffff:10.0.0.0/104".into()]),
            ..Default::default()
        })
        .contains("IPv4-mapped"));
        assert!(
            parse_net("::/0").is_ok(),
            "all of IPv6 is not a mapped range"
        );
        assert!(err(KeySpec {
            allowed_routes: Some(vec![]),
            ..Default::default()
        })
        .starts_with("allowedRoutes"));
        let rules = KeySpec {
            expires_in: Some(60),
            permissions: Some(vec!["Users Read".into(), "Users Read".into()]),
            allowed_ips: Some(vec!["10.1.2.3/8".into(), "::1".into()]),
            allowed_routes: Some(vec!["GET /me".into()]),
            rate_limit: Some(RateLimitSpec {
                limit: 5,
                window_seconds: 60,
            }),
            ..Default::default()
        }
        .validate(&held, now)
        .unwrap();
        assert_eq!(rules.expires_at, Some(1_000_060));
        assert_eq!(rules.permissions.as_deref(), Some(r#"["Users Read"]"#));
        assert_eq!(
            rules.allowed_ips.as_deref(),
            Some(r#"["10.0.0.0/8","::1/128"]"#)
        );
        assert_eq!(rules.rate_limit, Some(5));
    }
}
