//! What travels between nodes: publications (with their stream position) and chain events,
//! and the subjects they travel on.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::{Mode, Position};

/// A publication on the broker; `data` is carried as raw JSON and never re-parsed.
#[derive(Debug, Serialize, Deserialize)]
pub struct WirePublication<'a> {
    /// `a`: account activity (durable, with `epoch` and `offset`), `m`: market data.
    pub ns: Cow<'a, str>,
    /// The canonical channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// The stream's epoch, for account activity.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Cow<'a, str>>,
    /// The offset in the stream, for account activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The payload, as published.
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl<'a> WirePublication<'a> {
    /// Account activity at `position`, or market data without one.
    pub fn new(channel: &'a str, position: Option<&'a Position>, data: &'a RawValue) -> Self {
        WirePublication {
            ns: if position.is_some() { "a" } else { "m" }.into(),
            channel: channel.into(),
            epoch: position.map(|p| p.epoch.as_str().into()),
            offset: position.map(|p| p.offset),
            data,
        }
    }
}

/// The subject of hub key `key`'s publications.
pub fn publication_subject(prefix: &str, key: &str) -> String {
    format!("{prefix}.p.{}", key_token(key))
}

/// The subject of chain events.
pub fn chains_subject(prefix: &str) -> String {
    format!("{prefix}.chains")
}

/// The subject a starting node asks the others' view of the chains on.
pub fn chains_view_subject(prefix: &str) -> String {
    format!("{prefix}.chains.view")
}

/// The subject nodes announce themselves on.
pub fn nodes_subject(prefix: &str) -> String {
    format!("{prefix}.nodes")
}

/// A chain event shared by every node: a sign of life, an operator mode.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ChainMessage {
    /// CAIP-2 id.
    pub chain: String,
    /// An operator's mode; `None`: a sign of life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// A node's view of every chain, sent to a starting node that asks for it.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ChainSnapshot {
    /// Every chain the answering node knows.
    pub chains: Vec<ChainSeen>,
}

/// One chain in a [`ChainSnapshot`].
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ChainSeen {
    /// CAIP-2 id.
    pub chain: String,
    /// The operator's mode there.
    pub mode: Mode,
    /// How long ago its last sign of life arrived there, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ms_ago: Option<u64>,
}

/// The broker subject of a hub key: a stable 64-bit FNV-1a hash, so that any key (with its
/// dots and slashes) maps to one valid subject token, the same on every node.
pub fn key_token(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_raw_data() {
        let data = RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap();
        let position = Position {
            epoch: "e".into(),
            offset: 7,
        };
        let w = WirePublication::new("c", Some(&position), &data);
        let text = serde_json::to_string(&w).unwrap();
        let back: WirePublication = serde_json::from_str(&text).unwrap();
        assert_eq!((back.offset, back.data.get()), (Some(7), r#"{"a":[1,2]}"#));
        assert_eq!((back.ns.as_ref(), back.epoch.as_deref()), ("a", Some("e")));
        assert_eq!(key_token("x"), key_token("x"));
        assert_ne!(key_token("x"), key_token("y"));
        assert_eq!(key_token("x").len(), 16);
    }
}
