//! The credentials profile file, `~/.config/armor/credentials`.
//!
//! An INI-like text in the manner of the AWS CLI:
//!
//! ```text
//! # comment
//! [default]
//! key_id = 20a37099-4a0b-432f-bf46-5fa690a0405c
//! secret_key = apsk_...
//! endpoint = https://api.example.com
//! ```
//!
//! Rules: blank lines and lines starting with `#` or `;` are ignored; a
//! `[name]` line opens a section; every other line is `key = value`, split at
//! the first `=`, both sides trimmed (values are never quoted and there are no
//! inline comments, so a secret may hold `#`, `;` or `=`). Keys are matched
//! without regard to case, section names exactly. A duplicate section or a
//! duplicate key in one section is an error, as is anything else. Errors name
//! the line number, never the line: it may hold a secret.
//!
//! Unknown keys are kept and ignored. `armor configure` rewrites only the
//! lines it sets and keeps every other line (comments included) as it was.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use armor_psk::SecretKey;

/// Env var that overrides the credentials file path.
pub const CREDENTIALS_FILE_ENV: &str = "ARMOR_CREDENTIALS_FILE";

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// Where the credentials file lives: `$ARMOR_CREDENTIALS_FILE`, else
/// `$HOME/.config/armor/credentials`.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(CREDENTIALS_FILE_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = ["HOME", "USERPROFILE"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|h| !h.is_empty()))
        .ok_or_else(|| {
            anyhow!("cannot locate the credentials file: set HOME or {CREDENTIALS_FILE_ENV}")
        })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("armor")
        .join("credentials"))
}

/// One profile's settings. `Debug` never shows the secret.
#[derive(Default)]
pub struct Profile {
    pub key_id: Option<String>,
    pub secret_key: Option<SecretKey>,
    pub endpoint: Option<String>,
    /// The account e-mail `armor keys` signs in with.
    pub email: Option<String>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("key_id", &self.key_id)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("email", &self.email)
            .finish()
    }
}

/// The outcome of looking a profile up.
pub struct Lookup {
    pub path: PathBuf,
    /// Whether the file exists at all.
    pub file_exists: bool,
    /// The profile, when the file has that section.
    pub profile: Option<Profile>,
}

/// Reads the credentials file and returns profile `name`. A missing file is
/// not an error (the caller says what was missing); an unreadable or
/// malformed one is. A file that group or others may read draws a warning on
/// stderr, and is still used.
pub fn lookup(name: &str) -> anyhow::Result<Lookup> {
    let path = credentials_path()?;
    let Some(text) = read_file(&path)? else {
        return Ok(Lookup {
            path,
            file_exists: false,
            profile: None,
        });
    };
    let sections = parse(&text).with_context(|| format!("in {}", path.display()))?;
    let profile = sections
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.to_profile(&text));
    Ok(Lookup {
        path,
        file_exists: true,
        profile,
    })
}

/// Reads the file, `None` when it does not exist.
fn read_file(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_exposed(path);
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("{} is not valid UTF-8", path.display()))?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("cannot read {}", path.display()))),
    }
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "armor: warning: {} is accessible to group or others (mode {mode:04o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// A parsed section: its name, the line index of its header, and its
/// entries as line indices (values are re-read from the text on demand, so
/// secrets are not copied around).
#[derive(Debug)]
struct Section {
    name: String,
    header: usize,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
}

impl Section {
    fn get<'t>(&self, text: &'t str, key: &str) -> Option<&'t str> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.key.eq_ignore_ascii_case(key))?;
        let line = text.lines().nth(entry.line)?;
        let (_, value) = line.split_once('=')?;
        Some(value.trim())
    }

    fn to_profile(&self, text: &str) -> Profile {
        let get = |k: &str| self.get(text, k).filter(|v| !v.is_empty());
        Profile {
            key_id: get("key_id").map(str::to_owned),
            secret_key: get("secret_key").map(|s| SecretKey::new(s.to_owned())),
            endpoint: get("endpoint").map(str::to_owned),
            email: get("email").map(str::to_owned),
        }
    }
}

/// Parses the whole file. Errors carry 1-based line numbers, never content.
fn parse(text: &str) -> anyhow::Result<Vec<Section>> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let name = inner
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| anyhow!("line {n}: a section header is `[profile-name]`"))?;
            if let Some(prev) = sections.iter().find(|s| s.name == name) {
                bail!(
                    "line {n}: profile [{name}] already started on line {}",
                    prev.header + 1
                );
            }
            sections.push(Section {
                name: name.to_owned(),
                header: i,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            bail!("line {n}: expected `[profile]`, `key = value` or a `#` comment");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("line {n}: missing key before `=`");
        }
        let Some(section) = sections.last_mut() else {
            bail!("line {n}: `{key} = ...` comes before any `[profile]` header");
        };
        if let Some(prev) = section
            .entries
            .iter()
            .find(|e| e.key.eq_ignore_ascii_case(key))
        {
            bail!(
                "line {n}: `{key}` already set on line {} of profile [{}]",
                prev.line + 1,
                section.name
            );
        }
        section.entries.push(Entry {
            key: key.to_owned(),
            line: i,
        });
    }
    Ok(sections)
}

