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
        let items = held.take().unwrap_or_default();
        self.outbox.release_held(items.len());
        for item in items {
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
            // The connection's budget of held publications (`outbox::MAX_HELD`).
            Some(_) if !self.outbox.hold() => false,
            Some(list) => {
                list.push(item);
                true
            }
            // Queued under the lock, so an opening gate cannot reorder it.
            None => self.outbox.push(item),
        }
    }
}

impl Drop for Gate {
    /// A gate dropped closed (its subscription went during the replay) gives its held
    /// publications back to the connection's budget.
    fn drop(&mut self) {
        if let Some(list) = self.held.get_mut().take() {
            self.outbox.release_held(list.len());
        }
    }
}

fn offset_of(p: &Arc<Publication>) -> Option<u64> {
    p.durable.as_ref().map(|d| d.position.offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::outbox::{State, MAX_HELD};

    fn publication() -> Arc<Publication> {
        crate::hub::stored_at(1)
    }

    #[test]
    fn the_held_budget_is_the_connections_not_each_gates() {
        let (outbox, _rx) = Outbox::new(1 << 30, false);
        let (a, b) = (Gate::closed(&outbox), Gate::closed(&outbox));
        let (p, id, ch): (_, Arc<str>, Arc<str>) = (publication(), "s".into(), "c".into());
        for _ in 0..MAX_HELD / 2 {
            assert!(a.deliver(&p, &id, &ch));
            assert!(b.deliver(&p, &id, &ch));
        }
        assert_eq!(outbox.state(), State::Open);
        assert!(!b.deliver(&p, &id, &ch));
        assert_eq!(outbox.state(), State::Overflowed);
    }

    #[test]
    fn an_opened_or_dropped_gate_gives_its_held_publications_back() {
        let (outbox, _rx) = Outbox::new(1 << 30, false);
        let (p, id, ch): (_, Arc<str>, Arc<str>) = (publication(), "s".into(), "c".into());
        let dropped = Gate::closed(&outbox);
        let opened = Gate::closed(&outbox);
        for _ in 0..MAX_HELD / 2 {
            assert!(dropped.deliver(&p, &id, &ch));
            assert!(opened.deliver(&p, &id, &ch));
        }
        drop(dropped);
        // Everything held was replayed already (offset 1), so opening queues nothing.
        opened.open(1);
        let next = Gate::closed(&outbox);
        for _ in 0..MAX_HELD {
            assert!(next.deliver(&p, &id, &ch));
        }
        assert_eq!(outbox.state(), State::Open);
    }
}
