//! The `[status]` section: whether the operator status page is served.

use serde::Deserialize;

/// `[status]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Serve `GET /status` and `GET /v1/status` (default true).
    pub enabled: bool,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}
