//! `armor call`: sign and send one request, print the status and body.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use armor_psk::client::{sign_request_with, SignOptions};
use armor_psk::SigningKey;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};

use super::profile::DEFAULT_PROFILE;

/// The header that selects the account a request acts in.
const ACCOUNT_CONTEXT: &str = "x-account-context";

/// Sign and send one request; print the status line to stderr and the body
/// to stdout. Exit code 0 for a 2xx answer, 1 for any other.
#[derive(clap::Args)]
pub struct CallArgs {
    /// Full URL (`https://host/path?query`), or a path starting with `/`
    /// appended to the endpoint (--endpoint or the profile's `endpoint`).
    #[arg(value_name = "URL")]
    url: String,
    /// HTTP method. Default: GET, or POST when --data is given.
    #[arg(
        short = 'X',
        long = "request",
        visible_alias = "method",
        env = "ARMOR_METHOD",
        value_name = "METHOD"
    )]
    method: Option<String>,
    /// Request body: `@FILE` reads a file, `-` reads stdin, anything else is
    /// the body itself. Sent as application/json unless -H sets Content-Type.
    #[arg(short = 'd', long, env = "ARMOR_DATA", value_name = "DATA|@FILE|-")]
    data: Option<String>,
    /// Account to act in (sent as X-Account-Context).
    #[arg(long, env = "ARMOR_ACCOUNT", value_name = "ID")]
    account: Option<String>,
    /// Sign the path with `?` and the raw query (the signed-query variant)
    /// instead of the vendor form, which signs the path alone.
    #[arg(long, env = "ARMOR_SIGN_QUERY")]
    sign_query: bool,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(
        short = 'H',
        long = "header",
        env = "ARMOR_HEADER",
        value_name = "NAME: VALUE"
    )]
    headers: Vec<String>,
    /// Print the string to sign (body redacted), the request and the
    /// response headers to stderr.
    #[arg(short = 'v', long, env = "ARMOR_VERBOSE")]
    verbose: bool,
    /// Key ID (else the profile's `key_id`).
    #[arg(long, env = "ARMOR_KEY_ID")]
    key_id: Option<String>,
    /// Base URL for a URL given as a path (else the profile's `endpoint`).
    #[arg(long, env = "ARMOR_ENDPOINT")]
    endpoint: Option<String>,
    /// Credentials profile.
    #[arg(long, env = "ARMOR_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,
    /// Give up after this many seconds.
    #[arg(long, env = "ARMOR_TIMEOUT", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    timeout: u64,
}

