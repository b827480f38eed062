//! The bounded `Authorization` parser.
//!
//! Hand-written, no regex; it borrows from the input and allocates nothing.

use base64::Engine as _;

use crate::error::ParseError;
use crate::sign::Signature;
use crate::{MAX_FIELD_LEN, MAX_HEADER_LEN, SCHEME, SIGNATURE_LEN};

/// Length of the padded base64 text of a 64-byte signature.
const SIGNATURE_B64_LEN: usize = SIGNATURE_LEN.div_ceil(3) * 4;

/// The four fields of an ARMOR-PSK `Authorization` value, borrowed from it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    key_id: &'a str,
    signature: Signature,
    nonce: &'a str,
    timestamp: u64,
    timestamp_text: &'a str,
}

impl<'a> Credentials<'a> {
    /// Parses an `Authorization` header value.
    ///
    /// Rules (SPEC.md, "The header"): the scheme is matched without regard to
    /// case and followed by one or more spaces; the rest splits on `:` into
    /// exactly four fields: key id (1–128 visible ASCII), signature (padded
    /// standard base64 of exactly 64 bytes), nonce (1–128 visible ASCII, no
    /// colon), timestamp (digits only, fits in a `u64`).
    pub fn parse(value: &'a str) -> Result<Self, ParseError> {
        Self::parse_bytes(value.as_bytes())
    }

    /// As [`Credentials::parse`], for a raw header value that may not be
    /// valid text.
    pub fn parse_bytes(value: &'a [u8]) -> Result<Self, ParseError> {
        let scheme_len = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
        let (scheme, rest) = value.split_at(scheme_len);
        if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) {
            return Err(ParseError::NotArmorPsk);
        }
        if value.len() > MAX_HEADER_LEN {
            return Err(ParseError::Malformed("the header is longer than 8 KiB"));
        }
        let spaces = rest.iter().take_while(|&&b| b == b' ').count();
        let creds = &rest[spaces..];
        if creds.is_empty() {
            return Err(ParseError::Malformed(
                "expected credentials after the scheme: keyId:signature:nonce:timestamp",
            ));
        }

        let mut fields = creds.split(|&b| b == b':');
        let (Some(key_id), Some(signature), Some(nonce), Some(timestamp), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(ParseError::Malformed(
                "expected exactly four colon-separated fields: keyId:signature:nonce:timestamp (a nonce may not contain ':')",
            ));
        };

        let key_id = visible_ascii(key_id).ok_or(ParseError::Malformed(
            "keyId must be 1 to 128 visible ASCII characters",
        ))?;
        let nonce = visible_ascii(nonce).ok_or(ParseError::Malformed(
            "nonce must be 1 to 128 visible ASCII characters",
        ))?;
        let signature = decode_signature(signature).ok_or(ParseError::Malformed(
            "signature must be padded standard base64 of a 64-byte HMAC-SHA512",
        ))?;
        let (timestamp, timestamp_text) = parse_timestamp(timestamp).ok_or(
            ParseError::Malformed("timestamp must be Unix seconds: ASCII digits only, no sign"),
        )?;

        Ok(Credentials {
            key_id,
            signature,
            nonce,
            timestamp,
            timestamp_text,
        })
    }

    /// The key id, as sent.
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// The decoded signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The nonce, as sent.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The timestamp in Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The timestamp exactly as sent (it is what the client signed, leading
    /// zeros included).
    pub fn timestamp_text(&self) -> &'a str {
        self.timestamp_text
    }
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("nonce", &self.nonce)
            .field("timestamp", &self.timestamp_text)
            .finish_non_exhaustive()
    }
}

/// 1..=128 bytes in 0x21..=0x7E, returned as text.
fn visible_ascii(field: &[u8]) -> Option<&str> {
    if field.is_empty() || field.len() > MAX_FIELD_LEN {
        return None;
    }
    if !field.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    std::str::from_utf8(field).ok()
}

fn decode_signature(field: &[u8]) -> Option<Signature> {
    if field.len() != SIGNATURE_B64_LEN {
        return None;
    }
    // The padded text of 64 bytes decodes into at most 66; canonical
    // padding and zero trailing bits are enforced by the STANDARD engine.
    let mut buf = [0u8; SIGNATURE_B64_LEN / 4 * 3];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(field, &mut buf)
        .ok()?;
    let bytes: [u8; SIGNATURE_LEN] = buf.get(..n)?.try_into().ok()?;
    Some(Signature::from_bytes(bytes))
}

fn parse_timestamp(field: &[u8]) -> Option<(u64, &str)> {
    if field.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, std::str::from_utf8(field).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str =
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

    #[test]
    fn fields_are_borrowed_as_sent() {
        let v = format!("armor-psk   kid:{SIG}:n1:0001763880000");
        let c = Credentials::parse(&v).unwrap();
        assert_eq!(c.key_id(), "kid");
        assert_eq!(c.nonce(), "n1");
        assert_eq!(c.timestamp(), 1_763_880_000);
        assert_eq!(c.timestamp_text(), "0001763880000");
        assert_eq!(c.signature().as_bytes()[63], 63);
    }

    #[test]
    fn refusals() {
        let cases = [
            ("".to_owned(), ParseError::NotArmorPsk),
            ("ARMOR-PSKX a".to_owned(), ParseError::NotArmorPsk),
            ("Bearer x".to_owned(), ParseError::NotArmorPsk),
            (format!("ARMOR-PSK k:{SIG}:n:1 "), ParseError::Malformed("")),
            (format!("ARMOR-PSK\tk:{SIG}:n:1"), ParseError::NotArmorPsk),
            (
                format!("ARMOR-PSK k:{SIG}:n\u{e9}:1"),
                ParseError::Malformed(""),
            ),
            (
                format!("ARMOR-PSK k:{}:n:1", &SIG[..86]),
                ParseError::Malformed(""),
            ),
            (
                format!("ARMOR-PSK k:{}A=:n:1", &SIG[..85]),
                ParseError::Malformed(""),
            ),
            (
                format!("ARMOR-PSK k:{SIG}:n:18446744073709551616"),
                ParseError::Malformed(""),
            ),
            (format!("ARMOR-PSK k:{SIG}:n:+1"), ParseError::Malformed("")),
        ];
        for (value, want) in cases {
            let got = Credentials::parse(&value).unwrap_err();
            assert_eq!(got.code(), want.code(), "{value:?}");
        }
        assert!(Credentials::parse(&format!("ARMOR-PSK k:{SIG}:n:18446744073709551615")).is_ok());
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        // Same bytes but non-zero trailing bits in the last symbol.
        let mut s = SIG.to_owned();
        s.replace_range(85..86, "_");
        assert!(Credentials::parse(&format!("ARMOR-PSK k:{s}:n:1")).is_err());
        let mut s = SIG.to_owned();
        s.replace_range(85..86, "z");
        assert!(Credentials::parse(&format!("ARMOR-PSK k:{s}:n:1")).is_err());
    }

    #[test]
    fn oversized_header_is_refused() {
        let v = format!("ARMOR-PSK k:{SIG}:n:1{}", "0".repeat(MAX_HEADER_LEN));
        assert!(matches!(
            Credentials::parse(&v),
            Err(ParseError::Malformed(_))
        ));
    }
}
