//! Admission of WebSocket sessions: the node-wide cap (`server.max_connections`), the caps per
//! client address (`server.max_connections_per_ip`) and per token subject
//! (`auth.max_connections_per_subject`), the allowed origins, and the client address itself
//! (the socket's peer, or what a trusted proxy forwarded).
//!
//! Each admitted session holds a [`Slot`] per cap for its whole life; dropping the slot gives
//! it back. A per-key count is removed when it drops to zero, so the tables hold only keys
//! with a session open: at most `server.max_connections` entries each.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::http::header::{HeaderMap, FORWARDED, ORIGIN};
use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;

/// IPv6 clients are counted per /64: one subscriber's allocation, in which a single client
/// can pick any address it likes.
const IPV6_CLIENT_PREFIX: u8 = 64;

/// The node's admission state, shared by every upgrade.
pub struct Admission {
    /// One permit per session, `server.max_connections` in all.
    sessions: Arc<Semaphore>,
    /// Sessions per client address (IPv6: per /64).
    per_ip: Arc<Counts<IpAddr>>,
    /// Sessions per token `sub`.
    per_subject: Arc<Counts<String>>,
    max_per_ip: usize,
    max_per_subject: usize,
    /// Peers whose forwarding headers are believed (`server.trusted_proxies`).
    trusted_proxies: Vec<IpNet>,
    /// Allowed `Origin` values, lowercased; empty: any.
    allowed_origins: Vec<String>,
}

/// Why an upgrade is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `server.max_connections` sessions.
    OverCapacity,
    /// The client address holds `server.max_connections_per_ip` sessions.
    TooManyPerIp,
    /// The token subject holds `auth.max_connections_per_subject` sessions.
    TooManyPerSubject,
}

/// What an admitted session holds until it ends: its share of every cap.
#[must_use = "the session's slots are given back when this is dropped"]
pub struct Slots {
    _session: OwnedSemaphorePermit,
    _ip: Slot<IpAddr>,
    _subject: Option<Slot<String>>,
}

impl Slots {
    /// Takes the subject's slot (known only once the token is verified).
    pub fn with_subject(mut self, admission: &Admission, sub: &str) -> Result<Self, Refused> {
        self._subject = Some(
            admission
                .per_subject
                .acquire(sub.to_owned(), admission.max_per_subject)
                .ok_or(Refused::TooManyPerSubject)?,
        );
        Ok(self)
    }
}

impl Admission {
    /// Builds the admission state from validated settings.
    pub fn new(settings: &Settings) -> Self {
        Self {
            sessions: Arc::new(Semaphore::new(
                settings
                    .server
                    .max_connections
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            per_ip: Arc::new(Counts::default()),
            per_subject: Arc::new(Counts::default()),
            max_per_ip: settings.server.max_connections_per_ip,
            max_per_subject: settings.auth.max_connections_per_subject,
            trusted_proxies: settings.server.trusted_proxies.clone(),
            allowed_origins: settings
                .server
                .allowed_origins
                .iter()
                .map(|o| normalise_origin(o))
                .collect(),
        }
    }

    /// Whether the request's `Origin` (if any) is allowed. Requests without one come from
    /// clients that are not browsers, which could send any `Origin` they like anyway.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        match headers.get(ORIGIN) {
            None => true,
            Some(value) => value.to_str().is_ok_and(|origin| {
                let origin = normalise_origin(origin);
                self.allowed_origins.contains(&origin)
            }),
        }
    }

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

    /// Takes a session slot and the client address's slot, before the token is verified
    /// (so a client past its cap costs no signature check).
    pub fn admit(&self, client: IpAddr) -> Result<Slots, Refused> {
        let session = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::OverCapacity)?;
        let ip = self
            .per_ip
            .acquire(ip_key(client), self.max_per_ip)
            .ok_or(Refused::TooManyPerIp)?;
        Ok(Slots {
            _session: session,
            _ip: ip,
            _subject: None,
        })
    }
}

/// The key an address is counted under: itself, or its /64 for IPv6.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << (128 - u32::from(IPV6_CLIENT_PREFIX)));
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// An origin as compared: ASCII-lowercased (scheme and host are case-insensitive), without a
/// trailing slash.
fn normalise_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
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

/// Open sessions per key, each entry present only while its count is above zero.
struct Counts<K> {
    table: Mutex<HashMap<K, usize>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// One more session for `key`, unless it already holds `max`.
    fn acquire(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut table = self.table.lock();
        let count = table.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                table.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().len()
    }
}

/// One session's share of a key's count, given back on drop.
struct Slot<K: Hash + Eq> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut table = self.counts.table.lock();
        if let Some(count) = table.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn admission(configure: impl FnOnce(&mut Settings)) -> Admission {
        let mut settings = Settings::default();
        configure(&mut settings);
        Admission::new(&settings)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn counts_hold_only_keys_with_a_slot_out() {
        let counts = Arc::new(Counts::<String>::default());
        let a1 = counts.acquire("a".into(), 2).unwrap();
        let a2 = counts.acquire("a".into(), 2).unwrap();
        assert!(counts.acquire("a".into(), 2).is_none());
        assert!(counts.acquire("z".into(), 0).is_none());
        let b = counts.acquire("b".into(), 2).unwrap();
        assert_eq!(counts.len(), 2);
        drop(a1);
        let a3 = counts.acquire("a".into(), 2).unwrap();
        drop((a2, a3, b));
        assert_eq!(counts.len(), 0);
    }

    #[test]
    fn the_node_cap_and_the_address_cap_are_held_until_the_slots_drop() {
        let admission = admission(|s| {
            s.server.max_connections = 3;
            s.server.max_connections_per_ip = 2;
            s.auth.max_connections_per_subject = 1;
        });
        let one = admission.admit(ip("192.0.2.1")).unwrap();
        let two = admission.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.1")).err(),
            Some(Refused::TooManyPerIp)
        );
        let three = admission.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.3")).err(),
            Some(Refused::OverCapacity)
        );
        let one = one.with_subject(&admission, "w").unwrap();
        assert_eq!(
            two.with_subject(&admission, "w").err(),
            Some(Refused::TooManyPerSubject)
        );
        // The refused subject gave back the session and address slots it held.
        assert!(admission.admit(ip("192.0.2.1")).is_ok());
        drop((one, three));
        assert_eq!(admission.per_ip.len(), 0);
        assert_eq!(admission.per_subject.len(), 0);
        assert_eq!(admission.sessions.available_permits(), 3);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let admission = admission(|s| s.server.max_connections_per_ip = 1);
        let _held = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refused::TooManyPerIp)
        );
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
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

    #[test]
    fn origins_are_compared_case_insensitively_and_absent_ones_pass() {
        assert!(admission(|_| {}).origin_allowed(&headers(&[("origin", "https://any.example")])));
        let admission =
            admission(|s| s.server.allowed_origins = vec!["https://Wallet.example/".into()]);
        assert!(admission.origin_allowed(&headers(&[])));
        assert!(admission.origin_allowed(&headers(&[("origin", "https://wallet.EXAMPLE")])));
        for other in [
            "https://evil.example",
            "http://wallet.example",
            "null",
            "https://wallet.example:8443",
        ] {
            assert!(
                !admission.origin_allowed(&headers(&[("origin", other)])),
                "{other}"
            );
        }
    }
}
