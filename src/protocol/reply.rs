//! Server → client messages other than pushes: the session greeting, request replies,
//! errors and system notifications.
//!
//! Two traps of the real client shape these: a reply must never carry a `channel` field
//! (8.x/11.x would take it for a push), and every reply echoes the request's `requestId`.
//!
//! Each message is a typed struct written straight to its buffer (one allocation, no
//! intermediate `Value` tree). The keys come out in the order `serde_json::Map` keeps them
//! (sorted: the crate's `preserve_order` feature is off), the order these messages have always
//! had on the wire; the structs' field order is that order.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{now_ms, ErrorCode, Namespace};

/// A reply's top level: `{"data":…,"event":…,"timestamp":…}`.
#[derive(Serialize)]
struct Envelope<'a, D> {
    /// The event's payload.
    data: D,
    /// The event's name (`session-created`, `subscribed`, …).
    event: &'a str,
    /// When the reply was built, in milliseconds since the Unix epoch.
    timestamp: i64,
}

/// `session-created`'s data.
#[derive(Serialize)]
struct SessionData<'a> {
    /// The session's id.
    #[serde(rename = "sessionId")]
    session_id: &'a str,
}

/// `subscribed`'s data: the fixed fields merged, in key order, with the optional ones.
struct SubscribedData<'a> {
    /// The request's id, echoed.
    request_id: &'a str,
    /// The new subscription's id; absent when nothing was subscribed.
    subscription_id: Option<&'a str>,
    /// The channels subscribed, as sent.
    succeeded: &'a [String],
    /// The channels refused, as sent.
    failed: &'a [String],
    /// Optional fields (`errors`, `positions`, `recovery`); a key here replaces a fixed one.
    extra: &'a Map<String, Value>,
}

/// A value of one of `subscribed`'s fixed fields.
#[derive(Serialize)]
#[serde(untagged)]
enum Fixed<'a> {
    Str(&'a str),
    List(&'a [String]),
}

impl Serialize for SubscribedData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Sorted by key, like `extra`, so one merge pass gives the whole map in order.
        let fixed = [
            Some(("failed", Fixed::List(self.failed))),
            Some(("requestId", Fixed::Str(self.request_id))),
            self.subscription_id
                .map(|id| ("subscriptionId", Fixed::Str(id))),
            Some(("succeeded", Fixed::List(self.succeeded))),
        ];
        let mut map = serializer.serialize_map(None)?;
        let mut extra = self.extra.iter().peekable();
        for (key, value) in fixed.iter().flatten() {
            while let Some((k, v)) = extra.next_if(|(k, _)| k.as_str() < *key) {
                map.serialize_entry(k, v)?;
            }
            match extra.next_if(|(k, _)| k.as_str() == *key) {
                Some((k, v)) => map.serialize_entry(k, v)?,
                None => map.serialize_entry(key, value)?,
            }
        }
        for (k, v) in extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `unsubscribed`'s data.
#[derive(Serialize)]
struct UnsubscribedData<'a> {
    /// Always empty: an unsubscribe does not fail.
    failed: &'a [String],
    /// The request's id, echoed.
    #[serde(rename = "requestId")]
    request_id: &'a str,
    /// The channels unsubscribed.
    succeeded: &'a [String],
}

/// `error`'s data.
#[derive(Serialize)]
struct ErrorData<'a> {
    /// The error's code.
    code: &'a str,
    /// What went wrong, for a person.
    message: &'a str,
    /// The failed request's id, when the error answers one.
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// `system-notification`: it carries a `channel`, so its top level has its own order.
#[derive(Serialize)]
struct Notification<'a> {
    /// `system-notifications.v1.<namespace>`.
    channel: &'a str,
    /// The chains and their status.
    data: NotificationData<'a>,
    /// Always `system-notification`.
    event: &'a str,
    /// When the notification was built, in milliseconds since the Unix epoch.
    timestamp: i64,
}

/// `system-notification`'s data.
#[derive(Serialize)]
struct NotificationData<'a> {
    /// The chains whose status this is.
    #[serde(rename = "chainIds")]
    chain_ids: &'a [String],
    /// `up` or `down`.
    status: &'a str,
}

/// Writes `message` as JSON into a buffer of `capacity` bytes (grown if too small).
fn render<T: Serialize>(message: &T, capacity: usize) -> String {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, message).expect("a reply serialises to memory");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// `{"event":"session-created",…}`, sent right after the upgrade.
pub fn session_created(session_id: &str) -> String {
    let msg = Envelope {
        data: SessionData { session_id },
        event: "session-created",
        timestamp: now_ms(),
    };
    render(&msg, 96 + session_id.len())
}

/// The reply to a subscribe. `extra` carries optional fields (`errors`, `positions`, `recovery`).
pub fn subscribed(
    request_id: &str,
    subscription_id: Option<&str>,
    succeeded: &[String],
    failed: &[String],
    extra: Map<String, Value>,
) -> String {
    let channels: usize = succeeded.iter().chain(failed).map(|c| c.len() + 3).sum();
    let capacity = 160 + request_id.len() + channels + if extra.is_empty() { 0 } else { 256 };
    let msg = Envelope {
        data: SubscribedData {
            request_id,
            subscription_id,
            succeeded,
            failed,
            extra: &extra,
        },
        event: "subscribed",
        timestamp: now_ms(),
    };
    render(&msg, capacity)
}

