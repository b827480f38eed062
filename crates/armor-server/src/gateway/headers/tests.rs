//! The header rules, each on the maps and lines they apply to.

use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for &(name, value) in pairs {
        h.append(name, HeaderValue::from_static(value));
    }
    h
}

/// What of a scrubbed request map goes upstream: the writer skips the
/// names [`sent_as_is`] refuses.
fn out(h: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in h.iter().filter(|(n, _)| sent_as_is(n)) {
        kept.append(name, value.clone());
    }
    kept
}

/// The names of what goes upstream, sorted.
fn names_out(h: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = out(h).keys().map(|k| k.to_string()).collect();
    names.sort_unstable();
    names
}

/// The map's headers and the added lines, as the upstream reads them.
fn sent(h: &HeaderMap, added: &Added) -> HeaderMap {
    let h = &out(h);
    let mut all = h.clone();
    let text = std::str::from_utf8(added.as_bytes()).unwrap();
    assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
    for line in text.split_terminator("\r\n") {
        let (name, value) = line.split_once(": ").unwrap();
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        assert!(!h.contains_key(&name), "{name} both in the map and added");
        all.append(name, HeaderValue::from_str(value).unwrap());
    }
    all
}

#[test]
fn an_added_value_with_a_control_character_leaves_no_line() {
    let mut a = Added::new();
    a.line(&KEY_ID_HEADER, |v| v.extend_from_slice(b"k\r\nx-evil: 1"));
    a.line(&AUTH_METHOD_HEADER, |v| {
        v.extend_from_slice(b"caf\xc3\xa9\tok")
    });
    assert_eq!(a.as_bytes(), b"x-armor-auth: caf\xc3\xa9\tok\r\n");
    // Byte by byte, the rule `HeaderValue` applies, at every position
    // of a value longer than one vector.
    for b in 0..=255u8 {
        for at in [0, 17, 40] {
            let mut value = vec![b'a'; 41];
            value[at] = b;
            let ok = HeaderValue::from_bytes(&value).is_ok();
            assert_eq!(field_value(&value), ok, "{b:#x} at {at}");
        }
    }
}

#[test]
fn underscore_and_armor_spellings_go() {
    let mut h = map(&[
        ("x_armor_user_id", "1"),
        ("x-armor_permissions", "Users Manage"),
        ("x-armor-key-id", "k"),
        ("x_forwarded_for", "10.0.0.1"),
        ("my_header", "1"),
        ("x-armorless", "kept"),
        ("x-kept", "1"),
    ]);
    scrub_request(&mut h, false);
    assert_eq!(names_out(&h), ["x-armorless", "x-kept"]);
}

#[test]
fn armor_cookies_go_both_ways() {
    let mut h = map(&[
        ("cookie", "a=1; armor_session=tok; b=2"),
        ("cookie", "ARMOR_ACCOUNT=3; __Host-armor_x=y"),
        ("cookie", "c=3"),
    ]);
    scrub_request(&mut h, false);
    assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    let mut h = map(&[("cookie", "armor_session=tok")]);
    scrub_request(&mut h, false);
    assert!(!h.contains_key(header::COOKIE));
    let mut h = map(&[("cookie", "a=1")]);
    scrub_request(&mut h, false);
    assert_eq!(h[header::COOKIE], "a=1");
    // Values that are not ASCII pass byte for byte.
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_bytes(b"name=caf\xc3\xa9; armor_session=t").unwrap(),
    );
    h.append(
        header::COOKIE,
        HeaderValue::from_bytes(b"other=\xc3\xa9t\xc3\xa9").unwrap(),
    );
    scrub_request(&mut h, false);
    assert_eq!(
        h[header::COOKIE].as_bytes(),
        b"name=caf\xc3\xa9; other=\xc3\xa9t\xc3\xa9"
    );

    let mut h = map(&[
        ("set-cookie", "armor_session=evil; Path=/"),
        ("set-cookie", "app=1; Path=/"),
        ("set-cookie", " Armor_Login_Csrf=x"),
    ]);
    scrub_answer(&mut h);
    let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(left, ["app=1; Path=/"]);
}

