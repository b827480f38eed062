//! Secrets at rest and in flight: the master key file, sealing API-key
//! secrets with AES-256-GCM, password hashing, random tokens.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;

/// Prefix of every Secret Key: lets secret scanners find leaked ones.
pub const SECRET_PREFIX: &str = "apsk_";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A sealed secret as stored: master-key version, GCM nonce, ciphertext.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub version: u32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Versioned 256-bit master keys: the newest seals, all open.
pub struct MasterKeys {
    path: PathBuf,
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("path", &self.path)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MasterKeys {
    /// Reads the master key file, creating it (mode 0600, one fresh key) when
    /// it does not exist. Refuses a file readable by group or others.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut key[..]);
            write_key_file(path, &BTreeMap::from([(1, key)]))?;
        }
        Self::load(path)
    }

    /// Reads an existing master key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        check_private(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read master key file {}: {e}",
                path.display()
            ))
        })?);
        let bad = |why: &str| Error::Config(format!("master key file {}: {why}", path.display()));
        let mut keys = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (version, b64) = line
                .split_once(':')
                .ok_or_else(|| bad("each line must be VERSION:BASE64KEY"))?;
            let version: u32 = version.trim().parse().map_err(|_| bad("bad version"))?;
            let raw = Zeroizing::new(B64.decode(b64.trim()).map_err(|_| bad("bad base64"))?);
            let key: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| bad("each key must be 32 bytes"))?;
            keys.insert(version, Zeroizing::new(key));
        }
        if keys.is_empty() {
            return Err(bad("no keys"));
        }
        Ok(MasterKeys {
            path: path.to_owned(),
            keys,
        })
    }

    /// Appends a new version to the file and returns it; the running set of
    /// keys is re-read from the file.
    pub fn add_version(path: &Path) -> Result<Self, Error> {
        let mut keys = Self::load(path)?.keys;
        let next = keys.keys().next_back().copied().unwrap_or(0) + 1;
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        keys.insert(next, key);
        write_key_file(path, &keys)?;
        Self::load(path)
    }

    /// The version new secrets are sealed with.
    pub fn current_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    /// Whether `version` is known.
    pub fn has_version(&self, version: u32) -> bool {
        self.keys.contains_key(&version)
    }

    /// A 16-byte key for `label`, derived from the oldest version in the
    /// file: the same on every node that has the file, and unchanged by a
    /// rotation (which only adds versions). For keys that must agree across
    /// nodes but are not worth a table of their own, such as the replay
    /// fingerprint key.
    pub fn derive_16(&self, label: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"armor derived key\0");
        h.update((label.len() as u64).to_be_bytes());
        h.update(label.as_bytes());
        if let Some(oldest) = self.keys.values().next() {
            h.update(&oldest[..]);
        }
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Seals `plaintext` for the row of `key_id` with the newest key.
    pub fn seal(&self, key_id: &str, plaintext: &[u8]) -> Result<Sealed, Error> {
        let version = self.current_version();
        let cipher = self.cipher(version)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(key_id, version);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        Ok(Sealed {
            version,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed secret; fails if it was moved to another row or
    /// tampered with.
    pub fn open(&self, key_id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, Error> {
        let cipher = self.cipher(sealed.version)?;
        if sealed.nonce.len() != 12 {
            return Err(Error::Internal("sealed secret has a bad nonce".into()));
        }
        let aad = associated_data(key_id, sealed.version);
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Internal(format!("secret of key {key_id} does not open")))
    }

    fn cipher(&self, version: u32) -> Result<Aes256Gcm, Error> {
        let key = self
            .keys
            .get(&version)
            .ok_or_else(|| Error::Internal(format!("unknown master key version {version}")))?;
        Aes256Gcm::new_from_slice(&key[..]).map_err(|_| Error::Internal("bad master key".into()))
    }
}

fn associated_data(key_id: &str, version: u32) -> Vec<u8> {
    let mut aad = b"armor api key secret\0".to_vec();
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Config(format!(
            "cannot read master key file {}: {e}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "master key file {} has mode {mode:o}: it must not be readable by group or others (chmod 600)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// Writes the whole file atomically: a 0600 temp file, fsync, rename.
fn write_key_file(path: &Path, keys: &BTreeMap<u32, Zeroizing<[u8; 32]>>) -> Result<(), Error> {
    let io = |e: std::io::Error| {
        Error::Config(format!(
            "cannot write master key file {}: {e}",
            path.display()
        ))
    };
    let mut text = Zeroizing::new(String::from(
        "# armor master keys: VERSION:BASE64. The newest seals, all open. Keep this file private.\n",
    ));
    for (v, k) in keys {
        text.push_str(&format!("{v}:{}\n", B64.encode(&k[..])));
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A new Secret Key: the prefix and 256 random bits, base64url.
pub fn new_secret() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    Zeroizing::new(format!("{SECRET_PREFIX}{}", B64URL.encode(&raw[..])))
}

/// A random opaque token (256 bits, hex).
pub fn new_token() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    Zeroizing::new(hex::encode(&raw[..]))
}

/// A random password for the first administrator.
pub fn new_password() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 18]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    Zeroizing::new(B64URL.encode(&raw[..]))
}

/// 16 random bytes.
pub fn random_16() -> [u8; 16] {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    raw
}

/// How tokens and codes are stored: SHA-256 of the text.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1).
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored hash; `None` (unknown user, or a user
/// without a password) checks against a dummy hash so timing says nothing.
pub fn verify_password(password: &str, stored: Option<&str>, dummy: &str) -> bool {
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy, false),
    };
    let ok = PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_the_key_id_and_rotation_keeps_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mk = MasterKeys::load_or_create(&path).unwrap();
        let sealed = mk.seal("key-a", b"apsk_x").unwrap();
        assert_eq!(&mk.open("key-a", &sealed).unwrap()[..], b"apsk_x");
        assert!(mk.open("key-b", &sealed).is_err());
        let rotated = MasterKeys::add_version(&path).unwrap();
        assert_eq!(rotated.current_version(), 2);
        assert_eq!(&rotated.open("key-a", &sealed).unwrap()[..], b"apsk_x");
        assert_eq!(rotated.seal("key-a", b"y").unwrap().version, 2);
    }

    #[cfg(unix)]
    #[test]
    fn loose_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKeys::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKeys::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn secrets_have_the_prefix_and_256_bits() {
        let s = new_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(s.len(), SECRET_PREFIX.len() + 43);
    }
}