/// Runs `armor call`.
pub fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let method = match &a.method {
        Some(m) => super::normalize_method(m)?,
        None if a.data.is_some() => "POST".to_owned(),
        None => "GET".to_owned(),
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| anyhow!("invalid method {method:?}"))?;
    if let Some(acc) = &a.account {
        if acc.is_empty() || !acc.bytes().all(|b| b.is_ascii_digit()) {
            bail!("invalid --account {acc:?}: an account id is digits only");
        }
    }
    let extra = parse_headers(&a.headers)?;
    if a.account.is_some() && extra.contains_key(ACCOUNT_CONTEXT) {
        bail!(
            "give the account either with --account or with -H 'X-Account-Context: ...', not both"
        );
    }

    let relative = a.url.starts_with('/');
    let creds = super::resolve_credentials(a.key_id, &a.profile, relative && a.endpoint.is_none())?;
    let url = build_url(&a.url, a.endpoint.or(creds.endpoint).as_deref(), &a.profile)?;

    // armor_psk::client signs exactly what reqwest will put on the request
    // line: the path and query of the parsed `Url`, percent-encoded as it
    // encodes them.
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };

    let body = match &a.data {
        Some(arg) => Some(super::read_body(arg)?),
        None => None,
    };
    let nonce = super::random_nonce();
    let timestamp = super::now()?;
    let key = SigningKey::new(&creds.secret);
    drop(creds.secret);
    let body_len = body.as_ref().map(Vec::len);

    let mut headers = HeaderMap::new();
    if body.is_some() && !extra.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(acc) = &a.account {
        headers.insert(
            HeaderName::from_static(ACCOUNT_CONTEXT),
            HeaderValue::from_str(acc)?,
        );
    }
    for (name, value) in &extra {
        headers.append(name.clone(), value.clone());
    }

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("armor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(a.timeout.min(30)))
        .timeout(Duration::from_secs(a.timeout))
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.request(method.clone(), url.clone()).headers(headers);
    if let Some(b) = body {
        request = request.body(b);
    }
    let mut request = request.build().context("cannot build the request")?;
    let signed = sign_request_with(
        &mut request,
        &creds.key_id,
        &key,
        &nonce,
        timestamp,
        SignOptions {
            sign_query: a.sign_query,
        },
    )
    .context("cannot sign the request")?;

    if a.verbose {
        eprintln!("* string to sign: {}", signed.redacted);
        eprintln!("> {method} {target} HTTP/1.1");
        eprintln!("> host: {}", host_header(&url));
        for (name, value) in request.headers() {
            if name == AUTHORIZATION {
                eprintln!(
                    "> {name}: ARMOR-PSK {}:<signature>:{nonce}:{timestamp}",
                    creds.key_id
                );
            } else {
                eprintln!("> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
            }
        }
        if let Some(n) = body_len {
            eprintln!("> ({n} byte body)");
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, version, resp_headers, resp_body) = rt.block_on(async {
        let resp = client
            .execute(request)
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("request to {} failed", redact_url(&url)))?;
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .context("cannot read the response body")?;
        anyhow::Ok((status, version, headers, body))
    })?;

    eprintln!("{version:?} {status}");
    if a.verbose {
        for (name, value) in &resp_headers {
            eprintln!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
    }
    if status == reqwest::StatusCode::UNAUTHORIZED && !a.verbose {
        eprintln!(
            "armor: hint: rerun with --verbose to compare the string to sign with the server's"
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&resp_body)
        .context("cannot write to stdout")?;
    if out.is_terminal() && !resp_body.is_empty() && !resp_body.ends_with(b"\n") {
        out.write_all(b"\n").context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;

    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `-H 'Name: value'` arguments. Authorization is ours to set.
fn parse_headers(args: &[String]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in args {
        let Some((name, value)) = h.split_once(':') else {
            bail!("invalid header {h:?}: expected 'Name: value'");
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| anyhow!("invalid header name {:?}", name.trim()))?;
        if name == AUTHORIZATION {
            bail!("-H Authorization: armor sets the Authorization header itself");
        }
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| anyhow!("invalid value for header {name}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The URL to call: `url` itself, or `endpoint` + `url` when `url` is a path.
fn build_url(url: &str, endpoint: Option<&str>, profile: &str) -> anyhow::Result<Url> {
    let full = if url.starts_with('/') {
        let endpoint = endpoint.ok_or_else(|| {
            anyhow!(
                "{url} is a path and there is no endpoint: pass a full URL, --endpoint, \
                 set ARMOR_ENDPOINT or `armor configure --profile {profile} --endpoint URL`"
            )
        })?;
        format!("{}{url}", endpoint.trim_end_matches('/'))
    } else {
        url.to_owned()
    };
    let mut parsed = Url::parse(&full).map_err(|e| {
        anyhow!(
            "invalid URL {full:?}: {e} (expected http(s)://host/path or a path starting with /)"
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!(
            "unsupported URL scheme {:?}: use http or https",
            parsed.scheme()
        );
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!("credentials in the URL are not supported: ARMOR-PSK signs the request instead");
    }
    parsed.set_fragment(None);
    Ok(parsed)
}

/// The Host header reqwest derives from the URL (for --verbose).
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// The URL without its query (which may carry data) for error messages.
fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = build_url(
            "/users/a b/{x}?q=a b&$top=1#frag",
            Some("http://h:8080/"),
            "p",
        )
        .unwrap();
        assert_eq!(u.path(), "/users/a%20b/%7Bx%7D");
        assert_eq!(u.query(), Some("q=a%20b&$top=1"));
        assert_eq!(u.fragment(), None);
        let u = build_url("/me", Some("https://h/v1"), "p").unwrap();
        assert_eq!(u.as_str(), "https://h/v1/me");
        assert!(build_url("/me", None, "p").is_err());
        assert!(build_url("ftp://h/x", None, "p").is_err());
        assert!(build_url("me", None, "p").is_err());
        assert!(build_url("http://u:pw@h/x", None, "p").is_err());
    }

    #[test]
    fn headers() {
        let m = parse_headers(&["X-A: 1".into(), "content-type:text/plain".into()]).unwrap();
        assert_eq!(m["x-a"], "1");
        assert_eq!(m[CONTENT_TYPE], "text/plain");
        assert!(parse_headers(&["Authorization: x".into()]).is_err());
        assert!(parse_headers(&["nocolon".into()]).is_err());
    }
}
