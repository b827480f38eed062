//! Signing: the message, the keyed HMAC state and the signature.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::hmac512::Midstates;
use crate::secret::SecretKey;
use crate::{SCHEME, SIGNATURE_LEN};

/// Plain borrowed data of one request, as the client signs it.
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    /// The Key ID.
    pub key_id: &'a str,
    /// The method exactly as on the request line (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The path as sent, without the query string (the vendor form), or with
    /// `?` and the raw query for the signed-query variant.
    pub request_path: &'a str,
    /// Unique per request: 1–128 visible ASCII characters, no colon.
    pub nonce: &'a str,
    /// Unix time in seconds.
    pub timestamp: u64,
    /// The raw body bytes (empty for GET).
    pub body: &'a [u8],
}

impl<'a> SignableRequest<'a> {
    /// The exact message that is signed.
    pub fn string_to_sign(&self) -> StringToSign<'a> {
        StringToSign {
            key_id: self.key_id,
            method: self.method,
            path: self.request_path,
            query: None,
            nonce: self.nonce,
            timestamp: Timestamp::number(self.timestamp),
            body: BodyForm::Raw(self.body),
        }
    }

    /// The signature of this request under `key`.
    pub fn sign(&self, key: &SigningKey) -> Signature {
        key.sign_message(&self.string_to_sign())
    }

    /// The full `Authorization` header value:
    /// `ARMOR-PSK {keyId}:{signature}:{nonce}:{timestamp}`.
    pub fn authorization(&self, key: &SigningKey) -> String {
        format!(
            "{SCHEME} {}:{}:{}:{}",
            self.key_id,
            self.sign(key),
            self.nonce,
            self.timestamp
        )
    }
}

/// The HMAC-SHA512 state keyed with a Secret Key: the key schedule is paid
/// once. It is two SHA-512 midstates, 128 bytes aligned to a cache line
/// (see [`crate::hmac512`]), so every verification reads the same small
/// amount of key memory, wherever the key lives. Zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    keyed: Midstates,
}

impl SigningKey {
    /// Keys the HMAC with the UTF-8 bytes of the secret as the user was shown
    /// it (never base64-decoded first).
    pub fn new(secret: &SecretKey) -> Self {
        Self::from_bytes(secret.expose_secret().as_bytes())
    }

    /// Keys the HMAC with raw bytes.
    pub fn from_bytes(secret: &[u8]) -> Self {
        SigningKey {
            keyed: Midstates::new(secret),
        }
    }

    /// The signature of `message`.
    pub fn sign_message(&self, message: &StringToSign<'_>) -> Signature {
        let mut mac = self.keyed.start();
        message.feed(|part| mac.update(part));
        Signature(mac.finish())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// A 64-byte HMAC-SHA512 signature. `Display` is its standard base64 text.
#[derive(Clone, Copy)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Signature(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    /// Constant-time equality: the XOR of the two, eight bytes at a time,
    /// folded into one word with no branch, then compared once behind
    /// `subtle`'s optimisation barrier (a byte-wise `ct_eq` pays that
    /// barrier 64 times).
    pub fn ct_eq(&self, other: &Signature) -> bool {
        // Whole words only: `chunks_exact` would skip a remainder.
        const _: () = assert!(SIGNATURE_LEN.is_multiple_of(8));
        let mut diff = 0u64;
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
            diff |= word(a) ^ word(b);
        }
        diff.ct_eq(&0).into()
    }
}

impl PartialEq for Signature {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for Signature {}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 88];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// The timestamp as it is signed: the client's number, or the text the
/// verifier received (leading zeros and all).
#[derive(Clone, Copy)]
pub(crate) struct Timestamp<'a> {
    text: Option<&'a str>,
    buf: [u8; 20],
    len: u8,
}

impl<'a> Timestamp<'a> {
    pub(crate) fn text(text: &'a str) -> Self {
        Timestamp {
            text: Some(text),
            buf: [0; 20],
            len: 0,
        }
    }

