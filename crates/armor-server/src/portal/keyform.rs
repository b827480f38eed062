//! The new-key form's restriction fields (expiry, permissions, routes, IP
//! ranges, rate limit) and their reading into a [`KeySpec`]: what the API's
//! `POST /users/{id}/keys` takes, checked by the same code.

use maud::{html, Markup};

use super::session::Session;
use crate::core::keyspec::{KeySpec, RateLimitSpec};

/// Expiry presets: value (seconds, or a word) and label.
const EXPIRY: [(&str, &str); 7] = [
    ("never", "Never"),
    ("86400", "In 1 day"),
    ("604800", "In 7 days"),
    ("2592000", "In 30 days"),
    ("7776000", "In 90 days"),
    ("31536000", "In 1 year"),
    ("date", "On a date…"),
];

/// Rate windows: seconds and label.
const WINDOWS: [(&str, &str); 4] = [
    ("1", "per second"),
    ("60", "per minute"),
    ("3600", "per hour"),
    ("86400", "per day"),
];

/// The form as sent (every value a string, several `permission`s).
#[derive(Debug, Default, Clone)]
pub struct KeyForm {
    pub name: String,
    pub expiry: String,
    pub expiry_date: String,
    /// `all` or `some`.
    pub perm_mode: String,
    pub permissions: Vec<String>,
    pub routes: String,
    pub ips: String,
    pub rate_limit: String,
    pub rate_window: String,
}

impl KeyForm {
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut f = KeyForm::default();
        for (k, v) in pairs {
            match k.as_str() {
                "name" => f.name = v.clone(),
                "expiry" => f.expiry = v.clone(),
                "expiry_date" => f.expiry_date = v.clone(),
                "perm_mode" => f.perm_mode = v.clone(),
                "permission" => f.permissions.push(v.clone()),
                "routes" => f.routes = v.clone(),
                "ips" => f.ips = v.clone(),
                "rate_limit" => f.rate_limit = v.clone(),
                "rate_window" => f.rate_window = v.clone(),
                _ => {}
            }
        }
        f
    }

    /// The key's restrictions, or what is wrong with the form.
    pub fn spec(&self) -> Result<KeySpec, String> {
        let mut spec = KeySpec::default();
        match self.expiry.as_str() {
            "" | "never" => {}
            "date" => {
                let d = self.expiry_date.trim();
                if d.is_empty() {
                    return Err("choose the expiry date".into());
                }
                spec.expires_at = Some(format!("{d}T00:00:00Z"));
            }
            secs => spec.expires_in = Some(secs.parse().map_err(|_| "unknown expiry".to_owned())?),
        }
        if self.perm_mode == "some" {
            spec.permissions = Some(self.permissions.clone());
        }
        let lines = |t: &str| -> Option<Vec<String>> {
            let l: Vec<String> = t
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            (!l.is_empty()).then_some(l)
        };
        spec.allowed_routes = lines(&self.routes);
        spec.allowed_ips = lines(&self.ips);
        let limit = self.rate_limit.trim();
        if !limit.is_empty() {
            spec.rate_limit = Some(RateLimitSpec {
                limit: limit
                    .parse()
                    .map_err(|_| "the rate limit must be a whole number".to_owned())?,
                window_seconds: self.rate_window.parse().unwrap_or(60),
            });
        }
        Ok(spec)
    }
}

/// The restriction fields of the new-key form, filled with `f`.
pub fn fields(s: &Session, f: &KeyForm) -> Markup {
    let expiry = if f.expiry.is_empty() {
        "never"
    } else {
        f.expiry.as_str()
    };
    let some = f.perm_mode == "some";
    let window = if f.rate_window.is_empty() {
        "60"
    } else {
        f.rate_window.as_str()
    };
    html! {
        fieldset.fieldset #expiry-fields {
            legend.field-label { "Expiry" }
            div.row-form {
                label.field.grow {
                    span.field-help.muted { "The key stops working at this time." }
                    select #key-expiry name="expiry" {
                        @for (value, label) in EXPIRY {
                            option value=(value) selected[value == expiry] { (label) }
                        }
                    }
                }
                label.field.grow {
                    span.field-help.muted { "Date (UTC), with “On a date…”" }
                    input #key-expiry-date type="date" name="expiry_date" value=(f.expiry_date);
                }
            }
        }
        fieldset.fieldset #permission-fields {
            legend.field-label { "Permissions" }
            label.check {
                input type="radio" name="perm_mode" value="all" checked[!some];
                span { "All of mine (as they are when the key is used)" }
            }
            label.check {
                input #perm-some type="radio" name="perm_mode" value="some" checked[some];
                span { "Only these:" }
            }
            div.checks {
                @for (i, p) in s.p.permissions.iter().enumerate() {
                    label.check {
                        input id={ "perm-" (i) } type="checkbox" name="permission" value=(p)
                            checked[f.permissions.contains(p)];
                        span { (p) }
                    }
                }
            }
        }
        label.field {
            span.field-label { "Allowed routes" }
            textarea #key-routes name="routes" rows="3" placeholder="GET /me\nGET /vms/*\n* /tickets" { (f.routes) }
            span.field-help.muted { "One per line: a method (or *) and a path, or a prefix ending in /*. Empty: any route." }
        }
        label.field {
            span.field-label { "Allowed IP ranges" }
            textarea #key-ips name="ips" rows="2" placeholder="203.0.113.0/24\n2001:db8::/32" { (f.ips) }
            span.field-help.muted { "One CIDR per line, IPv4 or IPv6. Empty: any address." }
        }
        div.row-form {
            label.field.grow {
                span.field-label { "Rate limit" }
                input #key-rate type="text" inputmode="numeric" name="rate_limit" value=(f.rate_limit)
                    placeholder="No limit" autocomplete="off";
            }
            label.field.grow {
                span.field-label { "Window" }
                select #key-rate-window name="rate_window" {
                    @for (value, label) in WINDOWS {
                        option value=(value) selected[value == window] { (label) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_filled_form_reads_as_the_api_fields() {
        let f = KeyForm::from_pairs(&pairs(&[
            ("name", "n"),
            ("expiry", "date"),
            ("expiry_date", "2031-02-03"),
            ("perm_mode", "some"),
            ("permission", "Users Read"),
            ("permission", "Audit Log Read"),
            ("routes", "GET /me\r\n\r\n* /vms/*\r\n"),
            ("ips", ""),
            ("rate_limit", "10"),
            ("rate_window", "3600"),
        ]));
        let spec = f.spec().unwrap();
        assert_eq!(spec.expires_at.as_deref(), Some("2031-02-03T00:00:00Z"));
        assert_eq!(
            spec.permissions,
            Some(vec!["Users Read".into(), "Audit Log Read".into()])
        );
        assert_eq!(
            spec.allowed_routes,
            Some(vec!["GET /me".into(), "* /vms/*".into()])
        );
        assert_eq!(spec.allowed_ips, None);
        assert_eq!(
            spec.rate_limit,
            Some(RateLimitSpec {
                limit: 10,
                window_seconds: 3600
            })
        );
        let plain = KeyForm::from_pairs(&pairs(&[("name", "n"), ("perm_mode", "all")]));
        let spec = plain.spec().unwrap();
        assert!(spec.permissions.is_none() && spec.expires_in.is_none());
    }
}
