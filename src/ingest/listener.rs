//! The history's commit listener: turns committed account-activity publications into shared
//! push frames and fans them out, in commit order.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::Broker;
use crate::history::{CommitListener, Committed};
use crate::hub::Publication;

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
            if let Some(p) = Publication::durable(&c.channel, &c.payload, &c.position, now) {
                self.broker.publish(Arc::new(p), &c.payload);
            }
        }
    }
}
