//! `armor keys create|list|roll|usage|delete`: API keys of a server.
//!
//! The keys routes take a password sign-in only (an API key cannot create
//! or read keys), so these commands sign in: with the FH-AUTH token in
//! `ARMOR_TOKEN`, or with an e-mail (`--email`, `ARMOR_EMAIL`, the
//! profile's `email`) and the password in `ARMOR_PASSWORD` (never a flag),
//! signing out when done. The endpoint comes from `--endpoint`,
//! `ARMOR_ENDPOINT` or the profile. `--json` prints the server's JSON;
//! otherwise a table.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::profile::{self, DEFAULT_PROFILE};

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Base URL of the server (else the profile's `endpoint`).
    #[arg(long, global = true, env = "ARMOR_ENDPOINT")]
    endpoint: Option<String>,
    /// Account e-mail to sign in with (else the profile's `email`); the
    /// password comes from ARMOR_PASSWORD. Not needed with ARMOR_TOKEN.
    #[arg(long, global = true, env = "ARMOR_EMAIL")]
    email: Option<String>,
    /// Whose keys (default: the signed-in user).
    #[arg(long, global = true, value_name = "USER_ID")]
    user: Option<i64>,
    /// Credentials profile.
    #[arg(long, global = true, env = "ARMOR_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed this once.
    Create {
        #[arg(long)]
        name: String,
        /// Seconds until the key expires (60 to 10 years).
        #[arg(long, value_name = "SECS", conflicts_with = "expires_at")]
        expires_in: Option<u64>,
        /// When the key expires (RFC 3339).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// A permission the key keeps (of its owner's); repeatable.
        #[arg(long = "permission", value_name = "NAME")]
        permissions: Vec<String>,
        /// A route the key may call, `METHOD /path` or `METHOD /prefix/*`;
        /// repeatable.
        #[arg(long = "allow-route", value_name = "ROUTE")]
        routes: Vec<String>,
        /// A network the key may be used from (CIDR); repeatable.
        #[arg(long = "allow-ip", value_name = "CIDR")]
        ips: Vec<String>,
        /// At most N requests per S seconds.
        #[arg(long, value_name = "N/S", value_parser = parse_rate)]
        rate_limit: Option<(u64, u64)>,
    },
    /// List keys (never their secrets).
    List,
    /// Replace a key by a new one (new id and secret, same name and
    /// restrictions); the old one keeps working for the grace period.
    Roll {
        key_id: String,
        /// Seconds the old key keeps working (0 to 7 days; default 24 h).
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
    },
    /// A key's requests per bucket: accepted, and refused by error code.
    Usage {
        key_id: String,
        #[arg(long, default_value = "hour", value_parser = ["minute", "hour", "day"])]
        bucket: String,
        /// Start (RFC 3339 or Unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// End, its bucket included (default: now).
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete a key; it stops working at once.
    Delete { key_id: String },
}

/// `N/S`: a count and a window in seconds, both at least 1.
fn parse_rate(s: &str) -> Result<(u64, u64), String> {
    let (n, w) = s
        .split_once('/')
        .ok_or("expected N/S: N requests per S seconds, e.g. 100/60")?;
    let n: u64 = n.trim().parse().map_err(|_| "N must be a whole number")?;
    let w: u64 = w
        .trim()
        .parse()
        .map_err(|_| "S must be a whole number of seconds")?;
    if n == 0 || w == 0 {
        return Err("N and S must be at least 1".into());
    }
    Ok((n, w))
}

/// A signed-in session with the server.
struct Session {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
    /// Signed in by this command: signed out when done.
    owned: bool,
}

impl Session {
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("FH-AUTH {}", self.token.as_str()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("request to {}{path} failed", self.base))?;
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// The answer of a call that must succeed.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, v) = self.request(method, path, body).await?;
        if !status.is_success() {
            bail!("{}", refusal(status, &v));
        }
        Ok(v)
    }
}

