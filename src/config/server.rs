//! The `[server]` section: the listener, its timeouts and buffers, connection caps and the
//! drain window.

use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::{net_list, string_list};

/// `[server]`: listening, timeouts, buffers, drain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the main listener binds (`host:port`).
    pub listen: String,
    /// `Some(true)` forces dev mode, `Some(false)` forbids it; unset: dev mode when nothing
    /// at all is configured (no file, no `GATEWAY__*` variable).
    pub dev: Option<bool>,
    /// Time an HTTP request head (a WebSocket upgrade included) has to arrive.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often each WebSocket is pinged; 2.5 intervals of silence close it with 4002.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// On SIGTERM/SIGINT, connections are closed with 1012 spread over this window.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Largest client message; a larger one closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Outbound queue bound per connection; overflow closes it with 1013.
    pub max_queue_bytes: usize,
    /// WebSocket read buffer per connection, allocated up front.
    pub read_buffer_bytes: usize,
    /// Bytes of frames a connection's WebSocket buffers before writing them to the socket (a
    /// run of frames still ends with one flush); 0: each frame is written as it is fed. The
    /// buffer is drained but never shrunk, so above 0 it keeps, for the connection's life,
    /// room for the largest run it was ever fed before a write (up to this plus a frame, and
    /// up to twice that after doubling): memory per connection ratchets up with its bursts.
    pub write_buffer_bytes: usize,
    /// WebSocket sessions at once (and HTTP connections being served at once); an upgrade
    /// past it gets 503 `over_capacity`.
    pub max_connections: usize,
    /// WebSocket sessions at once from one client address (IPv6: one /64); past it, 429
    /// `too_many_connections`.
    pub max_connections_per_ip: usize,
    /// Peers (CIDR blocks or addresses) whose `X-Forwarded-For` / `Forwarded` names the
    /// client address; empty: the socket's peer is the client.
    #[serde(deserialize_with = "net_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `Origin` values an upgrade may carry; empty: any. Requests without `Origin` pass.
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
    /// `[server.tls]`: serve `wss://` directly.
    pub tls: super::TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            dev: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            drain_window: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            max_queue_bytes: 1024 * 1024,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 0,
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            tls: super::TlsConfig::default(),
        }
    }
}
