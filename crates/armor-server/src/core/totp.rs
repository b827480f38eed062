//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA-1)
//! and the base32 text authenticator apps read secrets in.

use hmac::{Hmac, KeyInit, Mac as _};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// Seconds per step (RFC 6238's X).
pub const STEP: u64 = 30;
/// Digits of an app code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of now, for clock drift.
pub const SKEW: u64 = 1;

/// RFC 4226 HOTP: dynamic truncation of HMAC-SHA-1(secret, counter).
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = match <Hmac<Sha1> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; never reached.
        Err(_) => return u32::MAX,
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    bin % 10u32.pow(digits)
}

/// The TOTP code at Unix time `now`, zero-padded to `digits`.
pub fn code_at(secret: &[u8], now: u64, digits: u32) -> String {
    format!(
        "{:0width$}",
        hotp(secret, now / STEP, digits),
        width = digits as usize
    )
}

/// The step a `code` matches within [`SKEW`] of `now`, if any. The caller
/// refuses steps not after the last one used (no replay).
pub fn verify(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = now / STEP;
    let mut found = None;
    for step in now_step.saturating_sub(SKEW)..=now_step + SKEW {
        let expected = format!(
            "{:0width$}",
            hotp(secret, step, DIGITS),
            width = DIGITS as usize
        );
        // Every candidate is compared, in constant time.
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            let idx = (v >> (35 - 5 * i)) & 31;
            out.push(char::from(B32[idx as usize]));
        }
    }
    out
}

/// The `otpauth://` URI an authenticator app enrols from.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        pct(issuer),
        pct(account),
        base32(secret),
        pct(issuer)
    )
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, SHA-1 column (8 digits).
    #[test]
    fn rfc6238_sha1_vectors() {
        for (t, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(SEED, t, 8), code, "T={t}");
        }
    }

    /// RFC 4226 appendix D: HOTP values for counters 0..9.
    #[test]
    fn rfc4226_hotp_vectors() {
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (c, w) in want.iter().enumerate() {
            assert_eq!(hotp(SEED, c as u64, 6), *w, "counter {c}");
        }
    }

    #[test]
    fn six_digit_codes_verify_within_one_step() {
        let t = 1_111_111_111;
        let code = code_at(SEED, t, 6);
        assert_eq!(code, "050471");
        assert_eq!(verify(SEED, &code, t), Some(t / STEP));
        assert_eq!(verify(SEED, &code, t + STEP), Some(t / STEP));
        assert_eq!(verify(SEED, &code, t - STEP), Some(t / STEP));
        assert_eq!(verify(SEED, &code, t + 2 * STEP), None);
        assert_eq!(verify(SEED, "05047", t), None);
        assert_eq!(verify(SEED, "05047a", t), None);
    }

    #[test]
    fn base32_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foo"), "MZXW6");
        assert_eq!(base32(b"foob"), "MZXW6YQ");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(SEED), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn otpauth_uri_names_issuer_account_and_secret() {
        let uri = otpauth_uri("armor", "a@b.c", SEED);
        assert_eq!(
            uri,
            "otpauth://totp/armor:a%40b.c?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=armor&algorithm=SHA1&digits=6&period=30"
        );
    }
}
