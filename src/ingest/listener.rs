//! The history's commit listener: turns committed account-activity publications into shared
//! push frames and fans them out, in commit order.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::Broker;
use crate::history::{CommitListener, Committed, StreamPosition};
use crate::hub::{Durable, Position, Publication};
use crate::protocol::{Channel, Namespace};

/// Hands committed publications to the broker (the local hub, or every node), in commit order.
pub struct HubListener {
    broker: Arc<Broker>,
}

impl HubListener {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

impl CommitListener for HubListener {
    fn committed(&self, batch: &[Committed]) {
        let now = Instant::now();
        for c in batch {
            if let Some(p) = durable_publication(&c.channel, &c.payload, &c.position, now) {
                self.broker.publish(Arc::new(p), &c.payload);
            }
        }
    }
}

/// A durable account-activity publication from its stored parts (commit or replay).
/// `None` when the stored channel no longer parses (cannot happen for what the API accepted).
pub fn durable_publication(
    channel: &str,
    payload: &str,
    position: &StreamPosition,
    at: Instant,
) -> Option<Publication> {
    let Ok(Channel::AccountActivity(a)) = Channel::parse(channel) else {
        tracing::error!(%channel, "Stored publication has an invalid channel; skipped.");
        return None;
    };
    let position = Position {
        epoch: position.epoch.clone(),
        offset: position.offset,
    };
    Some(Publication::new(
        Namespace::AccountActivity,
        a.stream_key(),
        a.account.chain.reference().to_owned(),
        channel.into(),
        payload,
        Some(Durable::new(position)),
        at,
    ))
}
