//! Chain status between nodes: this node's signs of life (rate limited) and operator modes
//! go out on `<prefix>.chains`; the other nodes' come in and go to the handler; a starting
//! node asks the others for their view on `<prefix>.chains.view`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::nats::NatsBroker;
use super::wire::{self, ChainMessage, ChainSnapshot};
use crate::protocol::caip::ChainId;
use crate::protocol::Mode;

/// A node announces a chain's sign of life at most this often.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a starting node waits for another node's view of the chains.
const PEERS_WAIT: Duration = Duration::from_secs(1);
/// Pause before a failed subscription is tried again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

impl NatsBroker {
    /// Tells the other nodes about a sign of life of `chain`, at most once per
    /// [`ALIVE_EVERY`].
    pub fn chain_alive(&self, chain: &ChainId) {
        let id = chain.to_string();
        {
            let mut last = self.last_alive.lock();
            let now = Instant::now();
            if last
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < ALIVE_EVERY)
            {
                return;
            }
            last.insert(id.clone(), now);
        }
        self.outbound.chain(&ChainMessage {
            chain: id,
            mode: None,
        });
    }

    /// Tells the other nodes about an operator's mode.
    pub fn chain_mode(&self, chain: &ChainId, mode: Mode) {
        self.outbound.chain(&ChainMessage {
            chain: chain.to_string(),
            mode: Some(mode),
        });
    }

    /// Asks the other nodes for their view of the chains; the first answer within 1 s.
    pub async fn peers_chains(&self) -> Option<ChainSnapshot> {
        let ask = self
            .client
            .request(wire::chains_view_subject(&self.prefix), Bytes::new());
        let reply = tokio::time::timeout(PEERS_WAIT, ask).await.ok()?.ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }

    /// Answers every request for this node's view of the chains, from now on.
    pub fn serve_chains(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let client = self.client.clone();
        let subject = wire::chains_view_subject(&self.prefix);
        self.tasks.lock().spawn(async move {
            let mut sub = loop {
                match client.subscribe(subject.clone()).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(RESUBSCRIBE_AFTER).await,
                }
            };
            while let Some(msg) = sub.next().await {
                let (Some(reply), Some(broker)) = (msg.reply, weak.upgrade()) else {
                    continue;
                };
                let snapshot = ChainSnapshot {
                    chains: broker.handler.chains_view(),
                };
                if let Ok(bytes) = serde_json::to_vec(&snapshot) {
                    let _ = client.publish(reply, Bytes::from(bytes)).await;
                }
            }
        });
    }
}

impl NatsBroker {
    /// Hands the chain events of every node to the handler, until the broker closes.
    pub(super) async fn receive_chain_events(self: Arc<Self>) {
        let broker = self;
        let subject = wire::chains_subject(&broker.prefix);
        loop {
            let mut sub = match broker.client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
            };
            while let Some(msg) = sub.next().await {
                let Ok(m) = serde_json::from_slice::<ChainMessage>(&msg.payload) else {
                    continue;
                };
                let Ok(chain) = ChainId::parse(&m.chain) else {
                    continue;
                };
                match m.mode {
                    None => broker.handler.remote_alive(&chain),
                    Some(mode) => broker.handler.remote_mode(&chain, mode),
                }
            }
        }
    }
}
