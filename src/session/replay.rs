//! Replays of resuming subscriptions: read from history page by page and queued in paced
//! chunks from the session loop. Pacing keeps the outbox and the unacknowledged count under
//! half their bounds, so a replay never trips the slow-consumer close; one page of one
//! channel is in memory at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gate::Gate;
use super::subscriptions::Held;
use super::{Outbound, Session};
use crate::history::Recovery;
use crate::hub::Publication;
use crate::metrics;
use crate::protocol::Position;

/// Publications read from history per query.
const PAGE: usize = 500;
/// Pushes queued per replay event of the session loop.
const CHUNK: usize = 256;

/// A replay waiting to be queued for one channel of one subscription.
pub(super) struct ReplayJob {
    gate: Arc<Gate>,
    subscription_id: Arc<str>,
    channel: Arc<str>,
    /// The account stream.
    key: String,
    /// Concrete chain of the subscription (`None`: every chain).
    chain_filter: Option<Arc<str>>,
    /// The page being queued.
    items: VecDeque<Arc<Publication>>,
    /// The last position read; the next page starts after it.
    after: Position,
    /// The stream's top when the reply was sent: the replay ends there and held live pushes
    /// up to it are dropped.
    up_to: u64,
}

/// Why a replay could not be finished after its reply said `recovered: true`.
pub(super) struct ReplayInterrupted;

impl Session {
    /// Publications still to be queued by this connection's replays.
    pub(super) fn replay_remaining(&self) -> u64 {
        self.replays.iter().map(ReplayJob::remaining).sum()
    }

    /// How long to wait before the next replay chunk: zero while there is room.
    pub(super) fn replay_delay(&self) -> Duration {
        if self.has_room_for_replay() {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        }
    }

    fn has_room_for_replay(&self) -> bool {
        let settings = &self.node.settings;
        let queue_ok = self.outbox.queued_bytes() < settings.server.max_queue_bytes / 2;
        let acks_ok = self
            .acks
            .as_ref()
            .is_none_or(|a| a.unacked() < settings.delivery.max_unacked / 2);
        queue_ok && acks_ok
    }

    /// Queues the next chunk of the oldest replay, reading its next page when the current one
    /// is queued; opens its gate when it is done. A page that cannot be read any more (the
    /// store failed, or retention removed it meanwhile) interrupts the replay.
    pub(super) async fn pump_replay(&mut self) -> Result<(), ReplayInterrupted> {
        let mut budget = CHUNK;
        while budget > 0 && self.has_room_for_replay() {
            let Some(job) = self.replays.front_mut() else {
                return Ok(());
            };
            if let Some(publication) = job.items.pop_front() {
                let channel = publication.channel.clone();
                self.outbox.push(Outbound::Push {
                    publication,
                    subscription_id: job.subscription_id.clone(),
                    channel,
                    redelivered: false,
                });
                budget -= 1;
            } else if job.after.offset < job.up_to {
                let page = self
                    .node
                    .history
                    .read_after(&job.key, &job.after, PAGE)
                    .await;
                let Some(job) = self.replays.front_mut() else {
                    return Ok(());
                };
                match page {
                    Ok(Recovery::Recovered { publications, .. }) if !publications.is_empty() => {
                        job.fill(publications)
                    }
                    Ok(_) => {
                        metrics::delivery_failure("replay_interrupted");
                        return Err(ReplayInterrupted);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot read the next page of a replay; closing so the client resumes.");
                        metrics::delivery_failure("replay_interrupted");
                        return Err(ReplayInterrupted);
                    }
                }
            } else {
                job.gate.open(job.up_to);
                tracing::trace!(channel = %job.channel, "Replay done; live delivery resumed.");
                self.replays.pop_front();
            }
        }
        Ok(())
    }
}

// === ReplayJob ===

impl ReplayJob {
    /// A replay of `held` after `from` up to offset `up_to`, opening `gate` when done.
    pub(super) fn new(
        gate: &Arc<Gate>,
        subscription_id: &Arc<str>,
        held: &Held,
        from: &Position,
        up_to: u64,
    ) -> Self {
        Self {
            gate: gate.clone(),
            subscription_id: subscription_id.clone(),
            channel: held.sent.clone(),
            key: held.key.clone(),
            chain_filter: held.chain_filter(),
            items: VecDeque::new(),
            after: from.clone(),
            up_to,
        }
    }

    /// Publications still to be queued (an upper bound for a concrete-chain subscription).
    pub(super) fn remaining(&self) -> u64 {
        self.items.len() as u64 + self.up_to.saturating_sub(self.after.offset)
    }

    /// Takes a page: the publications up to `up_to` on the subscription's chain.
    fn fill(&mut self, page: Vec<crate::history::Stored>) {
        let now = Instant::now();
        let mut n = 0;
        for s in page {
            if s.position.offset > self.up_to {
                break;
            }
            self.after.offset = s.position.offset;
            let Some(p) = Publication::durable(&s.channel, &s.payload, &s.position, now) else {
                continue;
            };
            if self
                .chain_filter
                .as_ref()
                .is_none_or(|c| **c == *p.chain_reference)
            {
                self.items.push_back(Arc::new(p));
                n += 1;
            }
        }
        metrics::replayed(n);
    }
}
