//! Arbitrary bytes as an `Authorization` value: the parser must not panic,
//! whatever it accepts must obey the header rules and print back to the same
//! credentials, and no accepted value may verify under a key the fuzzer
//! does not know.
#![no_main]

use armor_psk::{Credentials, Request, SigningKey, Verifier, MAX_FIELD_LEN, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn visible_no_colon(s: &str) -> bool {
    (1..=MAX_FIELD_LEN).contains(&s.len())
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

fuzz_target!(|data: &[u8]| {
    let Ok(creds) = Credentials::parse_bytes(data) else {
        return;
    };
    assert!(data.len() <= MAX_HEADER_LEN);
    assert!(visible_no_colon(creds.key_id()));
    assert!(visible_no_colon(creds.nonce()));
    assert_eq!(
        creds.timestamp_text().parse::<u64>().ok(),
        Some(creds.timestamp())
    );

    // The text parser agrees, and the value prints back to itself.
    let text = std::str::from_utf8(data).expect("an accepted value is ASCII");
    assert_eq!(Credentials::parse(text).as_ref(), Ok(&creds));
    let again = format!(
        "ARMOR-PSK {}:{}:{}:{}",
        creds.key_id(),
        creds.signature(),
        creds.nonce(),
        creds.timestamp_text()
    );
    assert_eq!(Credentials::parse(&again).as_ref(), Ok(&creds));

    // A fixed key the input cannot know: every form of every request is
    // refused, with a query and a body so that all four variants are tried.
    let key = SigningKey::from_bytes(b"armor-psk fuzz key");
    let verifier = Verifier::default();
    for req in [
        Request {
            method: "GET",
            path: "/me",
            query: None,
            body: b"",
        },
        Request {
            method: "POST",
            path: "/tickets",
            query: Some("a=1"),
            body: b"{\"x\":1}",
        },
    ] {
        assert!(verifier.verify(&key, &creds, &req).is_err());
        let _ = verifier.refuse_unknown(&creds, &req);
    }
    let _ = verifier.check_time(&creds, 1_763_880_000);
});
