//! The rule that decides whether a chain is `up`, and the view that explains it.
//!
//! A chain is `up` only while this node can deliver its activity: a fresh sign of life (a
//! committed publication or a heartbeat, within `stale_after`) or an operator's `up`, and no
//! operator `down`, AND the history store is writable, AND (in a cluster) the broker is
//! connected.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::caip::ChainId;
use crate::protocol::Mode;

/// The node-wide inputs of the rule.
#[derive(Debug, Clone, Default)]
pub struct NodeInputs {
    /// Why the history store does not take writes; `None` while it does.
    pub store_failure: Option<String>,
    /// False while the cluster broker is unreachable (always true on a single node).
    pub broker_connected: bool,
}

/// One chain's state.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The chain.
    pub chain: ChainId,
    /// The operator's mode.
    pub mode: Mode,
    /// The status last announced to sessions.
    pub up: bool,
    /// The last sign of life, from any node.
    pub last_seen: Option<Instant>,
    /// How long a sign of life stays fresh.
    pub stale_after: Duration,
}

impl Entry {
    /// A chain with no sign of life yet, in `auto`.
    pub fn new(chain: ChainId, stale_after: Duration) -> Entry {
        Entry {
            chain,
            mode: Mode::Auto,
            up: false,
            last_seen: None,
            stale_after,
        }
    }

    /// True while the last sign of life is within `stale_after`.
    pub fn fresh(&self, now: Instant) -> bool {
        self.last_seen
            .is_some_and(|t| now.duration_since(t) < self.stale_after)
    }

    /// The rule.
    pub fn should_be_up(&self, node: &NodeInputs, now: Instant) -> bool {
        let alive = match self.mode {
            Mode::Up => true,
            Mode::Down => false,
            Mode::Auto => self.fresh(now),
        };
        alive && node.store_failure.is_none() && node.broker_connected
    }
}

/// The rule's inputs for one chain, as `GET /v1/chains` shows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Inputs {
    /// A heartbeat or committed publication arrived within `stale_after`.
    pub fresh_sign_of_life: bool,
    /// The history store takes writes.
    pub store_writable: bool,
    /// The cluster broker is connected (always true on a single node).
    pub broker_connected: bool,
}

/// What `GET /v1/chains` shows of one chain.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainView {
    /// CAIP-2 id.
    pub chain_id: String,
    /// `up` or `down`, as last told to wallets.
    pub status: &'static str,
    /// The operator's mode.
    pub mode: Mode,
    /// Why the chain is up or down, in words.
    pub reason: String,
    /// The inputs of the rule.
    pub inputs: Inputs,
    /// This chain's `stale_after`.
    pub stale_after_ms: u64,
    /// How long ago the last sign of life arrived.
    pub last_seen_ms_ago: Option<u64>,
}

/// Describes `e` under `node`'s inputs.
pub fn view_of(e: &Entry, node: &NodeInputs, now: Instant) -> ChainView {
    let ago = e.last_seen.map(|t| now.duration_since(t));
    let reason = match (&node.store_failure, e.mode, ago) {
        (_, Mode::Down, _) => "forced down by an operator".to_owned(),
        (Some(why), _, _) => format!("history store not writable: {why}"),
        _ if !node.broker_connected => "cluster broker unreachable".to_owned(),
        (_, Mode::Up, _) => "forced up by an operator".to_owned(),
        (_, Mode::Auto, None) => "no heartbeat or publication seen yet".to_owned(),
        (_, Mode::Auto, Some(a)) if a < e.stale_after => {
            format!("last heartbeat or publication {}ms ago", a.as_millis())
        }
        (_, Mode::Auto, Some(a)) => format!(
            "no heartbeat or publication for {}ms (stale after {}ms)",
            a.as_millis(),
            e.stale_after.as_millis()
        ),
    };
    ChainView {
        chain_id: e.chain.to_string(),
        status: if e.up { "up" } else { "down" },
        mode: e.mode,
        reason,
        inputs: Inputs {
            fresh_sign_of_life: e.fresh(now),
            store_writable: node.store_failure.is_none(),
            broker_connected: node.broker_connected,
        },
        stale_after_ms: e.stale_after.as_millis() as u64,
        last_seen_ms_ago: ago.map(|a| a.as_millis() as u64),
    }
}
