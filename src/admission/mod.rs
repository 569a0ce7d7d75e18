//! Admission of WebSocket sessions: the node-wide cap (`server.max_connections`), the caps per
//! client address (`server.max_connections_per_ip`) and per token subject
//! (`auth.max_connections_per_subject`), the allowed origins, and the client address itself
//! (the socket's peer, or what a trusted proxy forwarded).
//!
//! Each admitted session holds [`Slots`], a share of every cap, for its whole life; dropping
//! them gives the share back.
//!
//! - `counts`: the per-key session counts (per address, per subject).
//! - `forwarded`: the client address behind trusted proxies.

mod counts;
mod forwarded;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::http::header::{HeaderMap, ORIGIN};
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;
use counts::{Counts, Slot};

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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    pub(super) fn admission(configure: impl FnOnce(&mut Settings)) -> Admission {
        let mut settings = Settings::default();
        configure(&mut settings);
        Admission::new(&settings)
    }

    pub(super) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    pub(super) fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
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
