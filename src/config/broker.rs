//! `[broker]`: the cross-node transport (NATS) of a cluster; unset, the node runs alone.

use serde::Deserialize;

/// `[broker]` configuration. `Debug` redacts the URL's credentials.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `nats://host:4222` for a cluster; unset: in-process (one node).
    pub url: Option<String>,
    /// Subject prefix, so several deployments can share one NATS.
    pub subject_prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            subject_prefix: "activity-gateway".into(),
        }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.url.as_deref().map(crate::config::redact::url))
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}
