//! `armor configure`: write or update one credentials profile.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use armor_psk::SecretKey;
use reqwest::Url;

use super::profile::{self, DEFAULT_PROFILE};

/// Write or update a profile of the credentials file
/// (~/.config/armor/credentials, or ARMOR_CREDENTIALS_FILE).
///
/// The secret key is read from stdin, one line (with a prompt when stdin is
/// a terminal); an empty line keeps the profile's current secret. Other
/// profiles and lines of the file are kept.
#[derive(clap::Args)]
pub struct ConfigureArgs {
    /// Profile to write.
    #[arg(long, env = "ARMOR_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,
    /// Key ID to store (default: keep the current one; prompted on a terminal).
    #[arg(long, env = "ARMOR_KEY_ID")]
    key_id: Option<String>,
    /// Base URL for `armor call /path` (default: keep the current one).
    #[arg(long, env = "ARMOR_ENDPOINT")]
    endpoint: Option<String>,
    /// Account e-mail `armor keys` signs in with (default: keep the
    /// current one).
    #[arg(long, env = "ARMOR_EMAIL")]
    email: Option<String>,
}

/// Runs `armor configure`.
pub fn configure(a: ConfigureArgs) -> anyhow::Result<ExitCode> {
    let name = a.profile.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("invalid profile name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'");
    }
    let current = profile::lookup(name)?.profile.unwrap_or_default();
    let tty = std::io::stdin().is_terminal();

    let key_id = match a.key_id {
        Some(k) => Some(k.trim().to_owned()),
        None if tty => prompt("Key ID", current.key_id.as_deref())?.or(current.key_id),
        None => current.key_id,
    }
    .ok_or_else(|| anyhow!("no key id: pass --key-id (or set ARMOR_KEY_ID)"))?;
    super::check_field("key id", &key_id)?;

    let endpoint = match a.endpoint {
        Some(e) => Some(e.trim().to_owned()),
        None if tty => {
            prompt("Endpoint (optional)", current.endpoint.as_deref())?.or(current.endpoint)
        }
        None => current.endpoint,
    };
    if let Some(e) = &endpoint {
        check_endpoint(e)?;
    }

    if tty {
        let keep = if current.secret_key.is_some() {
            " [Enter keeps the current one]"
        } else {
            ""
        };
        eprint!("Secret key{keep}: ");
        std::io::stderr()
            .flush()
            .context("cannot write to stderr")?;
    }
    let secret = SecretKey::new(read_line().context("cannot read the secret key from stdin")?);
    let new_secret = !secret.expose_secret().is_empty();
    if !new_secret && current.secret_key.is_none() {
        bail!("no secret key: write it to stdin, e.g. `armor configure --key-id ID < secret.txt`");
    }
    if secret.expose_secret().chars().any(char::is_control) {
        bail!("the secret key contains control characters");
    }

    let mut set: Vec<(&str, &str)> = vec![("key_id", key_id.as_str())];
    if new_secret {
        set.push(("secret_key", secret.expose_secret()));
    }
    if let Some(e) = &endpoint {
        set.push(("endpoint", e.as_str()));
    }
    let email = a.email.map(|e| e.trim().to_owned());
    if let Some(e) = &email {
        if e.is_empty() || e.chars().any(char::is_control) {
            bail!("invalid --email {e:?}");
        }
        set.push(("email", e.as_str()));
    }
    let path = profile::update(name, &set)?;
    eprintln!("armor: saved profile [{name}] in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// One line of stdin without its line ending and surrounding whitespace
/// (copy-paste artefacts); empty at end of input.
fn read_line() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Prompts on stderr; `None` for an empty answer.
fn prompt(label: &str, current: Option<&str>) -> anyhow::Result<Option<String>> {
    match current {
        Some(c) => eprint!("{label} [{c}]: "),
        None => eprint!("{label}: "),
    }
    std::io::stderr()
        .flush()
        .context("cannot write to stderr")?;
    let answer = read_line().context("cannot read stdin")?;
    Ok((!answer.is_empty()).then_some(answer))
}

fn check_endpoint(e: &str) -> anyhow::Result<()> {
    let url = Url::parse(e).map_err(|err| anyhow!("invalid endpoint {e:?}: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid endpoint {e:?}: use an http or https URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid endpoint {e:?}: no query string or fragment");
    }
    Ok(())
}
