//! One batch of the consumer: each message classified (publication, heartbeat, malformed),
//! the publications committed in one call, and every message acknowledged after its fate is
//! decided: ack after commit, term for malformed, nak when the history refused the batch.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use serde_json::value::RawValue;

use super::consumer::{ack, Consumer, Fetched};
use super::subject::Subject;
use crate::ingest::{self, validate::validate_parts, PublishError, Validated};
use crate::metrics::ingest_messages as counted;
use crate::protocol::caip::ChainId;
use crate::protocol::ErrorCode;

/// How long a redelivery is delayed after the history store refused a batch.
const UNAVAILABLE_DELAY: Duration = Duration::from_secs(1);

/// What one message turned out to be.
enum Kind {
    /// A valid account-activity publication.
    Publication(Validated),
    /// A chain's sign of life.
    Heartbeat(ChainId),
    /// Not ingestible; terminated with this code and reason.
    Malformed { code: ErrorCode, reason: String },
}

impl Consumer {
    /// Validates, commits and acknowledges the pending batch.
    pub(super) async fn process(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let Some(last) = pending.last().map(|h| h.seq) else {
            return;
        };
        let mut valid = Vec::with_capacity(pending.len());
        let mut valid_msgs = Vec::with_capacity(pending.len());
        for h in pending {
            match self.classify(&h) {
                Kind::Publication(v) => {
                    valid.push(v);
                    valid_msgs.push(h.msg);
                }
                Kind::Heartbeat(chain) => {
                    match self.node.chains.alive(&chain) {
                        Ok(()) => counted("accepted", 1),
                        Err(reason) => {
                            tracing::debug!(subject = %h.msg.subject, %reason, "JetStream heartbeat refused.");
                            counted("malformed", 1);
                        }
                    }
                    ack(&h.msg, AckKind::Ack).await;
                }
                Kind::Malformed { code, reason } => {
                    tracing::warn!(subject = %h.msg.subject, seq = h.seq, code = code.as_str(), %reason, "Malformed JetStream message terminated.");
                    counted("malformed", 1);
                    ack(&h.msg, AckKind::Term).await;
                }
            }
        }
        if !valid.is_empty() {
            match ingest::publish(&self.node, valid).await {
                Ok(outcomes) => {
                    let duplicates = outcomes.iter().filter(|o| o.duplicate).count();
                    counted("duplicate", duplicates as u64);
                    counted("accepted", (outcomes.len() - duplicates) as u64);
                    for msg in &valid_msgs {
                        ack(msg, AckKind::Ack).await;
                    }
                }
                Err(PublishError::Unavailable(error)) => {
                    tracing::warn!(%error, messages = valid_msgs.len(), "History unavailable; JetStream messages will be redelivered.");
                    counted("retried", valid_msgs.len() as u64);
                    for msg in &valid_msgs {
                        ack(msg, AckKind::Nak(Some(UNAVAILABLE_DELAY))).await;
                    }
                    self.last_done = None;
                    self.pause(UNAVAILABLE_DELAY).await;
                    return;
                }
            }
        }
        self.last_done = Some(last);
    }

    /// Turns a message into the publication the publish API would have accepted.
    fn classify(&self, h: &Fetched) -> Kind {
        let malformed = |code: ErrorCode, reason: String| Kind::Malformed { code, reason };
        let channel = match Subject::parse(&self.config.subject_prefix, h.msg.subject.as_str()) {
            Ok(Subject::Heartbeat(chain)) => return Kind::Heartbeat(chain),
            Ok(Subject::Activity { channel }) => channel,
            Err(reason) => return malformed(ErrorCode::InvalidSubject, reason),
        };
        let data: &RawValue = match serde_json::from_slice(&h.msg.payload) {
            Ok(v) => v,
            Err(e) => {
                return malformed(
                    ErrorCode::InvalidJson,
                    format!("the body is not JSON ({e})"),
                )
            }
        };
        let id = h
            .msg
            .headers
            .as_ref()
            .and_then(|hs| hs.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("js:{}:{}", self.config.stream, h.seq));
        let max = self.node.settings.publish.max_publication_bytes;
        if data.get().len() > max {
            return malformed(
                ErrorCode::PublicationTooLarge,
                format!(
                    "the body is {} bytes, more than publish.max_publication_bytes ({max})",
                    data.get().len()
                ),
            );
        }
        match validate_parts(channel, Some(id), data) {
            Ok(v) => Kind::Publication(v),
            Err(e) => malformed(e.code, e.message),
        }
    }
}
