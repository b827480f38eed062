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

/// Whether `url` carries an `sslpassword` parameter (a client key's
/// passphrase, as libpq takes it). The PostgreSQL client does not know
/// it, and logs unknown parameters with their values.
pub(super) fn has_ssl_password(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            pair.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("sslpassword"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{has_ssl_password, redacted};

    #[test]
    fn an_ssl_password_is_found_in_any_place_of_the_query() {
        assert!(has_ssl_password("postgres://a@h/db?sslpassword=x"));
        assert!(has_ssl_password(
            "postgres://a@h/db?sslmode=require&SSLPASSWORD"
        ));
        assert!(!has_ssl_password(
            "postgres://a@h/db?sslmode=require&sslcert=/c.pem"
        ));
        assert!(!has_ssl_password("postgres://a:sslpassword@h/db"));
    }

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
