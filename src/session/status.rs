//! Chain status notifications: which chains concern a connection, and the `system` frames
//! that tell it when they go up or down.

use super::subscriptions::{relevant, Held};
use super::{Outbound, Session};
use crate::chains::ChainEvent;
use crate::metrics;
use crate::protocol::{reply, Namespace};

impl Session {
    /// Tells the client about the changes in `event` that concern its subscriptions.
    pub(super) fn on_chain_event(&mut self, event: &ChainEvent) {
        for (ns, selectors) in self.subs.selectors() {
            for up in [false, true] {
                let changed = event
                    .changes
                    .iter()
                    .filter(|(_, u)| *u == up)
                    .map(|(c, _)| c);
                let ids = relevant(&selectors, changed);
                self.send_status(ns, &ids, up);
            }
        }
    }

    /// Handles the chain events already queued, for the subscriptions held now.
    pub(super) fn take_queued_chain_events(&mut self) {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            match self.chain_events.try_recv() {
                Ok(event) => self.on_chain_event(&event),
                Err(TryRecvError::Lagged(_)) => self.resync_chains(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// After missed events, tells the current status of every relevant chain.
    pub(super) fn resync_chains(&mut self) {
        let up = self.node.chains.up_chains();
        for (ns, selectors) in self.subs.selectors() {
            self.send_status(ns, &relevant(&selectors, up.iter()), true);
        }
    }

    /// Tells the client that every chain up here that concerns it is down (the node drains).
    pub(super) fn send_down_for_all(&mut self) {
        let up = self.node.chains.up_chains();
        for (ns, selectors) in self.subs.selectors() {
            self.send_status(ns, &relevant(&selectors, up.iter()), false);
        }
    }

    /// The `up` notification right after a subscribe: the chains up now that concern it.
    pub(super) fn send_up_after_subscribe(&self, held: &[Held]) {
        let up = self.node.chains.up_chains();
        for ns in [Namespace::AccountActivity, Namespace::MarketData] {
            let selectors = held
                .iter()
                .filter(|h| h.channel.namespace() == ns)
                .map(|h| h.channel.chain().clone())
                .collect();
            self.send_status(ns, &relevant(&selectors, up.iter()), true);
        }
    }

    fn send_status(&self, ns: Namespace, chain_ids: &[String], up: bool) {
        if chain_ids.is_empty() {
            return;
        }
        if self.outbox.push(Outbound::Text(reply::system_notification(
            ns, chain_ids, up,
        ))) {
            metrics::system_notifications(up, 1);
        }
    }
}
