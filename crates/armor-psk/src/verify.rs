//! Verification: freshness window, accepted variants, constant-time match.

use std::cell::OnceCell;
use std::sync::OnceLock;

use crate::error::Error;
use crate::parse::Credentials;
use crate::sign::{BodyForm, SigningKey, StringToSign, Timestamp};
use crate::DEFAULT_WINDOW_SECS;

/// The parts of a received request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method exactly as on the request line.
    pub method: &'a str,
    /// The path of the request target exactly as sent, without the query.
    pub path: &'a str,
    /// The raw query string (after `?`), if the target has one.
    pub query: Option<&'a str>,
    /// The raw body bytes.
    pub body: &'a [u8],
}

/// Which accepted form of the message a signature matched (SPEC.md,
/// "Accepted variants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `keyId + method + path + nonce + timestamp + body`.
    Vendor,
    /// The path followed by `?` and the raw query.
    SignedQuery,
    /// `base64(SHA-512(body))` in place of a non-empty body.
    HashedBody,
    /// Both of the above.
    SignedQueryHashedBody,
}

impl Variant {
    /// Whether the signature covers the query string.
    pub fn covers_query(self) -> bool {
        matches!(self, Variant::SignedQuery | Variant::SignedQueryHashedBody)
    }
}

/// Checks ARMOR-PSK credentials. Holds only settings; the clock is passed to
/// [`Verifier::check_time`] and the key to [`Verifier::verify`].
#[derive(Debug, Clone, Copy)]
pub struct Verifier {
    window: u64,
    require_signed_query: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            window: DEFAULT_WINDOW_SECS,
            require_signed_query: false,
        }
    }
}

impl Verifier {
    /// A verifier with a custom window (seconds either side of the clock).
    pub fn with_window(window: u64) -> Self {
        Verifier {
            window,
            ..Self::default()
        }
    }

    /// Demand that a request with a query string be signed over it.
    pub fn require_signed_query(mut self, yes: bool) -> Self {
        self.require_signed_query = yes;
        self
    }

    /// The freshness window in seconds.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Refuses a timestamp more than the window away from `now` (Unix
    /// seconds). Costs no I/O: do it before looking the key up.
    pub fn check_time(&self, creds: &Credentials<'_>, now: u64) -> Result<(), Error> {
        if creds.timestamp().abs_diff(now) > self.window {
            return Err(Error::TimestampOutOfWindow { server_time: now });
        }
        Ok(())
    }

    /// The Unix second until which a replay guard must remember these
    /// credentials: the last second their timestamp is still acceptable.
    pub fn claim_until(&self, creds: &Credentials<'_>) -> u64 {
        creds.timestamp().saturating_add(self.window)
    }

