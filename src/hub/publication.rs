//! A publication ready for fan-out: its payload is serialised once, and every recipient's
//! frame is that shared tail with the recipient's subscription id and channel spliced in
//! front (both are JSON-safe by construction, so nothing is re-serialised or escaped).

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{now_ms, Channel, Namespace, Position};

/// One publication, shared by every recipient through an `Arc`.
#[derive(Debug)]
pub struct Publication {
    /// Account activity or market data: decides which channel each recipient is sent.
    pub namespace: Namespace,
    /// Hub key: the account stream key, or the normalised market-data key.
    pub key: String,
    /// The concrete chain reference (account activity) used to filter concrete subscriptions.
    pub chain_reference: String,
    /// The canonical channel, sent to account-activity subscribers.
    pub channel: Arc<str>,
    /// Stream position and message id when the publication is durable.
    pub durable: Option<Durable>,
    /// `"data":<payload>,"timestamp":<ms>}`: the shared end of every frame. Text, so that a
    /// frame built from it is text too and needs no UTF-8 check per recipient.
    tail: Box<str>,
    /// When the publish API accepted it (delivery latency is measured from here).
    pub accepted_at: Instant,
}

/// The durable identity of a publication: the same on every redelivery, replay and restart.
#[derive(Debug, Clone)]
pub struct Durable {
    /// `<epoch>-<offset>` (see [`message_id`]): what an ack names.
    pub message_id: Arc<str>,
    /// Where the publication is in its stream.
    pub position: Position,
    /// `"messageId":"…","position":{…},`: spliced into frames for ack-mode connections.
    head: Box<str>,
}

/// Most bytes a push frame adds to its payload (defined with the wire format).
pub use crate::protocol::MAX_FRAME_OVERHEAD;

const PREFIX: &str = r#"{"event":"data","subscriptionId":""#;
const MID: &str = r#"","channel":""#;
const AFTER_CHANNEL: &str = r#"","#;
const REDELIVERED: &str = r#""redelivered":true,"#;

// === Publication ===

impl Publication {
    /// A durable account-activity publication from its stored parts (a commit, a replay, a
    /// cluster peer's copy). `None` when the channel does not parse, which a channel the
    /// publish API accepted never does.
    pub fn durable(channel: &str, payload: &str, position: &Position, at: Instant) -> Option<Self> {
        let Ok(Channel::AccountActivity(a)) = Channel::parse(channel) else {
            tracing::error!(%channel, "Stored publication has an invalid channel; skipped.");
            return None;
        };
        Some(Self::new(
            Namespace::AccountActivity,
            a.stream_key(),
            a.account.chain.reference().to_owned(),
            channel.into(),
            payload,
            Some(Durable::new(position.clone())),
            at,
        ))
    }

