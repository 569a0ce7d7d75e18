//! Keeping secrets out of logs, error messages and `Debug` output.
//!
//! [`url`] is the one redactor of connection URLs (database, NATS, JWKS): whatever sits
//! before the `@` of an entry is credentials. [`keys`] stands in for a list of API keys.

use std::fmt;

/// What a redacted value prints as.
pub const REDACTED: &str = "[redacted]";

/// `raw` with the credentials of every comma-separated entry replaced: `user:pass@` becomes
/// `user:[redacted]@`, and a bare `token@` (NATS token auth) becomes `[redacted]@`.
///
/// Works on the text, not a parsed URL, so a URL that does not parse is redacted too, and
/// everything up to the last `@` of an entry counts as credentials (a password may hold
/// characters a URL should have escaped).
pub fn url(raw: &str) -> String {
    raw.split(',')
        .map(redact_entry)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_entry(entry: &str) -> String {
    let start = entry.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = entry.split_at(start);
    let Some(at) = rest.rfind('@') else {
        return entry.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{REDACTED}{host}"),
        None => format!("{scheme}{REDACTED}{host}"),
    }
}

/// A `Debug` stand-in for one secret.
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A `Debug` stand-in for a list of secrets: how many there are, never what they are.
pub struct Keys<'a>(pub &'a [String]);

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|_| Redacted))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_tokens_of_every_entry() {
        assert_eq!(
            url("postgres://gw:s3cret@db:5432/gw"),
            "postgres://gw:[redacted]@db:5432/gw"
        );
        assert_eq!(url("postgres://db/gw"), "postgres://db/gw");
        assert_eq!(
            url("nats://tok3n@n1:4222, nats://u:p@ss@n2:4222,nats://n3"),
            "nats://[redacted]@n1:4222, nats://u:[redacted]@n2:4222,nats://n3"
        );
        assert_eq!(url("u:s3cret@host:4222"), "u:[redacted]@host:4222");
        assert_eq!(url("sqlite://data/gateway.db"), "sqlite://data/gateway.db");
    }

    #[test]
    fn keys_print_only_their_count() {
        let keys = ["k1-secret".to_owned(), "k2-secret".to_owned()];
        assert_eq!(format!("{:?}", Keys(&keys)), "[[redacted], [redacted]]");
    }
}
