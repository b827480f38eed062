//! Codes for users (activation, reset, phone and sign-in codes) and the
//! checks of what users type in: shared by user administration, second
//! factors and sessions.

use rand::Rng as _;
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::Error;

/// Lifetimes of user codes (seconds).
pub const ACTIVATION_TTL: u64 = 7 * 86_400;
pub const RESET_TTL: u64 = 3_600;
pub const PHONE_CODE_TTL: u64 = 600;
pub const LOGIN_CODE_TTL: u64 = 300;
/// Shortest password accepted by `setpassword`.
pub const MIN_PASSWORD: usize = 12;

/// A freshly issued code, shown once.
pub struct IssuedCode {
    pub code: Zeroizing<String>,
    pub expires_at: u64,
}

pub(super) fn sec(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A code an administrator can read out: 20 characters of an alphabet
/// without look-alikes (100 bits), in groups of four.
pub(super) fn human_code() -> Zeroizing<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let mut out = Zeroizing::new(String::with_capacity(24));
    for i in 0..20 {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[rng.gen_range(0..32)]));
    }
    out
}

/// Six random digits.
pub(super) fn digit_code() -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{:06}",
        rand::rngs::OsRng.gen_range(0..1_000_000u32)
    ))
}

/// A code as typed, normalised: case, spaces and dashes ignored.
fn code_norm(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

/// The key codes are stored under, derived from the master key file.
pub(super) fn code_key(master: &super::master::Master) -> [u8; 16] {
    master.current().derive_16("user code key v1")
}

/// The stored hash of a code: HMAC-SHA256 under `key` (from
/// [`code_key`]), so a copy of the database cannot try the 10^6 six-digit
/// codes against it.
pub(super) fn code_hash(key: &[u8], code: &str) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac as _};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(code_norm(code).as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The unkeyed hash long codes were stored under before: a pending
/// activation or reset code issued before the upgrade still works.
pub(super) fn legacy_code_hash(code: &str) -> Vec<u8> {
    crypto::token_hash(&code_norm(code)).to_vec()
}

pub(super) fn valid_email(email: &str) -> Result<String, Error> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::BadRequest("email must be an email address".into()));
    }
    Ok(e.to_owned())
}

pub(super) fn valid_text(field: &str, value: &str, max: usize) -> Result<String, Error> {
    let v = value.trim();
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "{field} must be at most {max} characters, without control characters"
        )));
    }
    Ok(v.to_owned())
}

pub(super) fn valid_password(password: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=1024).contains(&n) {
        return Err(Error::BadRequest(format!(
            "password must be {MIN_PASSWORD} to 1024 characters"
        )));
    }
    Ok(())
}

pub(super) fn valid_phone(phone: &str) -> Result<String, Error> {
    let p: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = p.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(
            "phoneNumber must be in international form, e.g. +15551234567".into(),
        ));
    }
    Ok(p)
}

pub(super) fn valid_reference_key(key: &str) -> Result<String, Error> {
    let k = key.trim().to_ascii_lowercase();
    if k.is_empty()
        || k.len() > 100
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(Error::BadRequest(
            "the reference key must be 1 to 100 letters, digits, '-', '.' or '_'".into(),
        ));
    }
    Ok(k)
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_codes_are_readable_and_hash_as_typed() {
        let c = human_code();
        assert_eq!(c.len(), 24);
        assert_eq!(c.matches('-').count(), 4);
        let typed = c.to_ascii_lowercase().replace('-', " ");
        let k = [7u8; 16];
        assert_eq!(code_hash(&k, &c), code_hash(&k, &typed));
        assert_ne!(code_hash(&k, &c), code_hash(&k, &human_code()));
        assert_ne!(code_hash(&k, &c), code_hash(&[8u8; 16], &c));
        assert_ne!(code_hash(&k, &c), legacy_code_hash(&c));
    }

    #[test]
    fn input_checks() {
        assert!(valid_email("a@b.c").is_ok());
        assert!(valid_email("ab.c").is_err());
        assert!(valid_email("a b@c.d").is_err());
        assert_eq!(valid_phone("+1 555-123 4567").unwrap(), "+15551234567");
        assert!(valid_phone("5551234567").is_err());
        assert!(valid_reference_key("Recovery.Email").is_ok());
        assert!(valid_reference_key("a/b").is_err());
        assert!(valid_password("short").is_err());
        assert!(valid_password("long enough password").is_ok());
    }
}
