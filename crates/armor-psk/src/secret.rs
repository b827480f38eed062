//! The Secret Key: zeroized on drop, never printed.

use zeroize::Zeroize;

/// A Secret Key as the user was shown it. Its bytes are zeroized when it is
/// dropped; `Debug` prints a placeholder and there is no `Display`.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Takes ownership of the secret text.
    pub fn new(secret: String) -> Self {
        SecretKey(secret)
    }

    /// The secret text. Keep the borrow short.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl From<String> for SecretKey {
    fn from(s: String) -> Self {
        SecretKey(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretKey::new("apsk_topsecret".to_owned());
        assert_eq!(format!("{s:?}"), "SecretKey(<redacted>)");
        assert_eq!(s.expose_secret(), "apsk_topsecret");
    }
}