    /// Builds a publication from its payload's JSON text (already validated as an object).
    pub fn new(
        namespace: Namespace,
        key: String,
        chain_reference: String,
        channel: Arc<str>,
        payload_json: &str,
        durable: Option<Durable>,
        accepted_at: Instant,
    ) -> Self {
        let mut tail = String::with_capacity(payload_json.len() + 32);
        tail.push_str(r#""data":"#);
        tail.push_str(payload_json);
        tail.push_str(r#","timestamp":"#);
        tail.push_str(itoa::Buffer::new().format(now_ms()));
        tail.push('}');
        Self {
            namespace,
            key,
            chain_reference,
            channel,
            durable,
            tail: tail.into_boxed_str(),
            accepted_at,
        }
    }

    /// The frame's length for `sub_id` and `channel`, used to account for queued bytes.
    pub fn frame_len(&self, sub_id: &str, channel: &str, ack: bool) -> usize {
        let head = match (&self.durable, ack) {
            (Some(d), true) => d.head.len() + REDELIVERED.len(),
            _ => 0,
        };
        PREFIX.len()
            + sub_id.len()
            + MID.len()
            + channel.len()
            + AFTER_CHANNEL.len()
            + head
            + self.tail.len()
    }

    /// Writes one recipient's frame. `ack` adds `messageId` and `position` (if durable).
    pub fn frame(&self, sub_id: &str, channel: &str, ack: bool, redelivered: bool) -> String {
        let mut buf = String::with_capacity(self.frame_len(sub_id, channel, ack));
        buf.push_str(PREFIX);
        buf.push_str(sub_id);
        buf.push_str(MID);
        buf.push_str(channel);
        buf.push_str(AFTER_CHANNEL);
        if let (Some(d), true) = (&self.durable, ack) {
            buf.push_str(&d.head);
            if redelivered {
                buf.push_str(REDELIVERED);
            }
        }
        buf.push_str(&self.tail);
        buf
    }
}

// === Durable ===

impl Durable {
    pub fn new(position: Position) -> Self {
        let mut offset = itoa::Buffer::new();
        let offset = offset.format(position.offset);
        let message_id = message_id(&position);
        let head = [
            r#""messageId":""#,
            &message_id,
            r#"","position":{"epoch":""#,
            &position.epoch,
            r#"","offset":"#,
            offset,
            "},",
        ]
        .concat();
        Self {
            message_id: message_id.into(),
            position,
            head: head.into_boxed_str(),
        }
    }
}

/// The message id of the publication at `position`: `<epoch>-<offset>`. Epochs are random
/// per stream, so the id is unique across streams and stable across restarts.
pub fn message_id(position: &Position) -> String {
    let mut offset = itoa::Buffer::new();
    let offset = offset.format(position.offset);
    [&position.epoch, "-", offset].concat()
}

/// A stored account-activity publication at `offset` of epoch `e`, for the tests of the
/// layers that queue and track publications.
#[cfg(test)]
pub(crate) fn stored_at(offset: u64) -> Arc<Publication> {
    Arc::new(Publication::new(
        Namespace::AccountActivity,
        "k".into(),
        "1".into(),
        "c".into(),
        "{}",
        Some(Durable::new(Position {
            epoch: "e".into(),
            offset,
        })),
        Instant::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_frame_fits_the_declared_overhead() {
        let payload = r#"{"n":1}"#;
        let channel = "x".repeat(crate::protocol::channel::MAX_CHANNEL_LEN);
        let p = Publication::new(
            Namespace::AccountActivity,
            "k".into(),
            "8453".into(),
            channel.as_str().into(),
            payload,
            Some(Durable::new(Position {
                epoch: "ffffffffffffffff".into(),
                offset: (1 << 53) - 1,
            })),
            Instant::now(),
        );
        let sub_id = uuid::Uuid::new_v4().to_string();
        let frame = p.frame(&sub_id, &channel, true, true);
        assert!(
            frame.len() <= payload.len() + MAX_FRAME_OVERHEAD,
            "{} bytes of envelope",
            frame.len() - payload.len()
        );
    }

    #[test]
    fn frames_splice_id_and_channel_into_valid_json() {
        let p = Publication::new(
            Namespace::AccountActivity,
            "k".into(),
            "8453".into(),
            "account-activity.v1.eip155:8453:0xabc".into(),
            r#"{"address":"0xabc","n":1}"#,
            Some(Durable::new(Position {
                epoch: "e1".into(),
                offset: 5,
            })),
            Instant::now(),
        );
        let plain = p.frame("s1", &p.channel, false, false);
        let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(v["event"], "data");
        assert_eq!(v["subscriptionId"], "s1");
        assert_eq!(v["channel"], "account-activity.v1.eip155:8453:0xabc");
        assert_eq!(v["data"], serde_json::json!({"address":"0xabc","n":1}));
        assert!(v.get("messageId").is_none());
        assert_eq!(plain.len(), p.frame_len("s1", &p.channel, false));

        let acked = p.frame("s2", "c", true, true);
        let v: serde_json::Value = serde_json::from_str(&acked).unwrap();
        assert_eq!(v["messageId"], "e1-5");
        assert_eq!(v["position"], serde_json::json!({"epoch":"e1","offset":5}));
        assert_eq!(v["redelivered"], true);
        assert!(acked.len() <= p.frame_len("s2", "c", true));
    }
}
