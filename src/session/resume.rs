//! Resume on subscribe (ack mode): the reply carries each account stream's position, and a
//! channel subscribed with the client's last acknowledged position gets every later
//! publication replayed, in offset order, before its live pushes.
//!
//! Order of operations, which makes the seam exact: the subscription is registered in the hub
//! with its gate closed (live pushes are held), then the history is read, then the reply is
//! queued, then the replay is queued in paced chunks, then the gate opens and releases the
//! held pushes newer than the replay. Pacing keeps the outbox and the unacknowledged count
//! under half their bounds, so a replay never trips the slow-consumer close.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::subscriptions::Held;
use super::{Outbound, Session};
use crate::history::{Recovery, StreamPosition};
use crate::hub::{Gate, Publication};
use crate::ingest::durable_publication;
use crate::metrics;
use crate::protocol::request::WirePosition;
use crate::protocol::Channel;

/// Publications read from history per query.
const PAGE: usize = 500;
/// Pushes queued per pump of the session loop.
const CHUNK: usize = 256;

/// A replay waiting to be queued for one channel of one subscription.
pub(super) struct ReplayJob {
    gate: Arc<Gate>,
    subscription_id: Arc<str>,
    channel: Arc<str>,
    items: VecDeque<Arc<Publication>>,
    /// The highest stream offset the replay covers; held live pushes up to it are dropped.
    up_to: u64,
}

impl Session {
    /// The gate for `held` if it will be resumed: ack mode, an account channel, and a
    /// position given by the client.
    pub(super) fn gate_for(
        &self,
        held: &Held,
        positions: &HashMap<String, WirePosition>,
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
        requested: &HashMap<String, WirePosition>,
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
        for ((h, gate), top) in accounts.into_iter().zip(tops) {
            positions.insert(
                h.sent.to_string(),
                json!({"epoch": top.epoch, "offset": top.offset}),
            );
            let (Some(gate), Some(from)) = (gate, requested.get(&*h.sent)) else {
                continue;
            };
            let (result, job) = self.read_replay(subscription_id, h, gate, from, &top).await;
            recovery.insert(h.sent.to_string(), result);
            jobs.extend(job);
        }
        extra.insert("positions".into(), Value::Object(positions));
        if !recovery.is_empty() {
            extra.insert("recovery".into(), Value::Object(recovery));
        }
        jobs
    }

    async fn read_replay(
        &self,
        subscription_id: &Arc<str>,
        h: &Held,
        gate: &Arc<Gate>,
        from: &WirePosition,
        top: &StreamPosition,
    ) -> (Value, Option<ReplayJob>) {
        let chain_filter = h.chain_filter();
        let mut after = StreamPosition {
            epoch: from.epoch.clone(),
            offset: from.offset,
        };
        let mut items = VecDeque::new();
        let now = Instant::now();
        loop {
            match self.node.history.read_after(&h.key, &after, PAGE).await {
                Ok(Recovery::Recovered { publications, more }) => {
                    for s in &publications {
                        after.offset = s.position.offset;
                        let Some(p) = durable_publication(&s.channel, &s.payload, &s.position, now)
                        else {
                            continue;
                        };
                        if chain_filter
                            .as_ref()
                            .is_none_or(|c| **c == *p.chain_reference)
                        {
                            items.push_back(Arc::new(p));
                        }
                    }
                    if !more {
                        break;
                    }
                }
                Ok(Recovery::Failed(f)) => {
                    gate.open(&self.outbox, top.offset);
                    metrics::resume(f.as_str());
                    return (
                        json!({"recovered": false, "replayed": 0, "reason": f.as_str()}),
                        None,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read history for a resume; subscribing live only.");
                    gate.open(&self.outbox, top.offset);
                    metrics::resume("store_unavailable");
                    return (
                        json!({"recovered": false, "replayed": 0, "reason": "store_unavailable"}),
                        None,
                    );
                }
            }
        }
        metrics::resume("recovered");
        metrics::replayed(items.len() as u64);
        let result = json!({"recovered": true, "replayed": items.len()});
        let job = ReplayJob {
            gate: gate.clone(),
            subscription_id: subscription_id.clone(),
            channel: h.sent.clone(),
            items,
            up_to: after.offset,
        };
        (result, Some(job))
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

    /// Queues the next chunk of the oldest replay; opens its gate when it is done.
    pub(super) fn pump_replay(&mut self) {
        let mut budget = CHUNK;
        while budget > 0 && self.has_room_for_replay() {
            let Some(job) = self.replays.front_mut() else {
                return;
            };
            match job.items.pop_front() {
                Some(publication) => {
                    let channel = publication.channel.clone();
                    self.outbox.push(Outbound::Push {
                        publication,
                        subscription_id: job.subscription_id.clone(),
                        channel,
                        redelivered: false,
                    });
                    budget -= 1;
                }
                None => {
                    job.gate.open(&self.outbox, job.up_to);
                    tracing::trace!(channel = %job.channel, "Replay done; live delivery resumed.");
                    self.replays.pop_front();
                }
            }
        }
    }
}
