//! Request targets: refuse non-canonical spellings before authentication,
//! and route case-insensitively (as the vendor's ASP.NET routing does).

use crate::error::Error;

/// Refuses a path that could be read as another one: empty, `.` or `..`
/// segments (also with path parameters, `..;x`, which servlet containers
/// read as `..`), backslashes, percent-encoded `/`, `\`, or unreserved
/// characters, a percent-encoded `%` before one of those (`%252e`, read
/// as `.` by an upstream that decodes twice), and bad percent-escapes.
pub fn check(path: &str) -> Result<(), Error> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Error::MalformedTarget("it must start with '/'"));
    };
    if path.as_bytes().contains(&b'\\') {
        return Err(Error::MalformedTarget("backslash"));
    }
    let mut segments = segments(rest).enumerate().peekable();
    while let Some((i, seg)) = segments.next() {
        let last = segments.peek().is_none();
        // One trailing slash is allowed ("users/" is a vendor route).
        if seg.is_empty() && !(last && i > 0) && !(i == 0 && last) {
            return Err(Error::MalformedTarget("empty segment ('//')"));
        }
        let name = match seg.bytes().position(|b| b == b';') {
            Some(at) => &seg[..at],
            None => seg,
        };
        if name == "." || name == ".." {
            return Err(Error::MalformedTarget("'.' or '..' segment"));
        }
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(Error::MalformedTarget("bad percent-escape"));
            };
            if value == b'/'
                || value == b'\\'
                || value.is_ascii_alphanumeric()
                || b"-._~".contains(&value)
            {
                return Err(Error::MalformedTarget(
                    "percent-encoded '/', '\\' or unreserved character",
                ));
            }
            if value == b'%' && double_encoded(bytes.get(i + 3..i + 5)) {
                return Err(Error::MalformedTarget(
                    "percent-encoded '%' before '2e', '2f' or '5c'",
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Whether `next` (the two bytes after a `%25`) spell `.`, `/` or `\\` in
/// hex: a second decoding would turn them into a dot segment or a
/// separator.
fn double_encoded(next: Option<&[u8]>) -> bool {
    matches!(
        next.map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()]),
        Some([b'2', b'e'] | [b'2', b'f'] | [b'5', b'c'])
    )
}

/// The path the route table matches: lowercase, without a trailing slash.
pub fn routing_form(path: &str) -> String {
    trimmed(path).to_ascii_lowercase()
}

/// [`routing_form`], written into `buf` when it fits (no allocation).
pub fn routing_form_in<'b>(path: &str, buf: &'b mut [u8; 128]) -> std::borrow::Cow<'b, str> {
    let t = trimmed(path);
    if let Some(out) = buf.get_mut(..t.len()) {
        out.copy_from_slice(t.as_bytes());
        out.make_ascii_lowercase();
        // ASCII case folding keeps UTF-8 valid.
        if let Ok(s) = std::str::from_utf8(out) {
            return std::borrow::Cow::Borrowed(s);
        }
    }
    std::borrow::Cow::Owned(routing_form(path))
}

/// `path`'s segments between slashes, as `path.split('/')` gives them,
/// found byte by byte: on paths this short a `char` searcher's set-up
/// costs more than the search.
pub(super) fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'/') {
            Some(at) => {
                rest = Some(&r[at + 1..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `path` without one trailing slash (`/` stays `/`).
pub(super) fn trimmed(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_those_split_gives() {
        for p in ["", "/", "//", "/a", "a/", "/a/b/", "/é/ü;x/", "a//b"] {
            let ours: Vec<&str> = segments(p).collect();
            let split: Vec<&str> = p.split('/').collect();
            assert_eq!(ours, split, "{p:?}");
        }
    }

    #[test]
    fn canonical_paths_pass() {
        for p in [
            "/",
            "/me",
            "/users/",
            "/users/1/keys",
            "/users/LockedOut/2/jane%40example.com",
            "/files/a;v=1",
            "/files/100%25",
            "/files/100%25off",
        ] {
            assert!(check(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn spellings_that_could_alias_are_refused() {
        for p in [
            "",
            "me",
            "//users/1/keys",
            "/users//1/keys",
            "/users/./1/keys",
            "/users/1/keys/..",
            "/users%2F1/keys",
            "/users%2f1",
            "/users%5C1",
            "/users\\1\\keys",
            "/u%73ers/1/keys",
            "/users/1/keys/%2E%2E",
            "/users/%",
            "/users/%zz",
            "/public/..;/admin",
            "/public/..;jsessionid=1/admin",
            "/public/.;x/admin",
            "/public/%252e%252e/admin",
            "/public/%252E%252E/admin",
            "/public%252fadmin",
            "/public%255cadmin",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
    }

    #[test]
    fn routing_is_case_and_trailing_slash_insensitive() {
        assert_eq!(
            routing_form("/Users/1/ActivationCode/"),
            "/users/1/activationcode"
        );
        assert_eq!(routing_form("/"), "/");
        let mut buf = [0u8; 128];
        assert_eq!(routing_form_in("/Users/1/Keys/", &mut buf), "/users/1/keys");
        let long = format!("/{}", "A".repeat(200));
        assert_eq!(routing_form_in(&long, &mut buf), routing_form(&long));
    }
}
