//! Layered configuration: built-in defaults < an optional TOML file (`--config FILE`) <
//! environment variables `GATEWAY__<SECTION>__<KEY>`.
//!
//! Durations are humantime strings (`500ms`, `10s`, `24h`) in files and env vars alike;
//! lists in env vars are comma-separated. Every key is documented in docs/configuration.md.
pub mod redact;
pub mod serde_helpers;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::broker::BrokerConfig;
use crate::chains::ChainsConfig;
use crate::history::{HistoryConfig, StorageConfig};
use crate::http::StatusConfig;
use crate::ingest::jetstream::JetStreamConfig;
use serde_helpers::{net_list, string_list};

/// Everything the gateway can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub publish: PublishConfig,
    pub admin: AdminConfig,
    pub chains: ChainsConfig,
    pub delivery: DeliveryConfig,
    pub storage: StorageConfig,
    pub broker: BrokerConfig,
    pub history: HistoryConfig,
    pub ingest: IngestConfig,
    pub log: LogConfig,
    pub status: StatusConfig,
    pub metrics: MetricsConfig,
}

/// `[server]`: listening, timeouts, buffers, drain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// `Some(true)` forces dev mode, `Some(false)` forbids it; unset: dev mode when nothing
    /// at all is configured (no file, no `GATEWAY__*` variable).
    pub dev: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
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
    pub tls: crate::tls::TlsConfig,
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
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

/// `[limits]`: what one connection may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_channels_per_request: usize,
    pub max_subscriptions_per_connection: usize,
    pub requests_per_second: f64,
    pub request_burst: u32,
    pub errors_per_minute: usize,
    /// Ack frames per second (their own token bucket; acks do not spend request tokens).
    pub acks_per_second: f64,
    /// Ack token bucket size.
    pub ack_burst: u32,
    /// `messageIds` in one ack frame.
    pub max_ack_ids: usize,
    /// Time a subscribe may take to register cluster interest for all its channels.
    #[serde(with = "humantime_serde")]
    pub subscribe_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_channels_per_request: 64,
            max_subscriptions_per_connection: 256,
            requests_per_second: 20.0,
            request_burst: 50,
            errors_per_minute: 10,
            acks_per_second: 1000.0,
            ack_burst: 2000,
            max_ack_ids: 1024,
            subscribe_timeout: Duration::from_secs(5),
        }
    }
}

/// `[publish]`: the publish API. `Debug` redacts the keys.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    #[serde(deserialize_with = "string_list")]
    pub api_keys: Vec<String>,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Largest `data` of one publication, in bytes (JSON text as sent); its push must fit in
    /// half of `server.max_queue_bytes` (checked at start).
    pub max_publication_bytes: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            max_publication_bytes: 256 * 1024,
        }
    }
}

/// `[admin]`: the admin API. `Debug` redacts the keys.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(deserialize_with = "string_list")]
    pub api_keys: Vec<String>,
}

impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("api_keys", &redact::Keys(&self.api_keys))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("api_keys", &redact::Keys(&self.api_keys))
            .finish()
    }
}

/// `[delivery]`: acknowledged delivery (ack mode only).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    pub max_retries: u32,
    pub max_unacked: usize,
    /// Publications one connection may have waiting for replay (all its resumes together).
    pub max_replay: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(10),
            max_retries: 3,
            max_unacked: 1024,
            max_replay: 64_000,
        }
    }
}

/// `[ingest]`: publications from sources other than the HTTP API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// `[ingest.jetstream]`: a JetStream stream, consumed by a durable shared by all nodes.
    pub jetstream: JetStreamConfig,
}

/// `[metrics]`: where `/metrics` is served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Own listener for `/metrics` (e.g. `127.0.0.1:9090`), so it need not be public; the
    /// main listener then answers `/metrics` with 404. Unset: served on `server.listen`.
    pub listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
        }
    }
}

/// Configuration could not be loaded; the message names the source and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loaded settings and whether any source was given (for dev-mode auto-detection).
pub struct Loaded {
    pub settings: Settings,
    pub configured: bool,
}

