//! Client requests on a session: parsing, the rate limits, the queue behind a waiting
//! subscribe, unsubscribe, ack, and the error replies (subscribe itself is in `subscribe`).

use std::time::Instant;

use super::waiting::Phase;
use super::{Outbound, Session, Stop};
use crate::metrics;
use crate::protocol::request::{self, Request};
use crate::protocol::{reply, ErrorCode};

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
        if let Phase::Subscribing(waiting) = &mut self.phase {
            if waiting.deferred.len() < self.node.settings.limits.request_burst as usize {
                waiting.deferred.push_back(request);
                return None;
            }
            return self.rate_limited(&request);
        }
        self.admit(request).await
    }

    /// Applies the rate limit, then the request.
    pub(super) async fn admit(&mut self, request: Request) -> Option<Stop> {
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
    async fn handle(&mut self, request: Request) -> Option<Stop> {
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