/// The reply to an unsubscribe; it always succeeds.
pub fn unsubscribed(request_id: &str, succeeded: &[String]) -> String {
    let channels: usize = succeeded.iter().map(|c| c.len() + 3).sum();
    let msg = Envelope {
        data: UnsubscribedData {
            failed: &[],
            request_id,
            succeeded,
        },
        event: "unsubscribed",
        timestamp: now_ms(),
    };
    render(&msg, 112 + request_id.len() + channels)
}

/// `{"event":"error","data":{"requestId"?,"code","message"}}`.
pub fn error(request_id: Option<&str>, code: ErrorCode, message: &str) -> String {
    let msg = Envelope {
        data: ErrorData {
            code: code.as_str(),
            message,
            request_id,
        },
        event: "error",
        timestamp: now_ms(),
    };
    render(&msg, 112 + message.len() + request_id.map_or(0, str::len))
}

/// `{"event":"system-notification","channel":"system-notifications.v1.<ns>",…}`.
pub fn system_notification(namespace: Namespace, chain_ids: &[String], up: bool) -> String {
    let channel = namespace.system_channel();
    let chains: usize = chain_ids.iter().map(|c| c.len() + 3).sum();
    let msg = Notification {
        channel,
        data: NotificationData {
            chain_ids,
            status: if up { "up" } else { "down" },
        },
        event: "system-notification",
        timestamp: now_ms(),
    };
    render(&msg, 128 + channel.len() + chains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The reply's `timestamp`, which the expected bytes then splice in.
    fn timestamp(s: &str) -> i64 {
        let v: Value = serde_json::from_str(s).unwrap();
        v["timestamp"].as_i64().unwrap()
    }

    #[test]
    fn replies_never_carry_a_channel() {
        let s = subscribed("r", Some("s1"), &["a".into()], &[], Map::new());
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["data"]["requestId"], "r");
        assert_eq!(v["data"]["subscriptionId"], "s1");
        assert!(v.get("channel").is_none() && v["data"].get("channel").is_none());
        let v: Value = serde_json::from_str(&unsubscribed("r", &[])).unwrap();
        assert_eq!(v["data"]["failed"], json!([]));
        let v: Value =
            serde_json::from_str(&error(Some("r"), ErrorCode::RateLimited, "slow down")).unwrap();
        assert_eq!(
            v["data"],
            json!({"requestId": "r", "code": "rate_limited", "message": "slow down"})
        );
    }

    #[test]
    fn session_created_bytes() {
        let s = session_created("5f0c");
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"sessionId":"5f0c"}},"event":"session-created","timestamp":{t}}}"#
            )
        );
    }

    #[test]
    fn subscribed_bytes_without_extra() {
        let s = subscribed(
            "r1",
            Some("sub-1"),
            &["a.v1.x".into(), "b\"q".into()],
            &["bad".into()],
            Map::new(),
        );
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"failed":["bad"],"requestId":"r1","subscriptionId":"sub-1","succeeded":["a.v1.x","b\"q"]}},"event":"subscribed","timestamp":{t}}}"#
            )
        );
        let s = subscribed("r2", None, &[], &[], Map::new());
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"failed":[],"requestId":"r2","succeeded":[]}},"event":"subscribed","timestamp":{t}}}"#
            )
        );
    }

    #[test]
    fn subscribed_merges_extra_in_key_order() {
        let mut extra = Map::new();
        extra.insert("recovery".into(), json!({"z": 1, "a": [2]}));
        extra.insert("errors".into(), json!({"bad": {"code": "invalid_channel"}}));
        extra.insert("positions".into(), json!({}));
        extra.insert("zz".into(), json!(null));
        let s = subscribed("r", Some("s"), &["c".into()], &["bad".into()], extra);
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"errors":{{"bad":{{"code":"invalid_channel"}}}},"failed":["bad"],"positions":{{}},"recovery":{{"a":[2],"z":1}},"requestId":"r","subscriptionId":"s","succeeded":["c"],"zz":null}},"event":"subscribed","timestamp":{t}}}"#
            )
        );
        // A key of `extra` replaces the fixed field of the same name.
        let mut extra = Map::new();
        extra.insert("failed".into(), json!(["x"]));
        let s = subscribed("r", None, &[], &[], extra);
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"failed":["x"],"requestId":"r","succeeded":[]}},"event":"subscribed","timestamp":{t}}}"#
            )
        );
    }

    #[test]
    fn other_replies_bytes() {
        let s = unsubscribed("r", &["a".into()]);
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"failed":[],"requestId":"r","succeeded":["a"]}},"event":"unsubscribed","timestamp":{t}}}"#
            )
        );
        let s = error(None, ErrorCode::RateLimited, "slow \"down\"");
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"code":"rate_limited","message":"slow \"down\""}},"event":"error","timestamp":{t}}}"#
            )
        );
        let s = error(Some("q"), ErrorCode::RateLimited, "m");
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"data":{{"code":"rate_limited","message":"m","requestId":"q"}},"event":"error","timestamp":{t}}}"#
            )
        );
        let s = system_notification(Namespace::AccountActivity, &["eip155:1".into()], false);
        let t = timestamp(&s);
        assert_eq!(
            s,
            format!(
                r#"{{"channel":"system-notifications.v1.account-activity.v1","data":{{"chainIds":["eip155:1"],"status":"down"}},"event":"system-notification","timestamp":{t}}}"#
            )
        );
    }
}
