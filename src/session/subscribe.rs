//! The subscribe request, in steps: check and parse the channels, register them in the hub,
//! wait for the cluster broker's interest (`waiting`), then resume, reply and hold them.
//!
//! Every channel is registered in the hub before positions or history are read, so nothing
//! published after the subscribe arrived is missed; a resuming channel is registered through
//! a closed [`Gate`]. A channel the connection already holds moves to the new subscription id
//! with the reply, so pushes never carry an id not given out yet.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::gate::Gate;
use super::subscriptions::Held;
use super::{Outbound, Session, Stop};
use crate::hub::{Recipient, Subscriber};
use crate::metrics;
use crate::protocol::{reply, Channel, ErrorCode, Position};

/// A subscribe registered in the hub, not replied to yet.
pub(super) struct PendingSubscribe {
    request_id: String,
    /// The id the reply gives out; the hub entries carry it already.
    pub(super) subscription_id: Arc<str>,
    /// Its channels, in request order.
    pub(super) joining: Vec<Joining>,
    positions: HashMap<String, Position>,
    /// Channels whose positions are ignored (`already_subscribed`).
    ignored: Vec<Arc<str>>,
    /// Channels refused, and why (the reply's `failed` and `errors`).
    failed: Vec<String>,
    errors: Map<String, Value>,
    /// Channels new to the connection (identities it did not hold).
    new: usize,
}

/// One channel of a pending subscribe.
pub(super) struct Joining {
    /// The channel.
    pub(super) held: Held,
    /// The gate it is registered through, when it resumes.
    pub(super) gate: Option<Arc<Gate>>,
    /// `Some(channel as sent then)` when the connection already holds it under another
    /// subscription id: it moves with the reply. `None`: new, it needs broker interest.
    moves_from: Option<Arc<str>>,
}

/// The channels of a subscribe request, parsed.
struct Parsed {
    /// Valid channels, each identity once.
    held: Vec<Held>,
    failed: Vec<String>,
    errors: Map<String, Value>,
}

impl Session {
    pub(super) async fn subscribe(
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
        let parsed = parse(&channels);
        let new = self
            .subs
            .new_identities(parsed.held.iter().map(|h| h.identity.as_str()));
        let max = limits.max_subscriptions_per_connection;
        if self.subs.channel_count() + new > max {
            let msg = format!(
                "this subscribe would hold {} channels on the connection; at most {max} are allowed (limits.max_subscriptions_per_connection): unsubscribe some first",
                self.subs.channel_count() + new
            );
            return self.error(Some(request_id), ErrorCode::TooManySubscriptions, &msg);
        }
        if !parsed.failed.is_empty() {
            metrics::protocol_error(ErrorCode::InvalidChannel.as_str());
        }
        if parsed.held.is_empty() {
            self.reply_subscribed(request_id, None, &[], &parsed.failed, parsed.errors);
            return None;
        }
        let pending = self.register(request_id, parsed, positions, new);
        self.wait_for_interest(pending).await
    }

    /// Registers every channel for live delivery (new ones in the hub now; held ones move
    /// with the reply).
    fn register(
        &mut self,
        request_id: &str,
        parsed: Parsed,
        positions: HashMap<String, Position>,
        new: usize,
    ) -> PendingSubscribe {
        let subscription_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        // Streams this connection already receives are never replayed again: a resume of one
        // is answered `already_subscribed` and the channel is (or stays) live.
        let mut held_streams: HashSet<String> =
            self.subs.channels().map(|h| h.key.clone()).collect();
        let mut ignored: Vec<Arc<str>> = Vec::new();
        let mut joining = Vec::with_capacity(parsed.held.len());
        for held in parsed.held {
            if let Some((_, old)) = self.subs.holder(&held.identity) {
                let moves_from = Some(old.sent.clone());
                if positions.contains_key(&*held.sent) {
                    ignored.push(held.sent.clone());
                }
                joining.push(Joining {
                    held,
                    gate: None,
                    moves_from,
                });
                continue;
            }
            let gate = if held_streams.insert(held.key.clone()) {
                self.gate_for(&held, &positions)
            } else {
                if positions.contains_key(&*held.sent) {
                    ignored.push(held.sent.clone());
                }
                None
            };
            let sub = self.subscriber(&subscription_id, &held, gate.as_ref());
            self.node.hub.subscribe(&held.key, sub);
            joining.push(Joining {
                held,
                gate,
                moves_from: None,
            });
        }
        PendingSubscribe {
            request_id: request_id.to_owned(),
            subscription_id,
            joining,
            positions,
            ignored,
            failed: parsed.failed,
            errors: parsed.errors,
            new,
        }
    }

    /// This connection's hub entry for `held`, delivered through `gate` when it resumes.
    fn subscriber(&self, id: &Arc<str>, held: &Held, gate: Option<&Arc<Gate>>) -> Subscriber {
        let recipient: Arc<dyn Recipient> = match gate {
            Some(gate) => gate.clone(),
            None => self.outbox.recipient(),
        };
        Subscriber {
            conn: self.conn,
            subscription_id: id.clone(),
            channel: held.sent.clone(),
            chain_filter: held.chain_filter(),
            recipient,
        }
    }

