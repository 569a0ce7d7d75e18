//! Client requests on a session: subscribe, unsubscribe, ack, and the error replies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::subscriptions::{relevant, Held};
use super::{Outbound, PendingSubscribe, Session, Stop};
use crate::hub::{Gate, Subscriber};
use crate::metrics;
use crate::protocol::request::{self, Request};
use crate::protocol::Position;
use crate::protocol::{reply, Channel, ErrorCode, Namespace};

impl Session {
    pub(super) async fn on_text(&mut self, text: &str) -> Option<Stop> {
        let request = match request::parse(text) {
            Ok(r) => r,
            Err(e) => return self.error(e.request_id.as_deref(), e.code, &e.message),
        };
        if let Request::Ack { message_ids } = request {
            return self.on_ack(&message_ids);
        }
        // Requests wait, in order, behind a subscribe whose cluster interest is being
        // registered (at most `limits.request_burst` of them; more are refused at once); the
        // session keeps answering pings, acks and timers meanwhile.
        if self.pending.is_some() {
            if self.deferred.len() < self.node.settings.limits.request_burst as usize {
                self.deferred.push_back(request);
                return None;
            }
            return self.rate_limited(&request);
        }
        self.admit(request).await
    }

    /// Applies the rate limit, then the request.
    async fn admit(&mut self, request: Request) -> Option<Stop> {
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited(&request);
        }
        self.handle(request).await
    }

    fn rate_limited(&mut self, request: &Request) -> Option<Stop> {
        let id = match request {
            Request::Subscribe { request_id, .. } | Request::Unsubscribe { request_id, .. } => {
                Some(request_id.as_str())
            }
            Request::Ack { .. } => None,
        };
        self.error(
            id,
            ErrorCode::RateLimited,
            "too many requests: slow down (see limits.requests_per_second)",
        )
    }

    /// Acts on a request that passed the rate limit.
    pub(super) async fn handle(&mut self, request: Request) -> Option<Stop> {
        match request {
            Request::Subscribe {
                request_id,
                channels,
                positions,
            } => self.subscribe(&request_id, channels, positions).await,
            Request::Unsubscribe {
                request_id,
                subscription,
                channels,
            } => {
                self.unsubscribe(&request_id, subscription.as_deref(), &channels);
                None
            }
            Request::Ack { .. } => None,
        }
    }

    /// Acks are not requests: no reply, unknown ids ignored. They spend their own token bucket
    /// (`limits.acks_per_second`), not the request one; a refused ack frame is an error reply
    /// without `requestId`, charged to the error budget like any other.
    fn on_ack(&mut self, message_ids: &[String]) -> Option<Stop> {
        if !self.ack_bucket.try_take(Instant::now()) {
            return self.error(
                None,
                ErrorCode::RateLimited,
                "too many ack frames: batch message ids (see limits.acks_per_second)",
            );
        }
        let max = self.node.settings.limits.max_ack_ids;
        if message_ids.len() > max {
            let msg = format!(
                "{} message ids in one ack; at most {max} are allowed (limits.max_ack_ids): split the ack",
                message_ids.len()
            );
            return self.error(None, ErrorCode::TooManyMessageIds, &msg);
        }
        if let Some(acks) = &self.acks {
            let n = acks.ack(message_ids.iter().map(String::as_str));
            metrics::acks(n as u64);
        }
        None
    }

    /// Sends an error reply and charges the error budget; over budget, the connection closes.
    pub(super) fn error(
        &mut self,
        request_id: Option<&str>,
        code: ErrorCode,
        message: &str,
    ) -> Option<Stop> {
        metrics::protocol_error(code.as_str());
        self.outbox
            .push(Outbound::Text(reply::error(request_id, code, message)));
        if self.errors.record(Instant::now()) {
            None
        } else {
            Some(Stop::Close(
                super::close::POLICY,
                "too many protocol errors",
                "error_budget",
            ))
        }
    }

    async fn subscribe(
        &mut self,
        request_id: &str,
        channels: Vec<String>,
        positions: HashMap<String, Position>,
    ) -> Option<Stop> {
        let limits = &self.node.settings.limits;
        if channels.len() > limits.max_channels_per_request {
            let msg = format!(
                "{} channels in one request; at most {} are allowed (limits.max_channels_per_request): split the request",
                channels.len(),
                limits.max_channels_per_request
            );
            return self.error(Some(request_id), ErrorCode::TooManyChannels, &msg);
        }
        let mut held: Vec<Held> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        let mut errors = Map::new();
        let mut seen = HashSet::new();
        for sent in &channels {
            match Channel::parse(sent) {
                Ok(channel) => {
                    let h = Held::new(sent, channel);
                    if seen.insert(h.identity.clone()) {
                        held.push(h);
                    }
                }
                Err(e) => {
                    if !failed.contains(sent) {
                        failed.push(sent.clone());
                    }
                    errors.insert(sent.clone(), json!({"code": ErrorCode::InvalidChannel.as_str(), "message": e.to_string()}));
                }
            }
        }
        let new = self
            .subs
            .new_identities(held.iter().map(|h| h.identity.as_str()));
        let max = limits.max_subscriptions_per_connection;
        if self.subs.channel_count() + new > max {
            let msg = format!(
                "this subscribe would hold {} channels on the connection; at most {max} are allowed (limits.max_subscriptions_per_connection): unsubscribe some first",
                self.subs.channel_count() + new
            );
            return self.error(Some(request_id), ErrorCode::TooManySubscriptions, &msg);
        }
        if !failed.is_empty() {
            metrics::protocol_error(ErrorCode::InvalidChannel.as_str());
        }
        if held.is_empty() {
            let mut extra = Map::new();
            if !errors.is_empty() {
                extra.insert("errors".into(), Value::Object(errors));
            }
            self.outbox.push(Outbound::Text(reply::subscribed(
                request_id,
                None,
                &[],
                &failed,
                extra,
            )));
            return None;
        }

        let subscription_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        // Streams this connection already receives are never replayed again: a resume of one
        // is answered `already_subscribed` and the channel is (or stays) live.
        let mut held_streams: HashSet<String> =
            self.subs.channels().map(|h| h.key.clone()).collect();
        let mut ignored: Vec<Arc<str>> = Vec::new();
        // Register for live delivery before reading positions or history: nothing published
        // after this point can be missed. A resuming channel's live pushes wait at its gate.
        // A channel the connection already holds moves to the new id in one step.
        let mut gated: Vec<(Held, Option<Arc<Gate>>)> = Vec::with_capacity(held.len());
        let mut interest: Vec<usize> = Vec::new();
        let mut moved: Vec<(usize, Arc<str>)> = Vec::new();
        for h in held {
            let sub = |gate: Option<Arc<Gate>>| Subscriber {
                conn: self.conn,
                subscription_id: subscription_id.clone(),
                channel: h.sent.clone(),
                chain_reference: h.chain_filter(),
                outbox: self.outbox.clone(),
                gate,
            };
            if let Some((_, old)) = self.subs.holder(&h.identity) {
                // Moved when the reply is sent, so pushes never carry an id not yet given out.
                moved.push((gated.len(), old.sent.clone()));
                if positions.contains_key(&*h.sent) {
                    ignored.push(h.sent.clone());
                }
                gated.push((h, None));
                continue;
            }
            let gate = if held_streams.insert(h.key.clone()) {
                self.gate_for(&h, &positions)
            } else {
                if positions.contains_key(&*h.sent) {
                    ignored.push(h.sent.clone());
                }
                None
            };
            self.node.hub.subscribe(&h.key, sub(gate.clone()));
            interest.push(gated.len());
            gated.push((h, gate));
        }
        let pending = PendingSubscribe {
            request_id: request_id.to_owned(),
            subscription_id,
            gated,
            interest,
            moved,
            positions,
            ignored,
            failed,
            errors,
            new,
        };
        if pending.interest.is_empty() || !self.node.broker.is_cluster() {
            let placed = vec![true; pending.interest.len()];
            return self.finish_subscribe(pending, placed).await;
        }
        // With a cluster broker, this node must receive the new keys' publications before the
        // reply: all keys at once, under one time limit, outside the session loop.
        let node = self.node.clone();
        let keys: Vec<String> = pending
            .interest
            .iter()
            .map(|&i| pending.gated[i].0.key.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + node.settings.limits.subscribe_timeout;
        self.interest = Some(tokio::spawn(async move {
            futures_util::future::join_all(
                keys.iter()
                    .map(|k| node.broker.add_interest_until(k, deadline)),
            )
            .await
        }));
        self.pending = Some(pending);
        None
    }

    /// Completes the pending subscribe once its cluster interest is registered (`placed[i]`
    /// for its i-th new channel), then the requests that waited behind it.
    pub(super) async fn on_interest(&mut self, placed: Vec<bool>) -> Option<Stop> {
        self.interest = None;
        let p = self.pending.take()?;
        if let Some(stop) = self.finish_subscribe(p, placed).await {
            return Some(stop);
        }
        while self.pending.is_none() {
            let Some(request) = self.deferred.pop_front() else {
                break;
            };
            if let Some(stop) = Box::pin(self.admit(request)).await {
                return Some(stop);
            }
        }
        None
    }

    async fn finish_subscribe(&mut self, p: PendingSubscribe, placed: Vec<bool>) -> Option<Stop> {
        let PendingSubscribe {
            request_id,
            subscription_id,
            mut gated,
            interest,
            moved,
            positions,
            ignored,
            mut failed,
            mut errors,
            mut new,
        } = p;
        for (i, old_sent) in moved {
            let (h, _) = &gated[i];
            let sub = Subscriber {
                conn: self.conn,
                subscription_id: subscription_id.clone(),
                channel: h.sent.clone(),
                chain_reference: h.chain_filter(),
                outbox: self.outbox.clone(),
                gate: None,
            };
            self.node.hub.resubscribe(&h.key, &old_sent, sub);
        }
        // Channels whose interest could not be registered in time are not subscribed.
        let mut late = vec![false; gated.len()];
        for (j, &i) in interest.iter().enumerate() {
            late[i] = placed.get(j) != Some(&true);
        }
        if late.iter().any(|l| *l) {
            let limit = self.node.settings.limits.subscribe_timeout;
            let mut kept = Vec::with_capacity(gated.len());
            for ((h, gate), late) in gated.into_iter().zip(late) {
                if !late {
                    kept.push((h, gate));
                    continue;
                }
                self.node
                    .hub
                    .unsubscribe(&h.key, self.conn, &subscription_id, &h.sent);
                self.node.broker.remove_interest(&h.key);
                new -= 1;
                metrics::protocol_error(ErrorCode::BrokerTimeout.as_str());
                errors.insert(
                    h.sent.to_string(),
                    json!({"code": ErrorCode::BrokerTimeout.as_str(), "message": format!(
                        "the cluster broker did not confirm this channel within {limit:?} (limits.subscribe_timeout): subscribe to it again later"
                    )}),
                );
                failed.push(h.sent.to_string());
            }
            gated = kept;
        }
        let mut extra = Map::new();
        if !errors.is_empty() {
            extra.insert("errors".into(), Value::Object(errors));
        }
        let succeeded: Vec<String> = gated.iter().map(|(h, _)| h.sent.to_string()).collect();
        if gated.is_empty() {
            self.outbox.push(Outbound::Text(reply::subscribed(
                &request_id,
                None,
                &succeeded,
                &failed,
                extra,
            )));
            return None;
        }
        let jobs = self
            .prepare_resume(&subscription_id, &gated, &positions, &mut extra)
            .await;
        if self.acks.is_some() {
            self.ignore_positions(&gated, &ignored, &mut extra);
        }
        let held: Vec<Held> = gated.into_iter().map(|(h, _)| h).collect();
        let m = metrics::get();
        let ids_before = self.subs.id_count();
        let selectors: Vec<(Namespace, Held)> = held
            .iter()
            .map(|h| (h.channel.namespace(), h.clone()))
            .collect();
        // Changes made before the snapshot below go to the subscriptions held before this one;
        // the snapshot tells this one the current status, once.
        self.take_queued_chain_events();
        self.subs.insert(subscription_id.clone(), held);
        m.subscriptions_active
            .increment(self.subs.id_count() as f64 - ids_before as f64);
        m.channels_active.increment(new as f64);
        self.outbox.push(Outbound::Text(reply::subscribed(
            &request_id,
            Some(&subscription_id),
            &succeeded,
            &failed,
            extra,
        )));
        self.send_up_after_subscribe(&selectors);
        self.replays.extend(jobs);
        None
    }

    /// Removes what a pending subscribe registered (the connection ended before it completed).
    pub(super) fn abandon_pending(&mut self) {
        let task = self.interest.take();
        let Some(p) = self.pending.take() else {
            return;
        };
        for (h, _) in &p.gated {
            self.node
                .hub
                .unsubscribe(&h.key, self.conn, &p.subscription_id, &h.sent);
        }
        // The interest is given back once the registration has counted it.
        let keys: Vec<String> = p
            .interest
            .iter()
            .map(|&i| p.gated[i].0.key.clone())
            .collect();
        let node = self.node.clone();
        tokio::spawn(async move {
            if let Some(task) = task {
                let _ = task.await;
            }
            for k in keys {
                node.broker.remove_interest(&k);
            }
        });
    }

    /// Adds `already_subscribed` to the reply's `recovery` for account channels whose
    /// positions were not used because the connection already receives their stream.
    fn ignore_positions(
        &self,
        held: &[(Held, Option<Arc<Gate>>)],
        ignored: &[Arc<str>],
        extra: &mut Map<String, Value>,
    ) {
        let mut entries = Vec::new();
        for (h, _) in held {
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

    /// The `up` notification right after a subscribe: the chains up now that concern it.
    fn send_up_after_subscribe(&self, held: &[(Namespace, Held)]) {
        let up = self.node.chains.up_chains();
        for ns in [Namespace::AccountActivity, Namespace::MarketData] {
            let selectors = held
                .iter()
                .filter(|(n, _)| *n == ns)
                .map(|(_, h)| h.channel.chain().clone())
                .collect();
            self.send_status(ns, &relevant(&selectors, up.iter()), true);
        }
    }

    fn unsubscribe(&mut self, request_id: &str, subscription: Option<&str>, channels: &[String]) {
        let removed = match subscription {
            Some(id) => self.subs.remove(id, channels),
            None => Vec::new(),
        };
        if let Some(id) = subscription {
            for h in &removed {
                self.node.hub.unsubscribe(&h.key, self.conn, id, &h.sent);
                self.node.broker.remove_interest(&h.key);
            }
        }
        let m = metrics::get();
        if !removed.is_empty() && subscription.is_some_and(|id| !self.subs.holds(id)) {
            m.subscriptions_active.decrement(1.0);
        }
        let gone = removed
            .iter()
            .filter(|h| !self.subs.holds_identity(&h.identity))
            .count();
        m.channels_active.decrement(gone as f64);
        // Unsubscribe always succeeds: the real client never subscribes new accounts if its
        // unsubscribe is refused. Echo what was asked for, or what was removed.
        let succeeded: Vec<String> = if channels.is_empty() {
            removed.iter().map(|h| h.sent.to_string()).collect()
        } else {
            channels.to_vec()
        };
        self.outbox
            .push(Outbound::Text(reply::unsubscribed(request_id, &succeeded)));
    }
}