#[test]
fn forwarding_headers_are_the_gateways_unless_the_peer_is_trusted() {
    let sent = [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("true-client-ip", "6.6.6.6"),
        ("front-end-https", "on"),
    ];
    let peer: IpAddr = [192, 0, 2, 1].into();
    let host = Some(HeaderValue::from_static("api.example:8080"));
    let mut h = map(&sent);
    let mut a = Added::new();
    scrub_request(&mut h, false);
    set_forwarding(&mut h, &mut a, Some(peer), false, host.clone());
    let h = self::sent(&h, &a);
    assert_eq!(
        h["forwarded"],
        "for=192.0.2.1;host=\"api.example:8080\";proto=http"
    );
    assert_eq!(h["x-forwarded-for"], "192.0.2.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example:8080");
    for gone in [
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "true-client-ip",
        "front-end-https",
    ] {
        assert!(!h.contains_key(gone), "{gone}");
    }

    let mut h = map(&sent);
    let mut a = Added::new();
    scrub_request(&mut h, true);
    set_forwarding(&mut h, &mut a, Some(peer), true, host);
    let h = self::sent(&h, &a);
    assert_eq!(
        h["forwarded"],
        "for=6.6.6.6;proto=https, for=192.0.2.1;host=\"api.example:8080\";proto=http"
    );
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 192.0.2.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.example");

    // A list on several lines is one list: every line stays, in order.
    let mut h = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.2"),
        ("forwarded", "for=203.0.113.7"),
    ]);
    let mut a = Added::new();
    scrub_request(&mut h, true);
    set_forwarding(&mut h, &mut a, Some(peer), true, None);
    let h = self::sent(&h, &a);
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(
        h["x-forwarded-for"],
        "6.6.6.6, 203.0.113.7, 10.0.0.2, 192.0.2.1"
    );
    assert_eq!(h.get_all("forwarded").iter().count(), 1);
    assert_eq!(
        h["forwarded"],
        "for=6.6.6.6, for=203.0.113.7, for=192.0.2.1;proto=http"
    );

    let mut h = HeaderMap::new();
    let mut a = Added::new();
    set_forwarding(&mut h, &mut a, Some([1u16; 8].into()), false, None);
    let h = self::sent(&h, &a);
    assert_eq!(h["forwarded"], "for=\"[1:1:1:1:1:1:1:1]\";proto=http");
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let cases: [&[(&'static str, &'static str)]; 2] = [
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ],
        // Names in any case, any number of `Connection` values, even a
        // header named `close`.
        &[
            ("connection", "X-One , close"),
            ("connection", "x-TWO,,"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("close", "1"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "1"),
        ],
    ];
    // Both ways: the request's scrub and the answer's.
    let scrubs: [fn(&mut HeaderMap) -> HeaderMap; 2] = [
        |h| {
            scrub_request(h, false);
            out(h)
        },
        |h| {
            scrub_answer(h);
            h.clone()
        },
    ];
    for pairs in cases {
        for scrub in scrubs {
            let h = scrub(&mut map(pairs));
            assert_eq!(h.len(), 1, "{h:?}");
            assert!(h.contains_key("x-kept"));
        }
    }
}

#[test]
fn the_answer_keeps_its_framing_and_end_to_end_headers() {
    let sent = [
        ("content-length", "2"),
        ("www-authenticate", "Bearer"),
        ("authorization", "kept"),
        ("x-armor-user-id", "7"),
        ("set-cookie", "app=1"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ];
    let mut h = map(&sent);
    scrub_answer(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "authorization",
            "content-length",
            "set-cookie",
            "www-authenticate",
            "x-armor-user-id"
        ]
    );
}

