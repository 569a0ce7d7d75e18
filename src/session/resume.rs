//! Resume on subscribe (ack mode): the reply carries each account stream's position, and a
//! channel subscribed with the client's last acknowledged position gets every later
//! publication replayed, in offset order, before its live pushes.
//!
//! Order of operations, which makes the seam exact: the subscription is registered in the hub
//! with its gate closed (live pushes are held), then the stream's top is read and the position
//! checked, then the reply is queued, then the replay is read page by page and queued in paced
//! chunks up to that top, then the gate opens and releases the held pushes newer than it.
//! Pacing keeps the outbox and the unacknowledged count under half their bounds, so a replay
//! never trips the slow-consumer close. One page of one channel is in memory at a time, and
//! what a connection may have waiting for replay is capped (`delivery.max_replay`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::subscriptions::Held;
use super::{Outbound, Session};
use crate::history::Recovery;
use crate::hub::{Gate, Publication};
use crate::metrics;
use crate::protocol::Channel;
use crate::protocol::Position;

/// Publications read from history per query.
const PAGE: usize = 500;
/// Pushes queued per pump of the session loop.
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
    /// The gate for `held` if it will be resumed: ack mode, an account channel, and a
    /// position given by the client.
    pub(super) fn gate_for(
        &self,
        held: &Held,
        positions: &HashMap<String, Position>,
    ) -> Option<Arc<Gate>> {
        let resumable = self.acks.is_some()
            && matches!(held.channel, Channel::AccountActivity(_))
            && positions.contains_key(&*held.sent);
        resumable.then(Gate::closed)
    }

    /// Reads what must be replayed and fills `positions` and `recovery` into the reply.
    /// Every gate is either handed to a job or opened here.
    pub(super) async fn prepare_resume(
        &mut self,
        subscription_id: &Arc<str>,
        held: &[(Held, Option<Arc<Gate>>)],
        requested: &HashMap<String, Position>,
        extra: &mut Map<String, Value>,
    ) -> Vec<ReplayJob> {
        if self.acks.is_none() {
            return Vec::new();
        }
        let accounts: Vec<&(Held, Option<Arc<Gate>>)> = held
            .iter()
            .filter(|(h, _)| matches!(h.channel, Channel::AccountActivity(_)))
            .collect();
        if accounts.is_empty() {
            return Vec::new();
        }
        let streams: Vec<String> = accounts.iter().map(|(h, _)| h.key.clone()).collect();
        let tops = match self.node.history.positions(&streams).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read stream positions; subscribing live only.");
                let mut recovery = Map::new();
                for (h, gate) in &accounts {
                    if let Some(g) = gate {
                        g.open(&self.outbox, 0);
                        metrics::resume("store_unavailable");
                        recovery.insert(h.sent.to_string(), json!({"recovered": false, "replayed": 0, "reason": "store_unavailable"}));
                    }
                }
                if !recovery.is_empty() {
                    extra.insert("recovery".into(), Value::Object(recovery));
                }
                return Vec::new();
            }
        };
        let mut positions = Map::new();
        let mut recovery = Map::new();
        let mut jobs = Vec::new();
        let max_replay = self.node.settings.delivery.max_replay;
        let mut pending = self.replay_pending();
        for ((h, gate), top) in accounts.into_iter().zip(tops) {
            positions.insert(
                h.sent.to_string(),
                json!({"epoch": top.epoch, "offset": top.offset}),
            );
            let (Some(gate), Some(from)) = (gate, requested.get(&*h.sent)) else {
                continue;
            };
            let (result, job) = self
                .check_resume(subscription_id, h, gate, from, &top, max_replay, pending)
                .await;
            if let Some(job) = &job {
                pending += job.remaining();
            }
            recovery.insert(h.sent.to_string(), result);
            jobs.extend(job);
        }
        extra.insert("positions".into(), Value::Object(positions));
        if !recovery.is_empty() {
            extra.insert("recovery".into(), Value::Object(recovery));
        }
        jobs
    }

    /// Publications still to be queued by this connection's replays.
    fn replay_pending(&self) -> u64 {
        self.replays.iter().map(ReplayJob::remaining).sum()
    }

    /// Checks that `from` can be resumed (reading at most one publication) and returns the
    /// recovery entry and the job that will read the rest page by page.
    #[allow(clippy::too_many_arguments)]
    async fn check_resume(
        &self,
        subscription_id: &Arc<str>,
        h: &Held,
        gate: &Arc<Gate>,
        from: &Position,
        top: &Position,
        max_replay: u64,
        pending: u64,
    ) -> (Value, Option<ReplayJob>) {
        let failed = |reason: &str| json!({"recovered": false, "replayed": 0, "reason": reason});
        match self.node.history.read_after(&h.key, from, 1).await {
            Ok(Recovery::Recovered { .. }) => {}
            Ok(Recovery::Failed(f)) => {
                gate.open(&self.outbox, top.offset);
                metrics::resume(f.as_str());
                return (failed(f.as_str()), None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read history for a resume; subscribing live only.");
                gate.open(&self.outbox, top.offset);
                metrics::resume("store_unavailable");
                return (failed("store_unavailable"), None);
            }
        }
        // A position past the top read a moment ago is one the client got live since.
        let up_to = top.offset.max(from.offset);
        let replayed = up_to - from.offset;
        if pending.saturating_add(replayed) > max_replay {
            gate.open(&self.outbox, top.offset);
            metrics::resume("replay_limit");
            return (failed("replay_limit"), None);
        }
        metrics::resume("recovered");
        let job = ReplayJob {
            gate: gate.clone(),
            subscription_id: subscription_id.clone(),
            channel: h.sent.clone(),
            key: h.key.clone(),
            chain_filter: h.chain_filter(),
            items: VecDeque::new(),
            after: from.clone(),
            up_to,
        };
        (json!({"recovered": true, "replayed": replayed}), Some(job))
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
                job.gate.open(&self.outbox, job.up_to);
                tracing::trace!(channel = %job.channel, "Replay done; live delivery resumed.");
                self.replays.pop_front();
            }
        }
        Ok(())
    }
}

// === ReplayJob ===

impl ReplayJob {
    /// Publications still to be queued (an upper bound for a concrete-chain subscription).
    fn remaining(&self) -> u64 {
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
