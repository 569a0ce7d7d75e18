//! Layered configuration: built-in defaults < an optional TOML file (`--config FILE`) <
//! environment variables `GATEWAY__<SECTION>__<KEY>`.
//!
//! Durations are humantime strings (`500ms`, `10s`, `24h`) in files and env vars alike;
//! lists in env vars are comma-separated. Every key is documented in docs/configuration.md.
//!
//! Each section's struct, defaults and checks live in a file of their own (`server`,
//! `limits`, `auth`, `publish`, `chains`, `delivery`, `history`, `status`, `tls`,
//! `observe`, `broker`, `jetstream`), re-exported here; this file holds [`Settings`], loading, and the checks that
//! span sections. The structs depend on no module of the gateway but
//! [`crate::protocol`].
mod auth;
mod broker;
mod chains;
mod delivery;
mod history;
mod jetstream;
mod limits;
mod observe;
mod publish;
pub mod redact;
pub mod serde_helpers;
mod server;
mod status;
mod tls;

use std::path::Path;

use serde::Deserialize;

pub(crate) use auth::non_empty;
pub use auth::AuthConfig;
pub use chains::ChainsConfig;
pub use delivery::DeliveryConfig;
pub use history::{HistoryConfig, StorageConfig};
pub use limits::LimitsConfig;
pub use observe::{LogConfig, MetricsConfig};
pub use publish::{AdminConfig, PublishConfig};
pub use server::ServerConfig;
pub use status::StatusConfig;
pub use tls::TlsConfig;

pub use broker::BrokerConfig;
pub use jetstream::JetStreamConfig;

/// Everything the gateway can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[publish]`.
    pub publish: PublishConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[chains]`.
    pub chains: ChainsConfig,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[broker]`.
    pub broker: BrokerConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[status]`.
    pub status: StatusConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
}

/// `[ingest]`: publications from sources other than the HTTP API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// `[ingest.jetstream]`: a JetStream stream, consumed by a durable shared by all nodes.
    pub jetstream: JetStreamConfig,
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
    /// The validated settings.
    pub settings: Settings,
    /// Whether a file or any `GATEWAY__*` variable was given.
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
        let overhead = crate::protocol::MAX_FRAME_OVERHEAD;
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