#[test]
fn the_request_scrub_drops_credentials_framing_and_what_connection_names() {
    let mut h = map(&[
        ("authorization", "ARMOR-PSK k:s:n:1"),
        ("proxy-authorization", "Basic eA=="),
        ("content-length", "12"),
        ("transfer-encoding", "chunked"),
        ("connection", "x-gone"),
        ("x-gone", "1"),
        ("x-armor-user-id", "1"),
        ("x_real_ip", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("cookie", "armor_session=t; app=1"),
        ("accept", "*/*"),
    ]);
    let mut trusted = h.clone();
    assert_eq!(scrub_request(&mut h, false), None);
    assert_eq!(names_out(&h), ["accept", "cookie"]);
    assert_eq!(h[header::COOKIE], "app=1");
    // A trusted proxy's forwarding headers stay; nothing else does.
    scrub_request(&mut trusted, true);
    assert_eq!(names_out(&trusted), ["accept", "cookie", "x-real-ip"]);
    // The client's `Host` is returned, and never goes on as it is, even
    // when `Connection` names it.
    for connection in ["keep-alive", "host"] {
        let mut h = map(&[
            ("host", "api.example"),
            ("connection", connection),
            ("accept", "*/*"),
        ]);
        let host = scrub_request(&mut h, false);
        assert_eq!(host, Some(HeaderValue::from_static("api.example")));
        assert_eq!(names_out(&h), ["accept"], "{connection}");
    }
}

#[test]
fn identity_header_values() {
    let p = Principal {
        user_id: -12,
        account_id: i64::MAX,
        via: Via::ApiKey {
            key_id: "k1".into(),
            key_permissions: None,
        },
        permissions: ["A", "B c"].iter().map(|s| s.to_string()).collect(),
    };
    let mut a = Added::new();
    identity_headers(&mut a, &p);
    let h = sent(&HeaderMap::new(), &a);
    assert_eq!(h[USER_ID], "-12");
    assert_eq!(h[ACCOUNT_ID], "9223372036854775807");
    assert_eq!(h[KEY_ID], "k1");
    assert_eq!(h[AUTH_METHOD], "ARMOR-PSK");
    assert_eq!(h[PERMISSIONS], "A,B c");
    let p = Principal {
        via: Via::Password {
            token_hash: [0; 32],
        },
        permissions: std::iter::empty().collect(),
        ..p
    };
    let mut a = Added::new();
    identity_headers(&mut a, &p);
    assert_eq!(
        a.as_bytes(),
        b"x-armor-user-id: -12\r\nx-armor-account-id: 9223372036854775807\r\n\
          x-armor-auth: FH-AUTH\r\nx-armor-permissions: \r\n"
    );
    let mut a = Added::new();
    let prior = HeaderValue::from_static("1.2.3.4");
    set_forwarding(&mut map(&[]), &mut a, Some([1u16; 8].into()), false, None);
    let mut h = map(&[("x-forwarded-for", "1.2.3.4")]);
    let mut b = Added::new();
    set_forwarding(&mut h, &mut b, Some([127, 0, 0, 1].into()), true, None);
    let (a, b) = (sent(&map(&[]), &a), sent(&h, &b));
    assert_eq!(a["x-forwarded-for"], "1:1:1:1:1:1:1:1");
    assert_eq!(b["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    let mut a = Added::new();
    forwarded_for(&mut a, Some(&prior), b"1:1:1:1:1:1:1:1");
    forwarded_for(&mut a, None::<&HeaderValue>, b"127.0.0.1");
    // A line with bytes from 0x80 is kept as received, with what a proxy
    // appended to it.
    let obs = HeaderValue::from_bytes(b"\xff, 198.51.100.9").unwrap();
    forwarded_for(&mut a, [&obs, &prior], b"10.0.0.2");
    assert_eq!(
        a.as_bytes(),
        b"x-forwarded-for: 1.2.3.4, 1:1:1:1:1:1:1:1\r\nx-forwarded-for: 127.0.0.1\r\n\
          x-forwarded-for: \xff, 198.51.100.9, 1.2.3.4, 10.0.0.2\r\n"
    );
}

#[test]
fn numbers_and_addresses_are_written_as_fmt_writes_them() {
    for n in [0, 7, -1, 10, 99, 100, -12, i64::MAX, i64::MIN] {
        let mut v = Vec::new();
        push_number(&mut v, n);
        assert_eq!(v, n.to_string().as_bytes());
    }
    for ip in ["0.0.0.0", "255.255.255.255", "10.200.3.45", "1.0.20.100"] {
        let addr: IpAddr = ip.parse().unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(ip_text(addr, &mut buf), Some(ip.as_bytes()));
    }
    let mut buf = [0u8; 64];
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(ip_text(v6, &mut buf), Some(&b"2001:db8::1"[..]));
}