/// Returns `text` with profile `name` holding `set` (key, value) pairs:
/// existing lines of those keys are replaced, missing ones appended to the
/// section, a missing section appended to the file. Every other line is kept.
fn update_text(text: &str, name: &str, set: &[(&str, &str)]) -> anyhow::Result<String> {
    let sections = parse(text)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match sections.iter().find(|s| s.name == name) {
        Some(section) => {
            let mut missing = Vec::new();
            for &(key, value) in set {
                match section
                    .entries
                    .iter()
                    .find(|e| e.key.eq_ignore_ascii_case(key))
                {
                    Some(e) => {
                        if let Some(l) = lines.get_mut(e.line) {
                            *l = format!("{key} = {value}");
                        }
                    }
                    None => missing.push(format!("{key} = {value}")),
                }
            }
            let at = section
                .entries
                .iter()
                .map(|e| e.line)
                .max()
                .unwrap_or(section.header)
                + 1;
            lines.splice(at..at, missing);
        }
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(format!("[{name}]"));
            lines.extend(set.iter().map(|(k, v)| format!("{k} = {v}")));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// Sets `set` in profile `name` of the credentials file, creating the file
/// (mode 0600, directory 0700) if needed. The new text is written to a
/// temporary file beside it and renamed over it, so readers never see half a
/// file and the result is always mode 0600. Returns the path written.
pub fn update(name: &str, set: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let path = credentials_path()?;
    // Write beside the real file when the path is a symlink.
    let path = fs::canonicalize(&path).unwrap_or(path);
    let old = read_file(&path)?.unwrap_or_default();
    let new = update_text(&old, name, set).with_context(|| {
        format!(
            "{} is malformed; fix it by hand, it was not changed",
            path.display()
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = write_private(&tmp, new.as_bytes()).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(anyhow!(e).context(format!("cannot write {}", path.display())));
    }
    Ok(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const FILE: &str = "# mine\n[default]\nkey_id = k1\nsecret_key = s=#;1\n\n; other\n[prod]\nKEY_ID=k2\nendpoint = https://x\n";

    #[test]
    fn parses_sections_and_values() {
        let s = parse(FILE).unwrap();
        assert_eq!(s.len(), 2);
        let d = s[0].to_profile(FILE);
        assert_eq!(d.key_id.as_deref(), Some("k1"));
        assert_eq!(d.secret_key.unwrap().expose_secret(), "s=#;1");
        let p = s[1].to_profile(FILE);
        assert_eq!(p.key_id.as_deref(), Some("k2"));
        assert_eq!(p.endpoint.as_deref(), Some("https://x"));
        assert!(p.secret_key.is_none());
    }

    #[test]
    fn errors_name_lines_not_content() {
        for (text, line) in [
            ("secret_key = hunter2\n", "line 1"),
            ("[a]\nhunter2\n", "line 2"),
            ("[a]\n[a]\n", "line 2"),
            ("[a]\nk=1\nK=hunter2\n", "line 3"),
            ("[a\n", "line 1"),
            ("[a]\n = hunter2\n", "line 2"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(line), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn update_keeps_other_lines() {
        let out = update_text(FILE, "prod", &[("key_id", "k3"), ("secret_key", "s3")]).unwrap();
        assert_eq!(
            out,
            "# mine\n[default]\nkey_id = k1\nsecret_key = s=#;1\n\n; other\n[prod]\nkey_id = k3\nendpoint = https://x\nsecret_key = s3\n"
        );
        let out = update_text(FILE, "new", &[("key_id", "k4")]).unwrap();
        assert!(out.starts_with(FILE), "{out}");
        assert!(out.ends_with("\n\n[new]\nkey_id = k4\n"), "{out}");
        let out = update_text("", "default", &[("key_id", "k")]).unwrap();
        assert_eq!(out, "[default]\nkey_id = k\n");
        // An empty section gets its keys right after the header.
        let out = update_text("[a]\n[b]\nx = 1\n", "a", &[("key_id", "k")]).unwrap();
        assert_eq!(out, "[a]\nkey_id = k\n[b]\nx = 1\n");
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = Profile {
            secret_key: Some(SecretKey::new("hunter2".into())),
            ..Profile::default()
        };
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