    /// Moves the held channels, drops the late ones, resumes, replies and holds the rest.
    pub(super) async fn finish_subscribe(
        &mut self,
        mut p: PendingSubscribe,
        registered: Vec<bool>,
    ) -> Option<Stop> {
        self.move_channels(&p);
        self.drop_late(&mut p, &registered);
        let succeeded: Vec<String> = p.joining.iter().map(|j| j.held.sent.to_string()).collect();
        if p.joining.is_empty() {
            self.reply_subscribed(&p.request_id, None, &succeeded, &p.failed, p.errors);
            return None;
        }
        let mut extra = Map::new();
        if !p.errors.is_empty() {
            extra.insert(
                "errors".into(),
                Value::Object(std::mem::take(&mut p.errors)),
            );
        }
        let jobs = self
            .prepare_resume(&p.subscription_id, &p.joining, &p.positions, &mut extra)
            .await;
        if self.acks.is_some() {
            self.ignore_positions(&p.joining, &p.ignored, &mut extra);
        }
        let held: Vec<Held> = p.joining.into_iter().map(|j| j.held).collect();
        let m = metrics::get();
        let ids_before = self.subs.id_count();
        let notify = held.clone();
        // Changes made before the snapshot below go to the subscriptions held before this one;
        // the snapshot tells this one the current status.
        self.take_queued_chain_events();
        self.subs.insert(p.subscription_id.clone(), held);
        m.subscriptions_active
            .increment(self.subs.id_count() as f64 - ids_before as f64);
        m.channels_active.increment(p.new as f64);
        self.outbox.push(Outbound::Text(reply::subscribed(
            &p.request_id,
            Some(&p.subscription_id),
            &succeeded,
            &p.failed,
            extra,
        )));
        self.send_up_after_subscribe(&notify);
        self.replays.extend(jobs);
        None
    }

    /// Moves the channels the connection already holds to the new subscription id.
    fn move_channels(&self, p: &PendingSubscribe) {
        for j in &p.joining {
            if let Some(old_sent) = &j.moves_from {
                let sub = self.subscriber(&p.subscription_id, &j.held, None);
                self.node.hub.resubscribe(&j.held.key, old_sent, sub);
            }
        }
    }

    /// Unregisters the new channels whose interest was not registered in time and reports
    /// them as failed.
    fn drop_late(&self, p: &mut PendingSubscribe, registered: &[bool]) {
        let mut nth_new = 0;
        let late: Vec<bool> = p
            .joining
            .iter()
            .map(|j| {
                if j.moves_from.is_some() {
                    return false;
                }
                nth_new += 1;
                registered.get(nth_new - 1) != Some(&true)
            })
            .collect();
        if !late.contains(&true) {
            return;
        }
        let limit = self.node.settings.limits.subscribe_timeout;
        let mut kept = Vec::with_capacity(p.joining.len());
        for (j, late) in std::mem::take(&mut p.joining).into_iter().zip(late) {
            if !late {
                kept.push(j);
                continue;
            }
            let h = &j.held;
            self.node
                .hub
                .unsubscribe(&h.key, self.conn, &p.subscription_id, &h.sent);
            self.node.broker.remove_interest(&h.key);
            p.new -= 1;
            metrics::protocol_error(ErrorCode::BrokerTimeout.as_str());
            p.errors.insert(
                h.sent.to_string(),
                json!({"code": ErrorCode::BrokerTimeout.as_str(), "message": format!(
                    "the cluster broker did not confirm this channel within {limit:?} (limits.subscribe_timeout): subscribe to it again later"
                )}),
            );
            p.failed.push(h.sent.to_string());
        }
        p.joining = kept;
    }

    fn reply_subscribed(
        &self,
        request_id: &str,
        subscription_id: Option<&str>,
        succeeded: &[String],
        failed: &[String],
        errors: Map<String, Value>,
    ) {
        let mut extra = Map::new();
        if !errors.is_empty() {
            extra.insert("errors".into(), Value::Object(errors));
        }
        self.outbox.push(Outbound::Text(reply::subscribed(
            request_id,
            subscription_id,
            succeeded,
            failed,
            extra,
        )));
    }
}

// === PendingSubscribe ===

impl PendingSubscribe {
    /// The hub keys of the channels new to the connection, in order: they need interest.
    pub(super) fn new_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.joining
            .iter()
            .filter(|j| j.moves_from.is_none())
            .map(|j| j.held.key.clone())
    }
}

/// Parses the requested channels: each valid identity once, each invalid channel once.
fn parse(channels: &[String]) -> Parsed {
    let mut held: Vec<Held> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut errors = Map::new();
    let mut seen = HashSet::new();
    for sent in channels {
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
                errors.insert(
                    sent.clone(),
                    json!({"code": ErrorCode::InvalidChannel.as_str(), "message": e.to_string()}),
                );
            }
        }
    }
    Parsed {
        held,
        failed,
        errors,
    }
}