impl Settings {
    /// Loads defaults < `file` < environment (`GATEWAY__SECTION__KEY`).
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("GATEWAY")
                .prefix_separator("__")
                .separator("__"),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        let configured =
            file.is_some() || std::env::vars().any(|(k, _)| k.starts_with("GATEWAY__"));
        Ok(Loaded {
            settings,
            configured,
        })
    }

    /// The largest publication the publish bounds let through must have a push that fits in
    /// half of a connection's outbound queue: a larger one would close every subscriber with
    /// 1013, and a replay (paced at half the queue) could never send it, so an acking client
    /// would get it again on every reconnect.
    fn check_publication_fits(&self) -> Result<(), ConfigError> {
        let publish = &self.publish;
        if publish.max_publication_bytes == 0 {
            return Err(ConfigError::Invalid(
                "publish.max_publication_bytes must be at least 1".to_owned(),
            ));
        }
        let largest = publish.max_publication_bytes.min(publish.max_body_bytes);
        let room = self.server.max_queue_bytes / 2;
        let overhead = crate::hub::MAX_FRAME_OVERHEAD;
        if largest + overhead > room {
            return Err(ConfigError::Invalid(format!(
                "a publication of {largest} bytes (the smaller of publish.max_publication_bytes \
                 and publish.max_body_bytes) makes a push of up to {} bytes, more than half of \
                 server.max_queue_bytes ({}): subscribers could never be sent it; lower \
                 publish.max_publication_bytes to at most {} or raise server.max_queue_bytes \
                 to at least {}",
                largest + overhead,
                self.server.max_queue_bytes,
                room.saturating_sub(overhead),
                2 * (largest + overhead)
            )));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.server.ping_interval.is_zero() {
            return invalid("server.ping_interval must be greater than 0");
        }
        if self.limits.acks_per_second <= 0.0
            || self.limits.ack_burst == 0
            || self.limits.max_ack_ids == 0
        {
            return invalid(
                "limits.acks_per_second, limits.ack_burst and limits.max_ack_ids must be greater than 0",
            );
        }
        if self.limits.subscribe_timeout.is_zero() {
            return invalid("limits.subscribe_timeout must be greater than 0");
        }
        if self.limits.requests_per_second <= 0.0 || self.limits.request_burst == 0 {
            return invalid(
                "limits.requests_per_second and limits.request_burst must be greater than 0",
            );
        }
        if self.server.max_connections == 0
            || self.server.max_connections_per_ip == 0
            || self.auth.max_connections_per_subject == 0
        {
            return invalid(
                "server.max_connections, server.max_connections_per_ip and \
                 auth.max_connections_per_subject must be at least 1",
            );
        }
        if self.server.max_queue_bytes < 4096 {
            return invalid("server.max_queue_bytes must be at least 4096");
        }
        self.check_publication_fits()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return invalid("log.format must be \"text\" or \"json\"");
        }
        if self.delivery.ack_timeout.is_zero() {
            return invalid("delivery.ack_timeout must be greater than 0");
        }
        self.ingest
            .jetstream
            .validate()
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let mut settings = Settings::default();
        settings.auth.hs256_secret = Some("hs-secret-0123456789".into());
        settings.auth.jwks_url = Some("https://jwks-user:jwks-pass@issuer.example/jwks".into());
        settings.publish.api_keys = vec!["publisher-key-1".into(), "publisher-key-2".into()];
        settings.admin.api_keys = vec!["admin-key-1".into()];
        settings.storage.url = "postgres://gw:db-pass@db:5432/gw".into();
        settings.broker.url = Some("nats://broker-user:broker-pass@nats:4222".into());
        settings.ingest.jetstream.url = Some("nats://js-token@n1:4222,nats://u:js-pass@n2".into());
        let shown = format!("{settings:?}");
        for secret in [
            "hs-secret",
            "jwks-pass",
            "publisher-key",
            "admin-key",
            "db-pass",
            "broker-pass",
            "js-token",
            "js-pass",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // What is not secret stays readable.
        assert!(
            shown.contains("postgres://gw:[redacted]@db:5432/gw"),
            "{shown}"
        );
        assert!(shown.contains("max_batch: 1000"), "{shown}");
    }
}
