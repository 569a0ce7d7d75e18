//! The `[metrics]` and `[log]` sections: where `/metrics` is served and how log lines look.

use serde::Deserialize;

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
