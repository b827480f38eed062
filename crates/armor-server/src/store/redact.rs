//! A database URL fit for an error message: its password replaced.

/// `url` with the password of its user part (`user:password@`) and any
/// `password=` parameter replaced by `***`.
pub(super) fn redacted(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((user, host)) => {
                    match user.split_once(':') {
                        Some((name, _)) => {
                            out.push_str(name);
                            out.push_str(":***");
                        }
                        None => out.push_str(user),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                    out.push_str(k);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_replaced_and_the_rest_is_kept() {
        assert_eq!(
            redacted("postgres://armor:s3cr:et@db:5432/armor?sslmode=verify-full"),
            "postgres://armor:***@db:5432/armor?sslmode=verify-full"
        );
        assert_eq!(
            redacted("postgres://armor@db/armor?user=x&password=hunter2&sslmode=require"),
            "postgres://armor@db/armor?user=x&password=***&sslmode=require"
        );
        assert_eq!(redacted("postgres://db/armor"), "postgres://db/armor");
        assert_eq!(
            redacted("/var/lib/armor/armor.db"),
            "/var/lib/armor/armor.db"
        );
        assert_eq!(redacted("postgres://a:b@c@h/d"), "postgres://a:***@h/d");
    }
}
