//! Route matching: the server's target check and routing form
//! (`crates/armor-server/src/web/path.rs`, compiled here from source so the
//! target stays pure and quick to build) against every route of the
//! server's `ROUTES` table (read from `web/routes.rs`).
//!
//! For any path the check accepts:
//! - percent-decoding it (as an upstream, a proxy or a log reader would)
//!   keeps the same segments: no `/` or `\` appears, no `.` or `..` segment;
//! - the routing form is stable and still accepted;
//! - every route template matches the raw path's routing form exactly when
//!   it matches the decoded path's: no spelling reaches a route its decoded
//!   form does not name, or escapes one it does.
//! The check must never panic on any bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

mod error {
    #[derive(Debug)]
    pub enum Error {
        #[allow(dead_code)]
        MalformedTarget(&'static str),
    }
}

#[path = "../../crates/armor-server/src/web/path.rs"]
#[allow(dead_code)]
mod path;

/// `(method, template)` of every `route!(METHOD "/template", ...)` in the
/// server's route table.
fn routes() -> &'static [(String, String)] {
    static ROUTES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let src = include_str!("../../crates/armor-server/src/web/routes.rs");
        let start = src.find("pub const ROUTES").unwrap_or(0);
        let src = &src[start..];
        let end = src.find("];").unwrap_or(src.len());
        let mut out = Vec::new();
        let mut rest = &src[..end];
        while let Some(i) = rest.find("route!(") {
            rest = &rest[i + "route!(".len()..];
            let Some((method, after)) = rest.split_once(' ') else {
                break;
            };
            let mut lits = after.splitn(3, '"');
            let (Some(""), Some(path)) = (lits.next(), lits.next()) else {
                break;
            };
            out.push((method.to_owned(), path.to_owned()));
        }
        assert!(out.len() >= 40, "found {} routes", out.len());
        out
    })
}

/// Segment-wise match of a routing form against a template: `{x}` matches
/// one non-empty segment, literals ignore ASCII case.
fn matches(template: &str, routed: &str) -> bool {
    let t = path::routing_form(template);
    let a: Vec<&str> = t.split('/').collect();
    let b: Vec<&str> = routed.split('/').collect();
    a.len() == b.len()
        && a.iter().zip(&b).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else {
                t.eq_ignore_ascii_case(s)
            }
        })
}

fn percent_decode(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' && i + 3 <= p.len() {
            let h = std::str::from_utf8(&p[i + 1..i + 3]).ok();
            if let Some(v) = h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(p[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    if path::check(p).is_err() {
        // Refused before authentication: nothing to route.
        return;
    }
    let routed = path::routing_form(p);
    assert_eq!(path::routing_form(&routed), routed, "{p:?}");
    assert!(path::check(&routed).is_ok(), "{p:?} -> {routed:?}");

    let decoded = percent_decode(p.as_bytes());
    assert!(!decoded.contains(&b'\\'), "{p:?}");
    let raw_segments = p.split('/').count();
    let dec_segments = decoded.split(|&b| b == b'/').count();
    assert_eq!(raw_segments, dec_segments, "{p:?} decodes to other segments");
    for seg in decoded.split(|&b| b == b'/') {
        assert!(seg != b"." && seg != b"..", "{p:?} decodes to a dot segment");
    }

    let decoded = String::from_utf8_lossy(&decoded);
    let routed_decoded = path::routing_form(&decoded);
    for (method, template) in routes() {
        assert_eq!(
            matches(template, &routed),
            matches(template, &routed_decoded),
            "{method} {template}: {p:?} routes as {routed:?}, decodes to {routed_decoded:?}"
        );
    }
});
