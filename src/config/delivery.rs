//! The `[delivery]` section: acknowledged delivery (ack mode only).

use std::time::Duration;

use serde::Deserialize;

/// `[delivery]`: acknowledged delivery (ack mode only).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// A push not acknowledged within this is sent again (`"redelivered": true`).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Re-sends per push (1 + this deliveries in all); then the connection is closed with 4010.
    pub max_retries: u32,
    /// Pushes awaiting an ack per connection; beyond it the connection is closed with 1013.
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
