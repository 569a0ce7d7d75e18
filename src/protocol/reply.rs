//! Server → client messages other than pushes: the session greeting, request replies,
//! errors and system notifications.
//!
//! Two traps of the real client shape these: a reply must never carry a `channel` field
//! (8.x/11.x would take it for a push), and every reply echoes the request's `requestId`.

use serde_json::{json, Map, Value};

use super::{now_ms, ErrorCode, Namespace};

/// `{"event":"session-created",…}`, sent right after the upgrade.
pub fn session_created(session_id: &str) -> String {
    json!({"event": "session-created", "timestamp": now_ms(), "data": {"sessionId": session_id}})
        .to_string()
}

/// The reply to a subscribe. `extra` carries optional fields (`errors`, `positions`, `recovery`).
pub fn subscribed(
    request_id: &str,
    subscription_id: Option<&str>,
    succeeded: &[String],
    failed: &[String],
    extra: Map<String, Value>,
) -> String {
    let mut data = Map::new();
    data.insert("requestId".into(), request_id.into());
    if let Some(id) = subscription_id {
        data.insert("subscriptionId".into(), id.into());
    }
    data.insert("succeeded".into(), succeeded.into());
    data.insert("failed".into(), failed.into());
    data.extend(extra);
    json!({"event": "subscribed", "timestamp": now_ms(), "data": data}).to_string()
}

/// The reply to an unsubscribe; it always succeeds.
pub fn unsubscribed(request_id: &str, succeeded: &[String]) -> String {
    json!({"event": "unsubscribed", "timestamp": now_ms(),
           "data": {"requestId": request_id, "succeeded": succeeded, "failed": []}})
    .to_string()
}

/// `{"event":"error","data":{"requestId"?,"code","message"}}`.
pub fn error(request_id: Option<&str>, code: ErrorCode, message: &str) -> String {
    let mut data = Map::new();
    if let Some(id) = request_id {
        data.insert("requestId".into(), id.into());
    }
    data.insert("code".into(), code.as_str().into());
    data.insert("message".into(), message.into());
    json!({"event": "error", "timestamp": now_ms(), "data": data}).to_string()
}

/// `{"event":"system-notification","channel":"system-notifications.v1.<ns>",…}`.
pub fn system_notification(namespace: Namespace, chain_ids: &[String], up: bool) -> String {
    json!({"event": "system-notification", "channel": namespace.system_channel(),
           "data": {"chainIds": chain_ids, "status": if up { "up" } else { "down" }},
           "timestamp": now_ms()})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
