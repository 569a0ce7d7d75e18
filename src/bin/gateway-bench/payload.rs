//! What the generator sends and how it recognises it again: account addresses, channels, the
//! ~600-byte account-activity payload, and the stamp that carries a publication's step,
//! sequence number and send time through the gateway.
//!
//! The stamp is the payload's first field, `"bench":"<step>.<seq>.<sent_us>"`, so a client
//! finds it with one substring search instead of parsing each ~800-byte frame.

use std::sync::OnceLock;
use std::time::Instant;

/// The marker in front of the stamp inside a push frame.
const STAMP_KEY: &[u8] = br#""bench":""#;

/// The chain publications are sent on (a concrete chain under the wallets' `eip155:0` subscriptions).
pub const CHAIN: &str = "eip155:8453";

/// One stamp decoded from a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub step: usize,
    pub seq: u64,
    pub sent_us: u64,
}

/// Microseconds since the generator started: one monotonic clock for send and receive.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The EVM address of account `i` (lower-case, as the gateway sends it back).
pub fn address(i: u64) -> String {
    format!("0x{:040x}", 0xbe4c_0000_0000u64 + i)
}

/// What a wallet subscribes for account `i`: every EVM chain of that address.
pub fn subscribe_channel(i: u64) -> String {
    format!("account-activity.v1.eip155:0:{}", address(i))
}

/// What the publisher publishes to for account `i`: a concrete chain.
pub fn publish_channel(i: u64) -> String {
    format!("account-activity.v1.{CHAIN}:{}", address(i))
}

/// The Nchan channel id of account `i` (`/sub/<id>`, `/pub/<id>`): its address.
pub fn nchan_channel(i: u64) -> String {
    address(i)
}

/// Appends one `{"channel":…,"data":…}` publication for account `i` to `out`.
pub fn write_publication(out: &mut String, channel: &str, account: &str, stamp: Stamp) {
    out.push_str(r#"{"channel":""#);
    out.push_str(channel);
    out.push_str(r#"","data":"#);
    write_data(out, account, stamp);
    out.push('}');
}

/// Appends the ~600-byte account-activity payload (a publication's `data`) to `out`.
pub fn write_data(out: &mut String, account: &str, stamp: Stamp) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        concat!(
            r#"{{"bench":"{step}.{seq}.{sent}","address":"{account}","#,
            r#""tx":{{"id":"0x{seq:064x}","chain":"{chain}","status":"confirmed","timestamp":{ts},"#,
            r#""from":"0x7b07000000000000000000000000000000000001","to":"{account}"}},"#,
            r#""updates":[{{"asset":{{"fungible":true,"type":"{chain}/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913","unit":"USDC","decimals":6}},"#,
            r#""postBalance":{{"amount":"0x{bal:x}"}},"#,
            r#""transfers":[{{"from":"0x7b07000000000000000000000000000000000001","to":"{account}","amount":"0x2710"}}]}}]}}"#
        ),
        step = stamp.step,
        seq = stamp.seq,
        sent = stamp.sent_us,
        account = account,
        chain = CHAIN,
        ts = 1_760_099_871 + stamp.seq,
        bal = 50_000 + stamp.seq,
    );
}

/// Finds and decodes the stamp of a push frame; `None` for anything else.
pub fn parse_stamp(frame: &[u8]) -> Option<Stamp> {
    let at = find(frame, STAMP_KEY)? + STAMP_KEY.len();
    let rest = &frame[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    let mut parts = std::str::from_utf8(&rest[..end]).ok()?.split('.');
    let step = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some(Stamp { step, seq, sent_us })
}

/// The `messageId` of an ack-mode push, if it carries one.
pub fn parse_message_id(frame: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""messageId":""#;
    let at = find(frame, KEY)? + KEY.len();
    let rest = &frame[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// First occurrence of `needle` in `hay` (the needles are short; frames are ~1 KB).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == first) {
        let at = from + p;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_is_about_600_bytes_and_its_stamp_survives_the_frame() {
        let stamp = Stamp {
            step: 3,
            seq: 42,
            sent_us: 123_456,
        };
        let mut body = String::new();
        write_publication(&mut body, &publish_channel(7), &address(7), stamp);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let data = v["data"].to_string();
        assert!((550..700).contains(&data.len()), "{}", data.len());
        let frame = format!(
            r#"{{"event":"data","subscriptionId":"s","channel":"c","data":{data},"timestamp":1}}"#
        );
        assert_eq!(parse_stamp(frame.as_bytes()), Some(stamp));
        assert_eq!(parse_stamp(br#"{"event":"subscribed"}"#), None);
        assert_eq!(
            parse_message_id(br#"{"messageId":"e-1","x":1}"#),
            Some("e-1")
        );
    }
}
