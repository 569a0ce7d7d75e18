//! A subscribe waiting for the cluster broker's interest in its new channels, and the
//! requests queued behind it. The interest is registered by a task of its own, so the session
//! loop keeps answering pings, acks and timers meanwhile; at most one subscribe waits at a
//! time.

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use super::subscribe::PendingSubscribe;
use super::{Session, Stop};
use crate::protocol::request::Request;

/// Whether requests are handled as they arrive, or wait behind a subscribe.
pub(super) enum Phase {
    /// Requests are handled as they arrive.
    Ready,
    /// A subscribe waits for its cluster interest before its reply (boxed: an idle
    /// connection pays one pointer for it).
    Subscribing(Box<Waiting>),
}

/// A subscribe waiting for its cluster interest, and the requests queued behind it.
pub(super) struct Waiting {
    /// The subscribe, registered in the hub.
    subscribe: PendingSubscribe,
    /// Registers the new channels' interest: whether each was registered in time.
    interest: JoinHandle<Vec<bool>>,
    /// Requests received meanwhile, handled in order after the subscribe (at most
    /// `limits.request_burst`; more are refused at once).
    pub(super) deferred: VecDeque<Request>,
}

/// Resolves with the pending subscribe's interest registration; never without one.
pub(super) async fn interest_registered(phase: &mut Phase) -> Vec<bool> {
    match phase {
        // A failed task registered nothing.
        Phase::Subscribing(w) => (&mut w.interest).await.unwrap_or_default(),
        Phase::Ready => std::future::pending().await,
    }
}

impl Session {
    /// Completes the subscribe now, or, with a cluster broker and new channels, registers
    /// their interest (all keys at once, under one time limit) outside the session loop.
    pub(super) async fn wait_for_interest(&mut self, pending: PendingSubscribe) -> Option<Stop> {
        let keys: Vec<String> = pending.new_keys().collect();
        if keys.is_empty() || !self.node.broker.is_cluster() {
            let registered = vec![true; keys.len()];
            return self.finish_subscribe(pending, registered).await;
        }
        let node = self.node.clone();
        let deadline = tokio::time::Instant::now() + node.settings.limits.subscribe_timeout;
        let interest = tokio::spawn(async move {
            futures_util::future::join_all(
                keys.iter()
                    .map(|k| node.broker.add_interest_until(k, deadline)),
            )
            .await
        });
        self.phase = Phase::Subscribing(Box::new(Waiting {
            subscribe: pending,
            interest,
            deferred: VecDeque::new(),
        }));
        None
    }

    /// Completes the waiting subscribe (`registered[i]` for its i-th new channel), then the
    /// requests that waited behind it, until one waits in turn.
    pub(super) async fn on_interest_registered(&mut self, registered: Vec<bool>) -> Option<Stop> {
        let Phase::Subscribing(waiting) = std::mem::replace(&mut self.phase, Phase::Ready) else {
            return None;
        };
        let Waiting {
            subscribe,
            mut deferred,
            ..
        } = *waiting;
        if let Some(stop) = self.finish_subscribe(subscribe, registered).await {
            return Some(stop);
        }
        while let Some(request) = deferred.pop_front() {
            if let Some(stop) = Box::pin(self.admit(request)).await {
                return Some(stop);
            }
            if let Phase::Subscribing(w) = &mut self.phase {
                w.deferred.extend(deferred.drain(..));
                break;
            }
        }
        None
    }

    /// Removes what a waiting subscribe registered (the connection ended before it completed).
    pub(super) fn abandon_waiting(&mut self) {
        let Phase::Subscribing(waiting) = std::mem::replace(&mut self.phase, Phase::Ready) else {
            return;
        };
        let Waiting {
            subscribe: p,
            interest,
            ..
        } = *waiting;
        for j in &p.joining {
            let h = &j.held;
            self.node
                .hub
                .unsubscribe(&h.key, self.conn, &p.subscription_id, &h.sent);
        }
        // The interest is given back when the registration has counted it.
        let keys: Vec<String> = p.new_keys().collect();
        let node = self.node.clone();
        tokio::spawn(async move {
            let _ = interest.await;
            for k in keys {
                node.broker.remove_interest(&k);
            }
        });
    }
}
