//! Client commands: `sign`, `call`, `configure`, `keys`.
//!
//! - `sign.rs`: `armor sign`, print one `Authorization` value.
//! - `call.rs`: `armor call`, sign and send one request.
//! - `configure.rs`: `armor configure`, write a credentials profile.
//! - `keys.rs`: `armor keys ...`, API keys of a server (password sign-in).
//! - `profile.rs`: the credentials file (`~/.config/armor/credentials`).
//!
//! Where values come from, first match wins: the command-line flag, its
//! `ARMOR_*` env var (clap `env`), then the profile (`--profile`,
//! `ARMOR_PROFILE`, default `default`). The secret key is never a flag: it
//! comes from `ARMOR_SECRET_KEY` or the profile, is held in a
//! [`SecretKey`] (zeroized, `Debug` redacted) and never printed.

mod call;
mod configure;
mod keys;
mod profile;
mod sign;

use std::io::Read as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use armor_psk::{SecretKey, MAX_FIELD_LEN};

pub use call::{call, CallArgs};
pub use configure::{configure, ConfigureArgs};
pub use keys::{keys, KeysArgs};
pub use sign::{sign, SignArgs};

/// Env var holding the secret key (there is deliberately no flag).
pub const SECRET_KEY_ENV: &str = "ARMOR_SECRET_KEY";

/// Key id and secret, resolved from flags, env and profile.
struct Credentials {
    key_id: String,
    secret: SecretKey,
    /// The profile's endpoint, when it was read.
    endpoint: Option<String>,
}

/// Resolves the key id (flag/env, else profile) and the secret
/// (`ARMOR_SECRET_KEY`, else profile). The profile file is read only when
/// something is missing or `want_endpoint` is set.
fn resolve_credentials(
    key_id: Option<String>,
    profile_name: &str,
    want_endpoint: bool,
) -> anyhow::Result<Credentials> {
    let env_secret = match std::env::var(SECRET_KEY_ENV) {
        Ok(s) if !s.is_empty() => Some(SecretKey::new(s)),
        Ok(_) | Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{SECRET_KEY_ENV} is not valid UTF-8"),
    };
    let key_id = key_id.filter(|k| !k.is_empty());

    let mut endpoint = None;
    let (key_id, secret) = match (key_id, env_secret) {
        (Some(k), Some(s)) if !want_endpoint => (k, s),
        (key_id, secret) => {
            let found = profile::lookup(profile_name)?;
            let why = |field: &str| {
                if !found.file_exists {
                    format!("no credentials file at {}", found.path.display())
                } else if found.profile.is_none() {
                    format!("no profile [{profile_name}] in {}", found.path.display())
                } else {
                    format!(
                        "profile [{profile_name}] in {} has no {field}",
                        found.path.display()
                    )
                }
            };
            let key_id_missing = why("key_id");
            let secret_missing = why("secret_key");
            let p = found.profile.unwrap_or_default();
            endpoint = p.endpoint;
            let key_id = key_id.or(p.key_id).ok_or_else(|| {
                anyhow!(
                    "no key id: pass --key-id, set ARMOR_KEY_ID or run \
                     `armor configure --profile {profile_name}` ({key_id_missing})"
                )
            })?;
            let secret = secret.or(p.secret_key).ok_or_else(|| {
                anyhow!(
                    "no secret key: set {SECRET_KEY_ENV} or run \
                     `armor configure --profile {profile_name}` ({secret_missing})"
                )
            })?;
            (key_id, secret)
        }
    };
    check_field("key id", &key_id)?;
    Ok(Credentials {
        key_id,
        secret,
        endpoint,
    })
}

/// Key ids and nonces: 1–128 visible ASCII characters (0x21–0x7E), no `:`
/// (the header splits on it).
fn check_field(what: &str, value: &str) -> anyhow::Result<()> {
    let n = value.chars().count();
    if n == 0 || n > MAX_FIELD_LEN {
        bail!("invalid {what}: must be 1 to {MAX_FIELD_LEN} characters long, got {n}");
    }
    if let Some(c) = value.chars().find(|c| !('!'..='~').contains(c)) {
        bail!(
            "invalid {what}: only visible ASCII characters (0x21-0x7E) are allowed, found {:?}",
            c
        );
    }
    if value.contains(':') {
        bail!("invalid {what}: ':' is not allowed (it separates the header fields)");
    }
    Ok(())
}

/// An HTTP method token (RFC 9110), uppercased: the scheme signs the method
/// in uppercase, exactly as on the request line.
fn normalize_method(method: &str) -> anyhow::Result<String> {
    let ok = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        bail!("invalid method {method:?}: expected a token such as GET or POST");
    }
    Ok(method.to_ascii_uppercase())
}

/// A body argument: `@FILE` reads the file, `-` reads stdin, anything else is
/// the body itself.
fn read_body(arg: &str) -> anyhow::Result<Vec<u8>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the body from stdin")?;
        Ok(buf)
    } else if let Some(file) = arg.strip_prefix('@') {
        std::fs::read(Path::new(file)).with_context(|| format!("cannot read body file {file}"))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// A fresh random 128-bit nonce: 32 lowercase hex digits.
fn random_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The clock, read here at the command-line edge only.
#[allow(clippy::disallowed_methods)]
fn now() -> anyhow::Result<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| anyhow!("the system clock is before 1970"))
}

/// A `--timestamp` value: ASCII digits only (no sign), as the header demands.
fn parse_timestamp(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected Unix seconds: ASCII digits only".into());
    }
    s.parse().map_err(|_| "too large".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert!(check_field("nonce", "abc-123_~!").is_ok());
        assert!(check_field("nonce", &"N".repeat(128)).is_ok());
        for bad in ["", "a:b", "a b", "é", "\u{7f}"] {
            assert!(check_field("nonce", bad).is_err(), "{bad:?}");
        }
        assert!(check_field("nonce", &"N".repeat(129)).is_err());
    }

    #[test]
    fn nonces_are_32_hex() {
        let a = random_nonce();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_nonce());
    }

    #[test]
    fn methods_and_timestamps() {
        assert_eq!(normalize_method("post").unwrap(), "POST");
        assert!(normalize_method("GE T").is_err());
        assert!(normalize_method("").is_err());
        assert_eq!(parse_timestamp("0017").unwrap(), 17);
        assert!(parse_timestamp("+1").is_err());
        assert!(parse_timestamp("18446744073709551616").is_err());
    }
}
