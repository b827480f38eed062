//! Request targets: refuse non-canonical spellings before authentication,
//! and route case-insensitively (as the vendor's ASP.NET routing does).

use crate::error::Error;

/// Refuses a path that could be read as another one: empty, `.` or `..`
/// segments, backslashes, percent-encoded `/`, `\`, or unreserved
/// characters, and bad percent-escapes.
pub fn check(path: &str) -> Result<(), Error> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Error::MalformedTarget("it must start with '/'"));
    };
    if path.contains('\\') {
        return Err(Error::MalformedTarget("backslash"));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        // One trailing slash is allowed ("users/" is a vendor route).
        if seg.is_empty() && !(i == last && i > 0) && !(i == 0 && last == 0) {
            return Err(Error::MalformedTarget("empty segment ('//')"));
        }
        if *seg == "." || *seg == ".." {
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
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The path the router matches: lowercase, without a trailing slash.
pub fn routing_form(path: &str) -> String {
    let trimmed = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    trimmed.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for p in [
            "/",
            "/me",
            "/users/",
            "/users/1/keys",
            "/users/LockedOut/2/jane%40example.com",
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
    }
}
