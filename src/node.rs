//! The node: everything one gateway process owns, shared by the HTTP handlers, the sessions
//! and the background loops behind one `Arc`, and the [`Delivery`] it registers with the
//! broker so that what the broker receives reaches the hub and the chain registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::broker::{self, Broker, ChainSeen};
use crate::chains::{Chains, Registry};
use crate::config::Settings;
use crate::history::History;
use crate::hub::{ConnId, Hub, Publication};
use crate::protocol::caip::ChainId;
use crate::protocol::Mode;
use crate::shutdown::Shutdown;

/// One gateway process's shared state.
pub struct Node {
    /// The settings it started with.
    pub settings: Arc<Settings>,
    /// This node's subscribers and the fan-out to them.
    pub hub: Arc<Hub>,
    /// The durable history of account activity, and chain state.
    pub history: History,
    /// The transport to the other nodes (or to the hub alone on a single node).
    pub broker: Arc<Broker>,
    /// Chain health: the one owner of every chain's `up`/`down`.
    pub chains: Arc<Chains>,
    /// Checks the tokens of connecting wallets.
    pub verifier: Verifier,
    /// Drain and stop signals, and the open sessions.
    pub shutdown: Shutdown,
    /// Who may open a WebSocket session, and the slots the open ones hold.
    pub admission: Admission,
    /// The next connection id.
    next_conn: AtomicU64,
}

impl Node {
    /// Assembles a node from its started parts.
    pub fn new(
        settings: Arc<Settings>,
        hub: Arc<Hub>,
        history: History,
        broker: Arc<Broker>,
        chains: Arc<Chains>,
        verifier: Verifier,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            admission: Admission::new(&settings),
            settings,
            hub,
            history,
            broker,
            chains,
            verifier,
            shutdown,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A connection id unique in this process.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Ready for traffic: not draining (and, with a history, the store is reachable).
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutdown.is_draining() {
            return Err("draining");
        }
        if !self.broker.is_up() {
            return Err("cluster broker unavailable");
        }
        if !self.history.is_available() {
            return Err("history store unavailable");
        }
        Ok(())
    }
}

/// What the node registers with the broker: publications go to the hub, the other nodes'
/// chain events and the broker's connection state to the chain registry.
pub struct Delivery {
    /// Fans publications out to this node's subscribers.
    pub hub: Arc<Hub>,
    /// Every chain's state.
    pub registry: Arc<Registry>,
}

impl broker::Handler for Delivery {
    fn deliver(&self, publication: &Arc<Publication>) {
        self.hub.publish(publication);
    }

    fn remote_alive(&self, chain: &ChainId) {
        // A chain over chains.max_chains is counted and refused by the registry.
        let _ = self.registry.remote_alive(chain);
    }

    fn remote_mode(&self, chain: &ChainId, mode: Mode) {
        let _ = self.registry.set_mode(chain, mode, true);
    }

    fn connected(&self, up: bool) {
        self.registry.set_broker_connected(up);
    }

    fn chains_view(&self) -> Vec<ChainSeen> {
        self.registry
            .snapshot()
            .into_iter()
            .map(|(chain, mode, age)| ChainSeen {
                chain,
                mode,
                seen_ms_ago: age.map(|a| a.as_millis() as u64),
            })
            .collect()
    }
}
