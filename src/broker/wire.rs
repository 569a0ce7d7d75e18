//! What travels between nodes: publications (with their stream position) and chain events.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A publication on the broker; `data` is carried as raw JSON and never re-parsed.
#[derive(Debug, Serialize, Deserialize)]
pub struct WirePublication<'a> {
    /// `a`: account activity, `m`: market data.
    pub ns: Cow<'a, str>,
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// A chain event shared by every node: a sign of life, an operator mode.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ChainMessage {
    pub chain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::chains::Mode>,
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
    pub mode: crate::chains::Mode,
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
        let w = WirePublication {
            ns: "a".into(),
            channel: "c".into(),
            epoch: Some("e".into()),
            offset: Some(7),
            data: &data,
        };
        let text = serde_json::to_string(&w).unwrap();
        let back: WirePublication = serde_json::from_str(&text).unwrap();
        assert_eq!((back.offset, back.data.get()), (Some(7), r#"{"a":[1,2]}"#));
        assert_eq!(key_token("x"), key_token("x"));
        assert_ne!(key_token("x"), key_token("y"));
        assert_eq!(key_token("x").len(), 16);
    }
}
