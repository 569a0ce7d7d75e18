//! Resume on subscribe (ack mode): the reply carries each account stream's position, and a
//! channel subscribed with the client's last acknowledged position gets every later
//! publication replayed, in offset order, before its live pushes.
//!
//! Order of operations, which makes the seam exact: the subscription is registered in the hub
//! through a closed gate (live pushes are held), then the stream's top is read and the
//! position checked, then the reply is queued, then the replay is read page by page and
//! queued in paced chunks up to that top (`replay`), then the gate opens and releases the
//! held pushes newer than it. What a connection may have waiting for replay is capped
//! (`delivery.max_replay`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::gate::Gate;
use super::replay::ReplayJob;
use super::subscribe::Joining;
use super::subscriptions::Held;
use super::Session;
use crate::history::Recovery;
use crate::metrics;
use crate::protocol::Channel;
use crate::protocol::Position;

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
        resumable.then(|| Gate::closed(&self.outbox))
    }

    /// Reads what must be replayed and fills `positions` and `recovery` into the reply.
    /// Every gate is either handed to a job or opened here.
    pub(super) async fn prepare_resume(
        &mut self,
        subscription_id: &Arc<str>,
        joining: &[Joining],
        requested: &HashMap<String, Position>,
        extra: &mut Map<String, Value>,
    ) -> Vec<ReplayJob> {
        if self.acks.is_none() {
            return Vec::new();
        }
        let accounts: Vec<(&Held, &Option<Arc<Gate>>)> = joining
            .iter()
            .filter(|j| matches!(j.held.channel, Channel::AccountActivity(_)))
            .map(|j| (&j.held, &j.gate))
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
                        g.open(0);
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
        let mut pending = self.replay_remaining();
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
                gate.open(top.offset);
                metrics::resume(f.as_str());
                return (failed(f.as_str()), None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read history for a resume; subscribing live only.");
                gate.open(top.offset);
                metrics::resume("store_unavailable");
                return (failed("store_unavailable"), None);
            }
        }
        // A position past the top read a moment ago is one the client got live since.
        let up_to = top.offset.max(from.offset);
        let replayed = up_to - from.offset;
        if pending.saturating_add(replayed) > max_replay {
            gate.open(top.offset);
            metrics::resume("replay_limit");
            return (failed("replay_limit"), None);
        }
        metrics::resume("recovered");
        let job = ReplayJob::new(gate, subscription_id, h, from, up_to);
        (json!({"recovered": true, "replayed": replayed}), Some(job))
    }

    /// Adds `already_subscribed` to the reply's `recovery` for account channels whose
    /// positions were not used because the connection already receives their stream.
    pub(super) fn ignore_positions(
        &self,
        joining: &[Joining],
        ignored: &[Arc<str>],
        extra: &mut Map<String, Value>,
    ) {
        let mut entries = Vec::new();
        for h in joining.iter().map(|j| &j.held) {
            if matches!(h.channel, Channel::AccountActivity(_)) && ignored.contains(&h.sent) {
                metrics::resume("already_subscribed");
                entries.push((
                    h.sent.to_string(),
                    json!({"recovered": false, "replayed": 0, "reason": "already_subscribed"}),
                ));
            }
        }
        if entries.is_empty() {
            return;
        }
        let recovery = extra
            .entry("recovery")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = recovery {
            map.extend(entries);
        }
    }
}
