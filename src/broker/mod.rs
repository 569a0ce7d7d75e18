//! Cross-node transport: how a publication committed on one node reaches the subscribers of
//! every node, and how chain status is shared.
//!
//! - One node (the default): the history's commit listener hands publications to the
//!   node's [`Handler`] directly, in commit order.
//! - A cluster (`broker.url = "nats://…"`): committed publications are published on NATS
//!   (one subject per hub key); a node subscribes only to the keys its own clients hold
//!   (subscribe on the first local subscriber, unsubscribe after the last), re-orders each
//!   account stream by offset and fills gaps from the shared history. Signs of life and
//!   operator modes of chains are broadcast so every node agrees on chain status. While NATS
//!   is unreachable the node reports every chain `down`, is not ready, and refuses publishes.
//!   Nodes announce themselves so each can list the cluster's nodes on its status page.
//!
//! Start-up, without a late-bound cell: [`connect`] first (the sending half, an [`Outlet`],
//! exists from then on), the history is opened with that outlet as its commit listener, then
//! [`Connected::start`] starts the receiving side with the history (for gap fills). The
//! broker hands everything it receives to the [`Handler`] the node registers; it knows
//! neither the hub nor the chain registry. [`Broker::close`] flushes the outbound queue.
//!
//! # Layout
//! - `outbound`: the sending half and its bounded queue.
//! - `nats`: the cluster broker: start, stop, connection state, interests.
//! - `interest`: one key's listener: ordering, gap fill, catch-up after a reconnect.
//! - `chain_events`: chain signs of life, modes and views between nodes.
//! - `order`, `presence`, `wire`: the orderer, the node list, what travels on NATS.
mod chain_events;
mod interest;
mod nats;
mod order;
mod outbound;
mod presence;
mod wire;

pub use nats::{ConnectError, NatsBroker};
pub use order::{Orderer, Verdict};
pub use outbound::{Outlet, OUTBOUND_QUEUE};
pub use presence::NodeSeen;
pub use wire::{key_token, ChainMessage, ChainSeen, ChainSnapshot, WirePublication};

use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::history::History;
use crate::hub::Publication;
use crate::protocol::caip::ChainId;
use crate::protocol::Mode;

/// What the broker hands to the node: publications for its subscribers and the other
/// nodes' chain events. Registered once, at [`connect`]; called from the broker's tasks and
/// the history's committer, so no method may block.
pub trait Handler: Send + Sync + 'static {
    /// A publication for this node's subscribers; per stream, in offset order.
    fn deliver(&self, publication: &Arc<Publication>);
    /// Another node saw a sign of life of `chain`.
    fn remote_alive(&self, chain: &ChainId);
    /// Another node applied an operator's `mode` to `chain`.
    fn remote_mode(&self, chain: &ChainId, mode: Mode);
    /// The cluster transport is usable (connected and caught up) or not.
    fn connected(&self, up: bool);
    /// This node's view of every chain, for a starting node that asks.
    fn chains_view(&self) -> Vec<ChainSeen>;
}

/// Connects the transport `config` names; the [`Outlet`] works from now on, the receiving
/// side after [`Connected::start`]. Never fails for NATS not being there yet (the client
/// retries in the background); fails only on an unusable address.
pub async fn connect(
    config: &BrokerConfig,
    handler: Arc<dyn Handler>,
) -> Result<Connected, ConnectError> {
    let nats = match &config.url {
        None => None,
        Some(url) => Some(nats::Connection::open(url, &config.subject_prefix).await?),
    };
    let outlet = match &nats {
        None => Outlet::Local(handler.clone()),
        Some(c) => Outlet::Nats(c.outbound.clone()),
    };
    Ok(Connected {
        outlet,
        handler,
        nats,
    })
}

/// A connected transport whose receiving side has not started yet.
pub struct Connected {
    /// The sending half.
    outlet: Outlet,
    /// Where received publications and chain events go.
    handler: Arc<dyn Handler>,
    /// The NATS connection, in a cluster.
    nats: Option<nats::Connection>,
}

impl Connected {
    /// The sending half, for the history's commit listener.
    pub fn outlet(&self) -> Outlet {
        self.outlet.clone()
    }

    /// Starts receiving: interests fill their gaps from `history`.
    pub fn start(self, history: History) -> Broker {
        let cluster = self
            .nats
            .map(|c| NatsBroker::start(c, history, self.handler));
        Broker {
            outlet: self.outlet,
            cluster,
        }
    }
}

/// The transport in use.
pub struct Broker {
    /// Sends publications (to the local handler, or to every node).
    outlet: Outlet,
    /// The NATS broker; `None` on a single node.
    cluster: Option<Arc<NatsBroker>>,
}

impl Broker {
    /// Hands over a committed or ephemeral publication for fan-out on every node.
    pub fn publish(&self, publication: Arc<Publication>, payload: &str) {
        self.outlet.publish(publication, payload);
    }

    /// A local subscriber holds `key`; true once publications on it will be received, false
    /// if that is not so by `deadline` (the holder is counted either way).
    pub async fn add_interest_until(&self, key: &str, deadline: tokio::time::Instant) -> bool {
        match &self.cluster {
            None => true,
            Some(n) => n.add_interest_until(key, deadline).await,
        }
    }

    /// A local subscriber let go of `key`.
    pub fn remove_interest(&self, key: &str) {
        if let Some(n) = &self.cluster {
            n.remove_interest(key);
        }
    }

    /// Tells the other nodes about a chain's sign of life (rate limited per chain).
    pub fn chain_alive(&self, chain: &ChainId) {
        if let Some(n) = &self.cluster {
            n.chain_alive(chain);
        }
    }

    /// Tells the other nodes about an operator's chain mode.
    pub fn chain_mode(&self, chain: &ChainId, mode: Mode) {
        if let Some(n) = &self.cluster {
            n.chain_mode(chain, mode);
        }
    }

    /// The cluster's nodes heard from recently (this one first); `None` for one node.
    pub fn nodes(&self) -> Option<Vec<NodeSeen>> {
        self.cluster.as_ref().map(|n| n.nodes())
    }

    /// The other nodes' view of every chain (the first to answer), for a starting node;
    /// `None` on a single node or when no other node answered within 1 s.
    pub async fn peers_chains(&self) -> Option<ChainSnapshot> {
        match &self.cluster {
            None => None,
            Some(n) => n.peers_chains().await,
        }
    }

    /// From now on, answers the other nodes' requests for this node's view of the chains.
    pub fn serve_chains(&self) {
        if let Some(n) = &self.cluster {
            n.serve_chains();
        }
    }

    /// True with a cross-node transport (interest must be registered before delivery).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// False while the cluster transport is unreachable.
    pub fn is_up(&self) -> bool {
        self.cluster.as_ref().is_none_or(|n| n.is_up())
    }

    /// Stops the broker's tasks after sending what its outbound queue holds (bounded in
    /// time). Run on drain, before the history closes.
    pub async fn close(&self) {
        if let Some(n) = &self.cluster {
            n.close().await;
        }
    }
}
