//! The body of `GET /v1/status`: its shape, and the chain rows with the reason an operator
//! reads.

use serde::Serialize;

use crate::broker::NodeSeen;
use crate::chains::{ChainView, Mode};

/// `GET /v1/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusReport {
    pub(super) node: NodeStatus,
    pub(super) chains: Vec<ChainRow>,
    pub(super) connections: Connections,
    pub(super) publications: Publications,
    pub(super) delivery: Delivery,
    pub(super) cluster: Cluster,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NodeStatus {
    /// The gateway's version.
    pub(super) version: &'static str,
    pub(super) uptime_seconds: u64,
    /// `ready`, or why not: `draining`, `cluster broker unavailable`, `history store unavailable`.
    pub(super) state: &'static str,
    pub(super) ready: bool,
    pub(super) draining: bool,
    /// The history store: `sqlite` or `postgres`, `up` or `down`.
    pub(super) store: Component,
    /// The cluster transport: `local` (one node) or `nats`, `up` or `down`.
    pub(super) broker: Component,
}

#[derive(Debug, Serialize)]
pub(super) struct Component {
    pub(super) kind: &'static str,
    pub(super) status: &'static str,
}

/// One chain: its status and, in words and as a code, why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChainRow {
    pub(super) chain_id: String,
    pub(super) status: &'static str,
    pub(super) mode: Mode,
    /// `fresh`, `stale`, `never_seen`, `operator_override`, `broker_down`, `store_down`.
    pub(super) reason_code: &'static str,
    pub(super) reason: String,
    pub(super) last_seen_ms_ago: Option<u64>,
    pub(super) stale_after_ms: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Connections {
    pub(super) open: u64,
    pub(super) subscriptions: u64,
    pub(super) channels: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Publications {
    pub(super) total: u64,
    pub(super) per_second: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Delivery {
    pub(super) delivered: u64,
    pub(super) acks: u64,
    /// Pushes sent in ack mode that await an ack.
    pub(super) acks_outstanding: u64,
    pub(super) redeliveries: u64,
    /// Connections closed with 4010 (ack timeout).
    pub(super) ack_timeouts: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Cluster {
    /// `single` or `nats`.
    pub(super) mode: &'static str,
    /// Nodes heard from in the last 10 s, this one first; `null` for a single node.
    pub(super) nodes: Option<Vec<NodeSeen>>,
}

/// A chain's status and the reason an operator reads, from the chain rule's own view: its
/// inputs decide which reason applies, in the rule's order (an operator's `down`, the store,
/// the broker, an operator's `up`, then the signs of life), so the page and `GET /v1/chains`
/// never disagree.
pub(super) fn chain_row(v: ChainView) -> ChainRow {
    let down = v.status != "up";
    let (reason_code, reason) = match v.mode {
        Mode::Down => ("operator_override", "forced down by an operator".to_owned()),
        _ if !v.inputs.store_writable => ("store_down", v.reason.clone()),
        _ if !v.inputs.broker_connected => (
            "broker_down",
            "the cluster broker is unreachable: every chain is reported down".to_owned(),
        ),
        Mode::Up => ("operator_override", "forced up by an operator".to_owned()),
        Mode::Auto => match v.last_seen_ms_ago {
            None => (
                "never_seen",
                "no heartbeat or publication seen yet".to_owned(),
            ),
            Some(ago) if !down => (
                "fresh",
                format!("fresh: last heartbeat or publication {} ago", human_ms(ago)),
            ),
            Some(ago) => (
                "stale",
                format!(
                    "stale since {} ago: no heartbeat or publication for {} (stale after {})",
                    human_ms(ago.saturating_sub(v.stale_after_ms)),
                    human_ms(ago),
                    human_ms(v.stale_after_ms)
                ),
            ),
        },
    };
    ChainRow {
        chain_id: v.chain_id,
        status: v.status,
        mode: v.mode,
        reason_code,
        reason,
        last_seen_ms_ago: v.last_seen_ms_ago,
        stale_after_ms: v.stale_after_ms,
    }
}

/// `1234` → `1.2 s`, `90000` → `1.5 min`, hours past an hour.
fn human_ms(ms: u64) -> String {
    let ms = ms as f64;
    if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms < 3_600_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else {
        format!("{:.1} h", ms / 3_600_000.0)
    }
}

pub(super) fn up_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

/// The store's kind from its URL (the URL itself may carry a password and is never shown).
pub(super) fn store_kind(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::Inputs;

    fn view(status: &'static str, mode: Mode, ago: Option<u64>) -> ChainView {
        ChainView {
            chain_id: "eip155:1".into(),
            status,
            mode,
            reason: String::new(),
            inputs: Inputs {
                fresh_sign_of_life: ago.is_some_and(|a| a < 60_000),
                store_writable: true,
                broker_connected: true,
            },
            stale_after_ms: 60_000,
            last_seen_ms_ago: ago,
        }
    }

    #[test]
    fn chain_reasons() {
        let r = chain_row(view("down", Mode::Down, Some(10)));
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            ("operator_override", "forced down by an operator")
        );
        let r = chain_row(view("up", Mode::Auto, Some(1_500)));
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            ("fresh", "fresh: last heartbeat or publication 1.5 s ago")
        );
        let r = chain_row(view("down", Mode::Auto, Some(90_000)));
        assert_eq!(r.reason_code, "stale");
        assert_eq!(
            r.reason,
            "stale since 30.0 s ago: no heartbeat or publication for 1.5 min (stale after 1.0 min)"
        );
        let r = chain_row(view("down", Mode::Auto, None));
        assert_eq!(r.reason_code, "never_seen");
        let mut cut = view("down", Mode::Auto, Some(10));
        cut.inputs.broker_connected = false;
        assert_eq!(chain_row(cut).reason_code, "broker_down");
        let mut locked = view("down", Mode::Up, Some(10));
        locked.inputs.store_writable = false;
        locked.reason = "history store not writable: database is locked".into();
        let r = chain_row(locked);
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            (
                "store_down",
                "history store not writable: database is locked"
            )
        );
    }
}
