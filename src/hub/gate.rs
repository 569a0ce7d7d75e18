//! The seam between replay and live delivery for a resuming subscription.
//!
//! A resuming subscription is registered in the hub *before* its history is read, with its
//! gate closed: live publications are held in the gate instead of being queued. Once the
//! replay is queued, the gate opens: held publications at or below the last replayed offset
//! are dropped (the replay covered them) and the rest are queued in order. So nothing
//! published around the seam is missed or sent twice.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Publication;
use crate::session::{Outbound, Outbox};

/// Held publications of one resuming subscription (`None` once open).
#[derive(Debug, Default)]
pub struct Gate {
    held: Mutex<Option<Vec<Outbound>>>,
}

/// At most this many live publications are held while a replay runs; more means the client
/// cannot keep up, and it is closed as a slow consumer.
const MAX_HELD: usize = 10_000;

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate {
            held: Mutex::new(Some(Vec::new())),
        })
    }

    /// Queues `item` on `outbox`, or holds it while the gate is closed.
    pub fn pass(&self, outbox: &Outbox, item: Outbound) -> bool {
        let mut held = self.held.lock();
        match held.as_mut() {
            Some(list) if list.len() >= MAX_HELD => {
                outbox.overflow();
                false
            }
            Some(list) => {
                list.push(item);
                true
            }
            // Queued under the lock, so an opening gate cannot reorder it.
            None => outbox.push(item),
        }
    }

    /// Opens the gate: queues what was held after `replayed_up_to` (an offset of the stream).
    pub fn open(&self, outbox: &Outbox, replayed_up_to: u64) {
        let mut held = self.held.lock();
        for item in held.take().unwrap_or_default() {
            if let Outbound::Push { publication, .. } = &item {
                if offset_of(publication).is_some_and(|o| o <= replayed_up_to) {
                    continue;
                }
            }
            outbox.push(item);
        }
    }
}

fn offset_of(p: &Arc<Publication>) -> Option<u64> {
    p.durable.as_ref().map(|d| d.position.offset)
}
