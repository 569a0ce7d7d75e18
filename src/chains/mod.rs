//! Chain health: the one owner of the per-chain `up`/`down` polling signal.
//!
//! A chain is `up` for a connection only while this node can deliver its activity (see
//! [`rule`]): a fresh sign of life or an operator's `up`, AND the history store is writable,
//! AND, in a cluster, the broker is connected. Any input failing turns every affected chain
//! `down` at once; each change is broadcast as a [`ChainEvent`] that sessions turn into
//! `system-notification`s, and is the `gateway_chain_status` gauge.
//!
//! [`Chains`] is the single entry point for everything that moves a chain, whatever its
//! source: [`Chains::alive`] for every sign of life seen by this node (a committed publication
//! over HTTP or JetStream, a heartbeat over HTTP or JetStream), [`Chains::set_mode`] for every
//! operator override. Each records the change here, shares it with the other nodes through
//! the broker, and keeps it durable in the history store (modes at once, signs of life
//! throttled), so that a restarted or joining node starts from the deployment's view.
//!
//! # Layout
//! - [`ChainsConfig`] (the `[chains]` section) lives in [`crate::config`].
//! - `rule`: the rule, its inputs and the [`ChainView`] that explains it.
//! - `registry`: the state of every chain under the rule, and the events ([`Registry`], fed
//!   by the broker with the other nodes' signs of life and modes).
mod registry;
mod rule;

pub use crate::config::ChainsConfig;
pub use crate::protocol::Mode;
pub use registry::{ChainEvent, ChainRefused, Registry};
pub use rule::{ChainView, Inputs};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::history::{History, HistoryError};
use crate::protocol::caip::ChainId;

/// An operator override could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SetModeError {
    /// The chain is unknown or over the cap.
    #[error(transparent)]
    Refused(#[from] ChainRefused),
    /// The override could not be stored, so it was not applied (it would not survive a
    /// restart, and the other nodes' stores would disagree).
    #[error("the override was not applied because it could not be stored ({0}); retry when the history store is back")]
    Store(HistoryError),
}

/// Chain health of one node.
pub struct Chains {
    /// Every chain's state; the broker feeds it the other nodes' signs of life and modes.
    registry: Arc<Registry>,
    /// The history store: its health is an input of the rule, and chain state is kept in it.
    history: History,
    /// Shares this node's signs of life and overrides with the other nodes.
    broker: Arc<Broker>,
}

impl Chains {
    /// The chain health of a node whose registry, history and broker are built.
    pub fn new(registry: Arc<Registry>, history: History, broker: Arc<Broker>) -> Arc<Chains> {
        let chains = Arc::new(Chains {
            registry,
            history,
            broker,
        });
        chains.refresh_store();
        chains
    }

    /// Reads the stored modes and last signs of life, and in a cluster the other nodes'
    /// current view; run before the node is ready, so the first status a wallet hears already
    /// honours them. Then starts answering the next starting node.
    pub async fn restore(&self) -> Result<usize, HistoryError> {
        let stored = self.history.chain_states().await?;
        let now = wall_ms();
        let mut restored = 0;
        for row in &stored {
            let (Ok(chain), Some(mode)) = (ChainId::parse(&row.chain), Mode::parse(&row.mode))
            else {
                tracing::warn!(chain = %row.chain, mode = %row.mode, "Stored chain state not understood; ignored.");
                continue;
            };
            let age = row
                .last_seen_ms
                .map(|ms| Duration::from_millis(u64::try_from(now - ms).unwrap_or(0)));
            self.registry.restore(&chain, Some(mode), age);
            restored += 1;
        }
        // In a cluster, the signs of life the others saw since their last write. Modes come
        // from the store, where every override is written before it applies.
        if let Some(peers) = self.broker.peers_chains().await {
            for seen in peers.chains {
                if let Ok(chain) = ChainId::parse(&seen.chain) {
                    let age = seen.seen_ms_ago.map(Duration::from_millis);
                    self.registry.restore(&chain, None, age);
                }
            }
        }
        self.broker.serve_chains();
        Ok(restored)
    }

    /// A sign of life of `chain` seen by this node: a committed publication or a heartbeat,
    /// from any source. Shared with the other nodes and written to the store (throttled).
    pub fn alive(&self, chain: &ChainId) -> Result<(), ChainRefused> {
        self.refresh_store();
        self.registry.local_alive(chain, wall_ms())?;
        self.broker.chain_alive(chain);
        Ok(())
    }

    /// An operator override: stored first, then applied here and on every other node.
    pub async fn set_mode(&self, chain: &ChainId, mode: Mode) -> Result<ChainView, SetModeError> {
        if self.registry.view(chain).is_none() {
            return Err(ChainRefused::Unknown(chain.to_string()).into());
        }
        self.history
            .save_chain_mode(&chain.to_string(), mode.as_str())
            .await
            .map_err(SetModeError::Store)?;
        let view = self.registry.set_mode(chain, mode, true)?;
        self.broker.chain_mode(chain, mode);
        Ok(view)
    }

    /// Re-reads the history store's health now (after a failed append, say) rather than at
    /// the next check.
    pub fn refresh_store(&self) {
        let failure = (!self.history.is_available()).then(|| self.history.unavailable_reason());
        self.registry.set_store_failure(failure);
    }

    /// Every chain that is up now, sorted.
    pub fn up_chains(&self) -> Vec<ChainId> {
        self.registry.up_chains()
    }

    /// One chain's view, when known.
    pub fn view(&self, chain: &ChainId) -> Option<ChainView> {
        self.registry.view(chain)
    }

    /// Every chain, sorted by id.
    pub fn views(&self) -> Vec<ChainView> {
        self.registry.views()
    }

    /// Status changes from now on.
    pub fn events(&self) -> broadcast::Receiver<Arc<ChainEvent>> {
        self.registry.events()
    }

    /// Runs until `stop`: the clock (staleness, the store's health) and, beside it so a slow
    /// store never delays a status change, the throttled writes of the last signs of life
    /// (flushed once more on stop).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let clock = async {
            let mut interval = tokio::time::interval(self.registry.config().check_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                self.refresh_store();
                self.registry.tick();
            }
        };
        let persist = async {
            let mut interval = tokio::time::interval(self.registry.config().persist_every());
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                self.persist_seen().await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = clock => {}
            _ = persist => {}
        }
        self.persist_seen().await;
    }

    /// Writes the signs of life seen since the last write; on failure they are kept for the
    /// next one.
    async fn persist_seen(&self) {
        let unsaved = self.registry.take_unsaved();
        if unsaved.is_empty() {
            return;
        }
        let rows: Vec<(String, i64)> = unsaved.iter().map(|(c, ms)| (c.to_string(), *ms)).collect();
        if let Err(error) = self.history.save_chains_seen(&rows).await {
            tracing::debug!(%error, "Last signs of life not stored; retrying at the next write.");
            self.registry.return_unsaved(unsaved);
        }
    }
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
