//! The hub: this node's subscriptions and the fan-out of publications to them.
//!
//! A publication reaches every local subscription whose hub key matches (the account stream,
//! or the market-data key) and, for concrete-chain account subscriptions, whose chain matches:
//! once per matching subscription, carrying that subscription's id.
mod gate;
mod publication;
mod registry;

pub use gate::Gate;
pub use publication::{message_id, Durable, Publication, MAX_FRAME_OVERHEAD};
pub use registry::{ConnId, Registry, Subscriber};

use std::sync::Arc;

/// Local subscriptions and fan-out.
#[derive(Default)]
pub struct Hub {
    registry: Registry,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&self, key: &str, sub: Subscriber) {
        self.registry.insert(key, sub);
    }

    /// Moves a connection's channel (held as `old_channel`) to the subscriber `sub`, atomically.
    pub fn resubscribe(&self, key: &str, old_channel: &str, sub: Subscriber) {
        self.registry.replace(key, old_channel, sub);
    }

    pub fn unsubscribe(&self, key: &str, conn: ConnId, subscription_id: &str, channel: &str) {
        self.registry.remove(key, conn, subscription_id, channel);
    }

    /// Queues the publication for every matching local subscriber. Never blocks.
    pub fn publish(&self, publication: &Arc<Publication>) -> usize {
        self.registry.fan_out(publication)
    }
}
