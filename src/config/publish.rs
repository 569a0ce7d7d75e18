//! The `[publish]` and `[admin]` sections: the API keys of the HTTP APIs and the bounds of a
//! publish request. `Debug` never shows a key.

use serde::Deserialize;

use super::redact;
use super::serde_helpers::string_list;

/// `[publish]`: the publish API. `Debug` redacts the keys.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Publisher keys for `POST /v1/publish` and heartbeats.
    #[serde(deserialize_with = "string_list")]
    pub api_keys: Vec<String>,
    /// Largest request body; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Publications in one request.
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
    /// Admin keys for `PUT /v1/chains/{chainId}/status`.
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