/// "403 permission_denied: ..." from an error answer.
fn refusal(status: StatusCode, v: &Value) -> String {
    let code = v["error"].as_str().unwrap_or("error");
    match v["error_description"].as_str() {
        Some(d) => format!("{} {code}: {d}", status.as_u16()),
        None => format!("{} {code}", status.as_u16()),
    }
}

async fn sign_in(a: &KeysArgs, http: reqwest::Client) -> anyhow::Result<Session> {
    let found = profile::lookup(&a.profile)?;
    let p = found.profile.unwrap_or_default();
    let base = a
        .endpoint
        .clone()
        .or(p.endpoint)
        .ok_or_else(|| {
            anyhow!(
                "no endpoint: pass --endpoint, set ARMOR_ENDPOINT or `armor configure --profile {} --endpoint URL`",
                a.profile
            )
        })?
        .trim_end_matches('/')
        .to_owned();
    if let Some(token) = std::env::var("ARMOR_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(Session {
            http,
            base,
            token: Zeroizing::new(token),
            owned: false,
        });
    }
    let email = a.email.clone().or(p.email).ok_or_else(|| {
        anyhow!(
            "not signed in: set ARMOR_TOKEN, or give --email (or ARMOR_EMAIL, or `email = ...` in profile [{}]) with ARMOR_PASSWORD",
            a.profile
        )
    })?;
    let password = Zeroizing::new(
        std::env::var("ARMOR_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| anyhow!("no password: set ARMOR_PASSWORD (or ARMOR_TOKEN)"))?,
    );
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let resp = post(
        "/auth/authorize",
        json!({"username": email, "password": password.as_str()}),
    )
    .await
    .map_err(reqwest::Error::without_url)
    .context("sign-in failed")?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("sign-in refused: {}", refusal(status, &v));
    }
    let code = Zeroizing::new(v["code"].as_str().unwrap_or_default().to_owned());
    let resp = post(
        "/auth/token",
        json!({"code": code.as_str(), "grant_type": "authorization_code"}),
    )
    .await
    .map_err(reqwest::Error::without_url)
    .context("sign-in failed")?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("sign-in refused: {}", refusal(status, &v));
    }
    let token = Zeroizing::new(
        v["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("sign-in answered without a token"))?
            .to_owned(),
    );
    Ok(Session {
        http,
        base,
        token,
        owned: true,
    })
}

/// Runs `armor keys ...`.
pub fn keys(a: KeysArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("armor/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let session = sign_in(&a, http).await?;
        let result = run(&a, &session).await;
        if session.owned {
            let _ = session.request(Method::POST, "/auth/logout", None).await;
        }
        result
    })
}

