//! Cross-node transport: how a publication committed on one node reaches the subscribers of
//! every node, and how chain status is shared.
//!
//! - `Broker::Local` (one node, the default): the history's commit listener fans out to the
//!   local hub directly, in commit order.
//! - `Broker::Nats` (`broker.url = "nats://…"`): committed publications are published on NATS
//!   (one subject per hub key); a node subscribes only to the keys its own clients hold
//!   (subscribe on the first local subscriber, unsubscribe after the last), re-orders each
//!   account stream by offset and fills gaps from the shared history. Signs of life and
//!   operator modes of chains are broadcast so every node agrees on chain status. While NATS
//!   is unreachable the node reports every chain `down`, is not ready, and refuses publishes.
//!   Nodes announce themselves so each can list the cluster's nodes on its status page.
mod nats;
mod order;
mod presence;
mod wire;

pub use nats::NatsBroker;
pub use order::{Orderer, Verdict};
pub use presence::NodeSeen;
pub use wire::{key_token, ChainMessage, ChainSeen, ChainSnapshot, WirePublication};

use std::sync::Arc;

use serde::Deserialize;

use crate::chains::Mode;
use crate::hub::{Hub, Publication};
use crate::protocol::caip::ChainId;

/// `[broker]` configuration. `Debug` redacts the URL's credentials.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `nats://host:4222` for a cluster; unset: in-process (one node).
    pub url: Option<String>,
    /// Subject prefix, so several deployments can share one NATS.
    pub subject_prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            subject_prefix: "activity-gateway".into(),
        }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.url.as_deref().map(crate::config::redact::url))
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

/// The transport in use.
pub enum Broker {
    Local(Arc<Hub>),
    Nats(Arc<NatsBroker>),
}

impl Broker {
    /// Hands over a committed or ephemeral publication for fan-out on every node.
    pub fn publish(&self, publication: Arc<Publication>, payload: &str) {
        match self {
            Broker::Local(hub) => {
                hub.publish(&publication);
            }
            Broker::Nats(n) => n.publish(&publication, payload),
        }
    }

    /// A local subscriber holds `key`; returns once publications on it will be received.
    pub async fn add_interest(&self, key: &str) {
        if let Broker::Nats(n) = self {
            n.add_interest(key).await;
        }
    }

    /// A local subscriber holds `key`; true once publications on it will be received, false
    /// if that is not so by `deadline` (the holder is counted either way).
    pub async fn add_interest_until(&self, key: &str, deadline: tokio::time::Instant) -> bool {
        match self {
            Broker::Local(_) => true,
            Broker::Nats(n) => n.add_interest_until(key, deadline).await,
        }
    }

    /// A local subscriber let go of `key`.
    pub fn remove_interest(&self, key: &str) {
        if let Broker::Nats(n) = self {
            n.remove_interest(key);
        }
    }

    /// Tells the other nodes about a chain's sign of life (rate limited per chain).
    pub fn chain_alive(&self, chain: &ChainId) {
        if let Broker::Nats(n) = self {
            n.chain_alive(chain);
        }
    }

    /// Tells the other nodes about an operator's chain mode.
    pub fn chain_mode(&self, chain: &ChainId, mode: Mode) {
        if let Broker::Nats(n) = self {
            n.chain_mode(chain, mode);
        }
    }

    /// The cluster's nodes heard from recently (this one first); `None` for one node.
    pub fn nodes(&self) -> Option<Vec<NodeSeen>> {
        match self {
            Broker::Local(_) => None,
            Broker::Nats(n) => Some(n.nodes()),
        }
    }

    /// The other nodes' view of every chain (the first to answer), for a starting node;
    /// `None` on a single node or when no other node answered within 1 s.
    pub async fn peers_chains(&self) -> Option<ChainSnapshot> {
        match self {
            Broker::Local(_) => None,
            Broker::Nats(n) => n.peers_chains().await,
        }
    }

    /// From now on, answers the other nodes' requests for this node's view of the chains.
    pub fn serve_chains(&self) {
        if let Broker::Nats(n) = self {
            n.serve_chains();
        }
    }

    /// True with a cross-node transport (interest must be registered before delivery).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Broker::Nats(_))
    }

    /// False while the cluster transport is unreachable.
    pub fn is_up(&self) -> bool {
        match self {
            Broker::Local(_) => true,
            Broker::Nats(n) => n.is_up(),
        }
    }
}
