//! The client's address behind trusted proxies: read from `X-Forwarded-For` or `Forwarded`,
//! and only when the socket's peer is a proxy in `server.trusted_proxies`.

use std::net::{IpAddr, SocketAddr};

use axum::http::header::{HeaderMap, FORWARDED};

use super::Admission;

impl Admission {
    /// The client's address: the socket's peer, or, when the peer is a trusted proxy, the
    /// nearest address in its forwarding header that is not itself a trusted proxy.
    ///
    /// `X-Forwarded-For` is read when present, `Forwarded` otherwise. Addresses are read
    /// from the right (the proxy nearest to us appends last); anything left of the first
    /// untrusted address was written by the client and counts for nothing. An entry that is
    /// not an address (`unknown`, an obfuscated name) ends the walk at the hop that sent it.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        for hop in forwarded_hops(headers).into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The hops of `X-Forwarded-For` (every such header, in order) or, without one, of
/// `Forwarded`'s `for=` parameters; `None` for an entry that is not an address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let joined = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if headers.contains_key("x-forwarded-for") {
        return joined("x-forwarded-for")
            .split(',')
            .map(|hop| parse_node(hop.trim()))
            .collect();
    }
    if headers.contains_key(FORWARDED) {
        return joined(FORWARDED.as_str())
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, value)| parse_node(value.trim()))
            })
            .collect();
    }
    Vec::new()
}

/// An address as a forwarding header writes it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, possibly quoted.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches('"');
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{admission, headers, ip};
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let untrusting = admission(|_| {});
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(untrusting.client_ip(peer("127.0.0.1"), &h), ip("127.0.0.1"));

        let trusting = admission(|s| {
            s.server.trusted_proxies = vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]
        });
        let at =
            |pairs: &[(&'static str, &str)]| trusting.client_ip(peer("127.0.0.1"), &headers(pairs));
        assert_eq!(at(&[]), ip("127.0.0.1"));
        assert_eq!(
            at(&[("x-forwarded-for", "198.51.100.7")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            at(&[("x-forwarded-for", "203.0.113.1, 198.51.100.7 , 10.1.2.3")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            at(&[
                ("x-forwarded-for", "203.0.113.1"),
                ("x-forwarded-for", "198.51.100.7")
            ]),
            ip("198.51.100.7")
        );
        assert_eq!(
            at(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]),
            ip("10.0.0.5")
        );
        assert_eq!(
            at(&[("x-forwarded-for", "garbage, 10.0.0.6")]),
            ip("10.0.0.6")
        );
        assert_eq!(
            at(&[("x-forwarded-for", "::ffff:198.51.100.7")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            at(&[("x-forwarded-for", "198.51.100.7:4711")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            at(&[(
                "forwarded",
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https"#
            )]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            at(&[("forwarded", "proto=https;For=192.0.2.43")]),
            ip("192.0.2.43")
        );
        assert_eq!(at(&[("forwarded", "for=unknown")]), ip("127.0.0.1"));
        // X-Forwarded-For wins when a client adds a Forwarded of its own.
        assert_eq!(
            at(&[
                ("forwarded", "for=203.0.113.1"),
                ("x-forwarded-for", "198.51.100.7")
            ]),
            ip("198.51.100.7")
        );
        // An untrusted peer's headers are ignored even when they name a trusted address.
        assert_eq!(
            trusting.client_ip(
                peer("192.0.2.9"),
                &headers(&[("x-forwarded-for", "10.0.0.1")])
            ),
            ip("192.0.2.9")
        );
    }
}
