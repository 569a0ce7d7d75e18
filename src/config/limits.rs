//! The `[limits]` section: what one connection may ask for.

use std::time::Duration;

use serde::Deserialize;

/// `[limits]`: what one connection may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Channels in one subscribe; more is refused with `too_many_channels`.
    pub max_channels_per_request: usize,
    /// Distinct channels one connection may hold; more is refused with `too_many_subscriptions`.
    pub max_subscriptions_per_connection: usize,
    /// Token-bucket refill rate for subscribe, unsubscribe and malformed frames.
    pub requests_per_second: f64,
    /// Request token bucket size.
    pub request_burst: u32,
    /// Error replies allowed in any 60 s window; one more closes with 1008.
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
