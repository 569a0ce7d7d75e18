//! The seam between replay and live delivery for a resuming subscription.
//!
//! A resuming subscription is registered in the hub *before* its history is read, through a
//! closed gate: live publications are held in the gate instead of being queued. When the
//! replay is queued, the gate opens: held publications at or below the last replayed offset
//! are dropped (the replay covered them) and the rest are queued in order. So nothing
//! published around the seam is missed or sent twice.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Outbound, Outbox};
use crate::hub::{Publication, Recipient};

/// One resuming subscription's recipient in the hub: its connection's outbox, behind a gate
/// that holds live publications while the replay runs.
#[derive(Debug)]
pub struct Gate {
    /// The held publications while the gate is closed; `None` when it is open.
    held: Mutex<Option<Vec<Outbound>>>,
    outbox: Outbox,
}

/// At most this many live publications are held while a replay runs; more means the client
/// cannot keep up, and it is closed as a slow consumer.
const MAX_HELD: usize = 10_000;

impl Gate {
    /// A closed gate in front of `outbox`.
    pub fn closed(outbox: &Outbox) -> Arc<Gate> {
        Arc::new(Gate {
            held: Mutex::new(Some(Vec::new())),
            outbox: outbox.clone(),
        })
    }

    /// Opens the gate: queues what was held after `replayed_up_to` (an offset of the stream).
    pub fn open(&self, replayed_up_to: u64) {
        let mut held = self.held.lock();
        for item in held.take().unwrap_or_default() {
            if let Outbound::Push { publication, .. } = &item {
                if offset_of(publication).is_some_and(|o| o <= replayed_up_to) {
                    continue;
                }
            }
            self.outbox.push(item);
        }
    }
}

impl Recipient for Gate {
    /// Queues the publication on the outbox, or holds it while the gate is closed.
    fn deliver(
        &self,
        publication: &Arc<Publication>,
        subscription_id: &Arc<str>,
        channel: &Arc<str>,
    ) -> bool {
        let item = Outbound::push(publication, subscription_id, channel);
        let mut held = self.held.lock();
        match held.as_mut() {
            Some(list) if list.len() >= MAX_HELD => {
                self.outbox.overflow();
                false
            }
            Some(list) => {
                list.push(item);
                true
            }
            // Queued under the lock, so an opening gate cannot reorder it.
            None => self.outbox.push(item),
        }
    }
}

fn offset_of(p: &Arc<Publication>) -> Option<u64> {
    p.durable.as_ref().map(|d| d.position.offset)
}
