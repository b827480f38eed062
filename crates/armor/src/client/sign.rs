//! `armor sign`: print the `Authorization` value for one request.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context};
use armor_psk::{SignableRequest, SigningKey};

use super::profile::DEFAULT_PROFILE;

/// Print the `Authorization` value for one request.
///
/// The secret key comes from ARMOR_SECRET_KEY or the credentials profile,
/// never from the command line.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Key ID (else the profile's `key_id`).
    #[arg(long, env = "ARMOR_KEY_ID")]
    key_id: Option<String>,
    /// HTTP method; signed in uppercase.
    #[arg(long, short = 'X', env = "ARMOR_METHOD", default_value = "GET")]
    method: String,
    /// Request path exactly as it will be sent, signed verbatim. The vendor
    /// form has no query string; append `?query` to sign the query too.
    #[arg(long, env = "ARMOR_PATH")]
    path: String,
    /// Request body: `@FILE` reads a file, `-` reads stdin, anything else is
    /// the body itself. Default: empty.
    #[arg(long, env = "ARMOR_BODY", value_name = "@FILE|-|TEXT")]
    body: Option<String>,
    /// Nonce: 1-128 visible ASCII characters, no `:`. Default: 128 random
    /// bits as 32 lowercase hex digits.
    #[arg(long, env = "ARMOR_NONCE")]
    nonce: Option<String>,
    /// Unix time in seconds. Default: now.
    #[arg(long, env = "ARMOR_TIMESTAMP", value_parser = super::parse_timestamp)]
    timestamp: Option<u64>,
    /// Credentials profile to read the key id and secret from.
    #[arg(long, env = "ARMOR_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,
    /// Also print the exact string to sign to stderr (it includes the body).
    #[arg(long, env = "ARMOR_STRING_TO_SIGN")]
    string_to_sign: bool,
}

/// Runs `armor sign`.
pub fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let method = super::normalize_method(&a.method)?;
    if a.path.is_empty() {
        bail!("--path is empty: give the request path, e.g. /accounts/2");
    }
    if a.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--path contains whitespace or control characters, which cannot be sent \
             on a request line: percent-encode them (a space is %20)"
        );
    }
    if let Some(n) = &a.nonce {
        super::check_field("nonce", n)?;
    }
    let creds = super::resolve_credentials(a.key_id, &a.profile, false)?;
    let body = match &a.body {
        Some(arg) => super::read_body(arg)?,
        None => Vec::new(),
    };
    let nonce = a.nonce.unwrap_or_else(super::random_nonce);
    let timestamp = match a.timestamp {
        Some(t) => t,
        None => super::now()?,
    };

    let req = SignableRequest {
        key_id: &creds.key_id,
        method: &method,
        request_path: &a.path,
        nonce: &nonce,
        timestamp,
        body: &body,
    };
    let key = SigningKey::new(&creds.secret);
    drop(creds.secret);

    if a.string_to_sign {
        let mut err = std::io::stderr().lock();
        err.write_all(&req.string_to_sign().to_bytes())
            .and_then(|()| err.write_all(b"\n"))
            .context("cannot write to stderr")?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", req.authorization(&key)).context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