    /// The vendor-form message the server computes for these credentials and
    /// request; use its redacted form in error descriptions.
    pub fn string_to_sign<'a>(
        &self,
        creds: &Credentials<'a>,
        req: &Request<'a>,
    ) -> StringToSign<'a> {
        StringToSign {
            key_id: creds.key_id(),
            method: req.method,
            path: req.path,
            query: None,
            nonce: creds.nonce(),
            timestamp: Timestamp::text(creds.timestamp_text()),
            body: BodyForm::Raw(req.body),
        }
    }

    /// Checks the signature against every accepted form of the request, in
    /// constant time per comparison. The vendor form is tried first.
    pub fn verify(
        &self,
        key: &SigningKey,
        creds: &Credentials<'_>,
        req: &Request<'_>,
    ) -> Result<Variant, Error> {
        let base = self.string_to_sign(creds, req);
        let matches = |query: bool, hashed: Option<&BodyForm<'_>>| {
            let mut msg = base;
            if query {
                msg.query = req.query;
            }
            if let Some(h) = hashed {
                msg.body = *h;
            }
            key.sign_message(&msg).ct_eq(creds.signature())
        };
        let has_query = req.query.is_some();
        // The SHA-512 of the body is computed only once a raw-body form has
        // failed: a client signing the vendor form never pays for it.
        let hashed_cell = OnceCell::new();
        let hashed = || {
            hashed_cell
                .get_or_init(|| (!req.body.is_empty()).then(|| BodyForm::hashed(req.body)))
                .as_ref()
        };

        let with_query = || -> Option<Variant> {
            if !has_query {
                return None;
            }
            if matches(true, None) {
                return Some(Variant::SignedQuery);
            }
            match hashed() {
                Some(h) if matches(true, Some(h)) => Some(Variant::SignedQueryHashedBody),
                _ => None,
            }
        };
        let without_query = || -> Option<Variant> {
            if matches(false, None) {
                return Some(Variant::Vendor);
            }
            match hashed() {
                Some(h) if matches(false, Some(h)) => Some(Variant::HashedBody),
                _ => None,
            }
        };

        if self.require_signed_query && has_query {
            if let Some(v) = with_query() {
                return Ok(v);
            }
            if without_query().is_some() {
                return Err(Error::QueryNotSigned);
            }
            return Err(Error::InvalidSignature);
        }
        without_query()
            .or_else(with_query)
            .ok_or(Error::InvalidSignature)
    }

    /// What to do for a key id that is unknown, deleted or disabled: the same
    /// work as a wrong signature (against a dummy key), then the same answer.
    pub fn refuse_unknown(&self, creds: &Credentials<'_>, req: &Request<'_>) -> Error {
        static DUMMY: OnceLock<SigningKey> = OnceLock::new();
        let dummy = DUMMY
            .get_or_init(|| SigningKey::from_bytes(b"armor-psk dummy key for unknown key ids"));
        // The outcome is discarded: only the work matters.
        let _ = std::hint::black_box(self.verify(dummy, creds, req));
        Error::InvalidSignature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SignableRequest;

    fn header(key: &SigningKey, path: &str, body: &[u8], ts: u64) -> String {
        SignableRequest {
            key_id: "kid",
            method: "POST",
            request_path: path,
            nonce: "n",
            timestamp: ts,
            body,
        }
        .authorization(key)
    }

    fn hashed_header(key: &SigningKey, path: &str, body: &[u8]) -> String {
        let BodyForm::Sha512Base64(h) = BodyForm::hashed(body) else {
            unreachable!()
        };
        header(key, path, &h, 100)
    }

    #[test]
    fn window_edges() {
        let key = SigningKey::from_bytes(b"s");
        let h = header(&key, "/x", b"", 1000);
        let c = Credentials::parse(&h).unwrap();
        let v = Verifier::default();
        assert!(v.check_time(&c, 1300).is_ok());
        assert!(v.check_time(&c, 700).is_ok());
        assert_eq!(
            v.check_time(&c, 1301),
            Err(Error::TimestampOutOfWindow { server_time: 1301 })
        );
        assert!(v.check_time(&c, 699).is_err());
        assert_eq!(v.claim_until(&c), 1300);
    }

    #[test]
    fn variants() {
        let key = SigningKey::from_bytes(b"s");
        let body = b"{\"a\":1}";
        let req = Request {
            method: "POST",
            path: "/x",
            query: Some("a=1"),
            body,
        };
        let lax = Verifier::default();
        let strict = Verifier::default().require_signed_query(true);
        let cases = [
            (header(&key, "/x", body, 100), Variant::Vendor),
            (header(&key, "/x?a=1", body, 100), Variant::SignedQuery),
            (hashed_header(&key, "/x", body), Variant::HashedBody),
            (
                hashed_header(&key, "/x?a=1", body),
                Variant::SignedQueryHashedBody,
            ),
        ];
        for (h, want) in cases {
            let c = Credentials::parse(&h).unwrap();
            assert_eq!(lax.verify(&key, &c, &req), Ok(want));
            let strict_want = if want.covers_query() {
                Ok(want)
            } else {
                Err(Error::QueryNotSigned)
            };
            assert_eq!(strict.verify(&key, &c, &req), strict_want);
            assert_eq!(lax.refuse_unknown(&c, &req), Error::InvalidSignature);
        }
        // Without a query, the strict verifier accepts the vendor form.
        let vendor = cases_vendor(&key, body);
        let c = Credentials::parse(&vendor).unwrap();
        let no_query = Request { query: None, ..req };
        assert_eq!(strict.verify(&key, &c, &no_query), Ok(Variant::Vendor));
        // A different key never matches.
        let other = SigningKey::from_bytes(b"t");
        assert_eq!(lax.verify(&other, &c, &req), Err(Error::InvalidSignature));
        assert_eq!(
            strict.verify(&other, &c, &req),
            Err(Error::InvalidSignature)
        );
    }

    fn cases_vendor(key: &SigningKey, body: &[u8]) -> String {
        header(key, "/x", body, 100)
    }
}