async fn run(a: &KeysArgs, s: &Session) -> anyhow::Result<ExitCode> {
    let user = match a.user {
        Some(u) => u,
        None => s.ok(Method::GET, "/auth/whoami", None).await?["userId"]
            .as_i64()
            .ok_or_else(|| anyhow!("the server did not say who is signed in"))?,
    };
    let keys = format!("/users/{user}/keys");
    let out = match &a.command {
        KeysCommand::Create {
            name,
            expires_in,
            expires_at,
            permissions,
            routes,
            ips,
            rate_limit,
        } => {
            let mut body = json!({"name": name});
            if let Some(e) = expires_in {
                body["expiresIn"] = json!(e);
            }
            if let Some(e) = expires_at {
                body["expiresAt"] = json!(e);
            }
            if !permissions.is_empty() {
                body["permissions"] = json!(permissions);
            }
            if !routes.is_empty() {
                body["allowedRoutes"] = json!(routes);
            }
            if !ips.is_empty() {
                body["allowedIps"] = json!(ips);
            }
            if let Some((limit, window)) = rate_limit {
                body["rateLimit"] = json!({"limit": limit, "windowSeconds": window});
            }
            let v = s.ok(Method::POST, &keys, Some(body)).await?;
            if a.json {
                v.to_string()
            } else {
                new_key_text(&v)
            }
        }
        KeysCommand::Roll { key_id, grace } => {
            let mut body = json!({});
            if let Some(g) = grace {
                body["graceSeconds"] = json!(g);
            }
            let path = format!("{keys}/{}/roll", segment(key_id)?);
            let v = s.ok(Method::POST, &path, Some(body)).await?;
            if a.json {
                v.to_string()
            } else {
                new_key_text(&v)
            }
        }
        KeysCommand::List => {
            let v = s.ok(Method::GET, &keys, None).await?;
            if a.json {
                v.to_string()
            } else {
                list_table(&v)
            }
        }
        KeysCommand::Usage {
            key_id,
            bucket,
            from,
            to,
        } => {
            let mut q = vec![("bucket", bucket.as_str())];
            if let Some(f) = from {
                q.push(("from", f));
            }
            if let Some(t) = to {
                q.push(("to", t));
            }
            let mut u = reqwest::Url::parse("http://query.invalid/")?;
            u.query_pairs_mut().extend_pairs(&q);
            let query = u.query().unwrap_or_default().to_owned();
            let path = format!("{keys}/{}/usage?{query}", segment(key_id)?);
            let v = s.ok(Method::GET, &path, None).await?;
            if a.json {
                v.to_string()
            } else {
                usage_table(&v)
            }
        }
        KeysCommand::Delete { key_id } => {
            let path = format!("{keys}/{}", segment(key_id)?);
            let v = s.ok(Method::DELETE, &path, None).await?;
            if a.json {
                v.to_string()
            } else {
                format!("deleted {key_id}")
            }
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A key id as a path segment: refused if it could leave its segment.
fn segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("invalid key id {id:?}");
    }
    Ok(id)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.contains_key("limit") => {
            format!("{}/{}s", text(&o["limit"]), text(&o["windowSeconds"]))
        }
        other => other.to_string(),
    }
}

/// A created or rolled key: each field on a line, the secret last.
fn new_key_text(v: &Value) -> String {
    let mut out = String::new();
    for (label, field) in [
        ("id", "id"),
        ("name", "name"),
        ("user", "userId"),
        ("created", "createdDate"),
        ("rolled from", "rolledFrom"),
        ("expires", "expiresAt"),
        ("permissions", "permissions"),
        ("routes", "allowedRoutes"),
        ("ips", "allowedIps"),
        ("rate limit", "rateLimit"),
    ] {
        if v.get(field).is_some_and(|f| !f.is_null()) {
            out.push_str(&format!("{label:<12} {}\n", text(&v[field])));
        }
    }
    out.push_str(&format!(
        "{:<12} {}\n(the secret is shown this once: store it now)",
        "secret",
        text(&v["apiKey"])
    ));
    out
}

/// Columns padded to their widest cell.
fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(head.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn list_table(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    vec![
                        text(&k["id"]),
                        text(&k["name"]),
                        text(&k["keyStatus"]),
                        text(&k["createdDate"]),
                        text(&k["lastUsed"]),
                        text(k.get("expiresAt").unwrap_or(&Value::Null)),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &["ID", "NAME", "STATUS", "CREATED", "LAST USED", "EXPIRES"],
        rows,
    )
}

fn usage_table(v: &Value) -> String {
    let rows = v["buckets"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    let refused = b["refused"].as_object();
                    let total: u64 = refused
                        .map(|r| r.values().filter_map(Value::as_u64).sum())
                        .unwrap_or(0);
                    let by_code = refused
                        .map(|r| {
                            r.iter()
                                .map(|(c, n)| format!("{c}={n}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    vec![
                        text(&b["start"]),
                        text(&b["accepted"]),
                        total.to_string(),
                        by_code,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["START", "ACCEPTED", "REFUSED", "BY CODE"], rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ids() {
        assert_eq!(parse_rate("100/60"), Ok((100, 60)));
        for bad in ["100", "0/60", "5/0", "a/b", "-1/5"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(segment("3f2a-xx_1").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a%2f"] {
            assert!(segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_line_up() {
        let t = table(
            &["A", "BB"],
            vec![vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz");
    }
}