    pub(crate) fn number(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        buf.copy_within(i.., 0);
        Timestamp {
            text: None,
            buf,
            len: (20 - i) as u8,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self.text {
            Some(t) => t.as_bytes(),
            None => &self.buf[..usize::from(self.len)],
        }
    }
}

/// The body as it enters the message: raw, or (an accepted variant)
/// `base64(SHA-512(body))`.
#[derive(Clone, Copy)]
pub(crate) enum BodyForm<'a> {
    Raw(&'a [u8]),
    Sha512Base64([u8; 88]),
}

impl<'a> BodyForm<'a> {
    pub(crate) fn hashed(body: &[u8]) -> BodyForm<'a> {
        let digest = Sha512::digest(body);
        let mut buf = [0u8; 88];
        // 64 bytes always encode to exactly 88 characters.
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut buf);
        BodyForm::Sha512Base64(buf)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            BodyForm::Raw(b) => b,
            BodyForm::Sha512Base64(b) => b,
        }
    }
}

/// The message an ARMOR-PSK signature covers:
/// `keyId + method + requestPath + nonce + timestamp + body`.
///
/// `Display` writes exactly these bytes when the body is UTF-8 (the body is
/// shown lossily otherwise; [`StringToSign::to_bytes`] is always exact). It
/// holds no secret, but the body may be sensitive: log
/// [`StringToSign::redacted`] instead.
#[derive(Clone, Copy)]
pub struct StringToSign<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) nonce: &'a str,
    pub(crate) timestamp: Timestamp<'a>,
    pub(crate) body: BodyForm<'a>,
}

impl<'a> StringToSign<'a> {
    /// Calls `f` with each part of the message in order; their concatenation
    /// is the message.
    pub(crate) fn feed(&self, mut f: impl FnMut(&[u8])) {
        f(self.key_id.as_bytes());
        f(self.method.as_bytes());
        f(self.path.as_bytes());
        if let Some(q) = self.query {
            f(b"?");
            f(q.as_bytes());
        }
        f(self.nonce.as_bytes());
        f(self.timestamp.as_bytes());
        f(self.body.as_bytes());
    }

    /// The exact signed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.feed(|p| out.extend_from_slice(p));
        out
    }

    /// A form safe for logs and error messages: every field but the body,
    /// which is given by length and SHA-256.
    pub fn redacted(&self) -> RedactedStringToSign<'a> {
        RedactedStringToSign(*self)
    }
}

impl fmt::Display for StringToSign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut res = Ok(());
        self.feed(|p| {
            if res.is_ok() {
                res = f.write_str(&String::from_utf8_lossy(p));
            }
        });
        res
    }
}

impl fmt::Debug for StringToSign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.redacted(), f)
    }
}

/// [`StringToSign`] without the body (given by length and SHA-256) and
/// without the key id: what a server can say it signed over, so a client can
/// compare with its own message, and the same text whether or not the key
/// id exists.
#[derive(Clone, Copy)]
pub struct RedactedStringToSign<'a>(StringToSign<'a>);

impl fmt::Display for RedactedStringToSign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        let body = s.body.as_bytes();
        let digest = Sha256::digest(body);
        write!(f, "method={} requestPath={}", s.method, s.path)?;
        if let Some(q) = s.query {
            write!(f, "?{q}")?;
        }
        write!(
            f,
            " nonce={} timestamp={} bodyLength={} bodySha256=",
            s.nonce,
            String::from_utf8_lossy(s.timestamp.as_bytes()),
            body.len()
        )?;
        for b in digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedStringToSign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_differing_in_any_one_bit_are_unequal() {
        let a = Signature::from_bytes([0x5a; SIGNATURE_LEN]);
        assert!(a.ct_eq(&a));
        for i in 0..SIGNATURE_LEN * 8 {
            let mut b = *a.as_bytes();
            b[i / 8] ^= 1 << (i % 8);
            assert!(!a.ct_eq(&Signature::from_bytes(b)), "bit {i}");
        }
    }

    #[test]
    fn timestamp_digits() {
        for n in [0u64, 7, 10, 1_528_140_529, u64::MAX] {
            assert_eq!(Timestamp::number(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn display_is_the_signed_bytes_and_redaction_hides_the_body() {
        let req = SignableRequest {
            key_id: "k",
            method: "POST",
            request_path: "/t",
            nonce: "n",
            timestamp: 12,
            body: b"{\"password\":\"hunter2\"}",
        };
        let s = req.string_to_sign();
        assert_eq!(s.to_string().as_bytes(), s.to_bytes().as_slice());
        assert_eq!(s.to_string(), "kPOST/tn12{\"password\":\"hunter2\"}");
        let r = s.redacted().to_string();
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("bodyLength=22"), "{r}");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn signing_key_debug_is_redacted() {
        let k = SigningKey::from_bytes(b"secret");
        assert_eq!(format!("{k:?}"), "SigningKey(<redacted>)");
    }
}
