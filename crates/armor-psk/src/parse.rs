//! The bounded `Authorization` parser.
//!
//! Hand-written, no regex; it borrows from the input and allocates nothing.

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
        let f = Fields::scan(value.as_bytes())?;
        let text = &value[f.key_id.0..];
        Ok(f.credentials(text))
    }

    /// As [`Credentials::parse`], for a raw header value that may not be
    /// valid text.
    pub fn parse_bytes(value: &'a [u8]) -> Result<Self, ParseError> {
        let f = Fields::scan(value)?;
        // The scan found only ASCII from the key id on.
        let text = std::str::from_utf8(&value[f.key_id.0..])
            .map_err(|_| ParseError::Malformed("the credentials must be ASCII"))?;
        Ok(f.credentials(text))
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

/// Where each field of a valid header lies (byte ranges of the value),
/// and what the signature and timestamp decode to.
struct Fields {
    key_id: (usize, usize),
    signature: Signature,
    nonce: (usize, usize),
    timestamp: (usize, u64),
}

impl Fields {
    /// Checks every rule of [`Credentials::parse`] on the raw bytes.
    fn scan(value: &[u8]) -> Result<Self, ParseError> {
        let scheme_len = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
        let (scheme, rest) = value.split_at(scheme_len);
        if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) {
            return Err(ParseError::NotArmorPsk);
        }
        if value.len() > MAX_HEADER_LEN {
            return Err(ParseError::Malformed("the header is longer than 8 KiB"));
        }
        let start = scheme_len + rest.iter().take_while(|&&b| b == b' ').count();
        let creds = &value[start..];
        if creds.is_empty() {
            return Err(ParseError::Malformed(
                "expected credentials after the scheme: keyId:signature:nonce:timestamp",
            ));
        }

        let mut colons = memchr::memchr_iter(b':', creds);
        let (Some(a), Some(b), Some(c), None) =
            (colons.next(), colons.next(), colons.next(), colons.next())
        else {
            return Err(ParseError::Malformed(
                "expected exactly four colon-separated fields: keyId:signature:nonce:timestamp (a nonce may not contain ':')",
            ));
        };
        if !visible_ascii(&creds[..a]) {
            return Err(ParseError::Malformed(
                "keyId must be 1 to 128 visible ASCII characters",
            ));
        }
        if !visible_ascii(&creds[b + 1..c]) {
            return Err(ParseError::Malformed(
                "nonce must be 1 to 128 visible ASCII characters",
            ));
        }
        let signature = decode_signature(&creds[a + 1..b]).ok_or(ParseError::Malformed(
            "signature must be padded standard base64 of a 64-byte HMAC-SHA512",
        ))?;
        let timestamp = parse_timestamp(&creds[c + 1..]).ok_or(ParseError::Malformed(
            "timestamp must be Unix seconds: ASCII digits only, no sign",
        ))?;
        Ok(Fields {
            key_id: (start, start + a),
            signature,
            nonce: (start + b + 1, start + c),
            timestamp: (start + c + 1, timestamp),
        })
    }

    /// The credentials, borrowed from `text`: the value from the key id on.
    fn credentials(self, text: &str) -> Credentials<'_> {
        let at = self.key_id.0;
        Credentials {
            key_id: &text[..self.key_id.1 - at],
            signature: self.signature,
            nonce: &text[self.nonce.0 - at..self.nonce.1 - at],
            timestamp: self.timestamp.1,
            timestamp_text: &text[self.timestamp.0 - at..],
        }
    }
}

/// 1..=128 bytes in 0x21..=0x7E.
fn visible_ascii(field: &[u8]) -> bool {
    // Every byte is looked at (no early exit), so the check vectorises.
    (1..=MAX_FIELD_LEN).contains(&field.len())
        && field
            .iter()
            .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x7f - 0x21))
}

/// Marks a byte that is not in the standard base64 alphabet.
const INVALID: u8 = 0xff;

/// Each byte's 6-bit value in the standard base64 alphabet, or [`INVALID`].
const BASE64: [u8; 256] = {
    let mut table = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The signature from its 88 characters: 21 groups of four symbols give
/// 63 bytes, and the last group is two symbols and `==`. Canonical text
/// only: the last symbol's four unused bits must be zero.
fn decode_signature(field: &[u8]) -> Option<Signature> {
    let field: &[u8; SIGNATURE_B64_LEN] = field.try_into().ok()?;
    let (groups, last) = field.split_at(SIGNATURE_B64_LEN - 4);
    let mut bytes = [0u8; SIGNATURE_LEN];
    // The OR of every symbol's value: INVALID's top bits show through.
    let mut seen = 0u8;
    for (group, out) in groups.chunks_exact(4).zip(bytes.chunks_exact_mut(3)) {
        let mut n = 0u32;
        for &symbol in group {
            let v = BASE64[usize::from(symbol)];
            seen |= v;
            n = n << 6 | u32::from(v);
        }
        out.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let (hi, lo) = (BASE64[usize::from(last[0])], BASE64[usize::from(last[1])]);
    seen |= hi | lo;
    if seen & 0xc0 != 0 || lo & 0x0f != 0 || last[2..] != *b"==" {
        return None;
    }
    bytes[SIGNATURE_LEN - 1] = hi << 2 | lo >> 4;
    Some(Signature::from_bytes(bytes))
}

/// Decimal digits only, at least one, fitting in a `u64`.
fn parse_timestamp(field: &[u8]) -> Option<u64> {
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
    Some(value)
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

    /// The signature decoder agrees with the `base64` crate's strict
    /// standard engine on every one-byte change of a valid text (each of
    /// the 256 bytes at each of the 88 positions, the padding included),
    /// and refuses a text one character short or long.
    #[test]
    fn the_signature_decoder_agrees_with_the_strict_base64_engine() {
        use base64::Engine as _;
        let reference = |text: &[u8]| -> Option<[u8; SIGNATURE_LEN]> {
            let mut buf = [0u8; 66];
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(text, &mut buf)
                .ok()?;
            buf.get(..n)?.try_into().ok()
        };
        let ours = |text: &[u8]| decode_signature(text).map(|s| *s.as_bytes());
        let mut text = SIG.as_bytes().to_vec();
        assert_eq!(ours(&text), reference(&text));
        assert!(ours(&text).is_some());
        for at in 0..text.len() {
            let was = text[at];
            for symbol in 0..=255u8 {
                text[at] = symbol;
                assert_eq!(ours(&text), reference(&text), "{symbol:#x} at {at}");
            }
            text[at] = was;
        }
        assert_eq!(ours(&SIG.as_bytes()[..87]), None);
        assert_eq!(ours(format!("{SIG}A").as_bytes()), None);
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
