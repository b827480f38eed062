//! `docs/SPEC.md` is what client authors implement from: its error table
//! and its limits are checked here against the server's error type and the
//! parser's constants.
//!
//! The error table must list exactly the codes a request signed with
//! ARMOR-PSK can be refused with before its route takes over: every
//! refusal of `armor_psk::Error` (listed exhaustively below, so a new one
//! does not compile until it is added here, and then the spec), and the
//! server's own refusals on that path ([`server_refusals`]). Codes of other
//! paths (password logins, the gateway's upstream) are not part of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use armor_psk::{Error as Psk, ParseError};
use armor_server::error::Error;
use armor_server::web::error::classify;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/SPEC.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The rows of the first table under the heading that names "Error codes":
/// code to status.
fn spec_error_table(spec: &str) -> BTreeMap<String, u16> {
    let mut lines = spec
        .lines()
        .skip_while(|l| !(l.starts_with('#') && l.contains("Error codes")));
    assert!(lines.next().is_some(), "no \"Error codes\" heading");
    let mut table = BTreeMap::new();
    // The rows after the header row and its `|---|` separator.
    let rows = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2);
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let code = cells
            .get(1)
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
            .unwrap_or_else(|| panic!("row {row:?}: the first column is not a `code`"));
        let status: u16 = cells
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("row {row:?}: the second column is not a status"));
        assert!(
            table.insert(code.to_owned(), status).is_none(),
            "{code} is listed twice"
        );
    }
    assert!(!table.is_empty(), "the error table has no rows");
    table
}

/// Every refusal `armor_psk::Error` can express.
fn psk_refusals() -> Vec<Psk> {
    let all = vec![
        Psk::MissingAuthorization,
        Psk::Parse(ParseError::NotArmorPsk),
        Psk::Parse(ParseError::Malformed("x")),
        Psk::TimestampOutOfWindow { server_time: 1 },
        Psk::InvalidSignature,
        Psk::QueryNotSigned,
        Psk::NonceReused,
        Psk::ReplayStoreUnavailable,
    ];
    // Exhaustive: a new variant stops this from compiling until it has a
    // number here, and the assertion below until it is in `all`.
    fn number(e: &Psk) -> usize {
        match e {
            Psk::MissingAuthorization => 0,
            Psk::Parse(ParseError::NotArmorPsk) => 1,
            Psk::Parse(ParseError::Malformed(_)) => 2,
            Psk::TimestampOutOfWindow { .. } => 3,
            Psk::InvalidSignature => 4,
            Psk::QueryNotSigned => 5,
            Psk::NonceReused => 6,
            Psk::ReplayStoreUnavailable => 7,
        }
    }
    let mut numbers: Vec<usize> = all.iter().map(number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..=7).collect::<Vec<_>>(), "a variant is missing");
    all
}

/// The server's own refusals of a signed request, in the order of SPEC.md
/// section 5: framing or an unreadable body, the target, the body limit,
/// the account context, the failure limiter (and the gateway's rate), the
/// key's own restrictions (expiry, networks, routes, rate), the database,
/// the route's policy and permissions.
fn server_refusals() -> Vec<Error> {
    vec![
        Error::BadRequest("x".into()),
        Error::MalformedTarget("x"),
        Error::BodyTooLarge(1),
        Error::RequestTimeout("x"),
        Error::MethodNotAllowed("x"),
        Error::InvalidAccountContext,
        Error::RateLimited { retry_after: 1 },
        Error::KeyExpired,
        Error::IpNotAllowed,
        Error::RouteNotAllowed,
        Error::KeyRateLimited { limit: 1, reset: 1 },
        Error::StoreUnavailable,
        Error::ApiKeyNotAllowed,
        Error::PermissionDenied("p".into()),
    ]
}

/// Code to status of every refusal on the ARMOR-PSK path, as the server
/// answers them.
fn psk_path_codes() -> BTreeMap<String, u16> {
    let errors = psk_refusals()
        .into_iter()
        .map(|err| Error::Psk { err, detail: None })
        .chain(server_refusals());
    let mut codes = BTreeMap::new();
    for e in errors {
        let (status, code, _) = classify(&e);
        if let Some(before) = codes.insert(code.to_owned(), status.as_u16()) {
            assert_eq!(before, status.as_u16(), "{code} with two statuses");
        }
    }
    codes
}

#[test]
fn spec_error_table_lists_exactly_the_codes_of_a_signed_request() {
    let spec = spec_error_table(&spec());
    let server = psk_path_codes();
    for (code, status) in &spec {
        assert_eq!(
            server.get(code),
            Some(status),
            "SPEC.md lists {code} ({status}), which the server does not answer a signed request with that status"
        );
    }
    for (code, status) in &server {
        assert_eq!(
            spec.get(code),
            Some(status),
            "the server answers a signed request with {code} ({status}), which SPEC.md's error table does not list with that status"
        );
    }
    // Every code of the verifier's own error type is there.
    for err in psk_refusals() {
        assert!(spec.contains_key(err.code()), "{}", err.code());
    }
}

/// The `abnf` block's rule `name`, as written.
fn abnf_rule(spec: &str, name: &str) -> String {
    let block = spec
        .split("```abnf")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("an abnf block");
    block
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no ABNF rule {name}"))
        .to_owned()
}

#[test]
fn spec_limits_are_the_parser_limits() {
    let spec = spec();
    let field = format!("= 1*{}field-char", armor_psk::MAX_FIELD_LEN);
    for rule in ["key-id", "nonce"] {
        assert!(abnf_rule(&spec, rule).contains(&field), "{rule}");
    }
    // Padded base64 of 64 octets: 88 characters, the last two `=`, and the
    // one before them carrying 2 bits (so 85 free symbols before it).
    let b64_len = armor_psk::SIGNATURE_LEN.div_ceil(3) * 4;
    let padding = (3 - armor_psk::SIGNATURE_LEN % 3) % 3;
    assert_eq!(padding, 2);
    let signature = abnf_rule(&spec, "signature");
    assert!(
        signature.contains(&format!("= {}b64-char b64-last \"==\"", b64_len - 3)),
        "{signature}"
    );
    assert!(signature.contains(&format!("{b64_len} characters")));
    assert!(abnf_rule(&spec, "field-char").contains("= %x21-39 / %x3B-7E"));
    assert!(abnf_rule(&spec, "timestamp").contains(&format!("at most {}", u64::MAX)));
    assert!(spec.contains(&format!(
        "| whole value | at most {} octets",
        armor_psk::MAX_HEADER_LEN
    )));
    let window = armor_psk::DEFAULT_WINDOW_SECS;
    assert!(spec.contains(&format!("`|t - now| <= {window}`")));
}
