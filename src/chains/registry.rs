//! The chain registry: every chain's state under the rule's node-wide inputs, and the events
//! that tell sessions about each change. Synchronous and store-free; [`super::Chains`] feeds
//! it and keeps it durable and shared.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::rule::{view_of, ChainView, Entry, NodeInputs};
use crate::config::ChainsConfig;
use crate::metrics;
use crate::protocol::caip::ChainId;
use crate::protocol::Mode;

/// Status changes, broadcast to every session.
#[derive(Debug, Clone)]
pub struct ChainEvent {
    /// `(chain id, up)` for every chain that changed.
    pub changes: Vec<(ChainId, bool)>,
}

/// Why a chain could not be taken in or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainRefused {
    /// The admin API named a chain the registry does not know.
    #[error("chain {0} is not known: list it in chains.known or send a heartbeat for it first")]
    Unknown(String),
    /// The registry already holds `chains.max_chains` chains.
    #[error("chain {chain} was not added: the gateway already tracks chains.max_chains = {max} chains; raise it or list the chains you need in chains.known")]
    Limit {
        /// The refused chain.
        chain: String,
        /// The cap in force.
        max: usize,
    },
}

/// Everything behind the registry's lock.
struct State {
    /// Chains by CAIP-2 id.
    entries: HashMap<ChainId, Entry>,
    /// The node-wide inputs of the rule.
    node: NodeInputs,
    /// Signs of life seen on this node (wall clock, ms) not yet written to the store.
    unsaved: HashMap<ChainId, i64>,
}

/// The registry. Cheap to share behind an `Arc`.
pub struct Registry {
    /// Every chain and the node-wide inputs, under one lock so a change is seen whole.
    state: Mutex<State>,
    /// Status changes, to every session.
    events: broadcast::Sender<Arc<ChainEvent>>,
    /// `[chains]`.
    config: ChainsConfig,
}

impl Registry {
    /// Builds the registry; every configured chain id must be valid CAIP-2, and there may be
    /// at most `max_chains` of them.
    pub fn new(config: ChainsConfig) -> Result<Arc<Self>, String> {
        if config.max_chains == 0 {
            return Err("chains.max_chains must be at least 1".into());
        }
        if config.check_interval.is_zero() {
            return Err("chains.check_interval must be longer than 0 (e.g. 500ms)".into());
        }
        if config.known.len() > config.max_chains {
            return Err(format!(
                "chains.known lists {} chains, more than chains.max_chains = {}",
                config.known.len(),
                config.max_chains
            ));
        }
        for key in config.stale_after_overrides.keys() {
            ChainId::parse(key).map_err(|e| format!("chains.stale_after_overrides: {e}"))?;
        }
        let mut entries = HashMap::new();
        for id in &config.known {
            let chain = ChainId::parse(id).map_err(|e| format!("chains.known: {e}"))?;
            if chain.is_wildcard() {
                return Err(format!(
                    "chains.known: {id} is the wildcard reference 0, not a chain"
                ));
            }
            metrics::chain_status(&chain.to_string(), false);
            let stale = config.stale_after_of(&chain.to_string());
            entries.insert(chain.clone(), Entry::new(chain, stale));
        }
        metrics::chains_refused(0);
        let (events, _) = broadcast::channel(256);
        Ok(Arc::new(Registry {
            state: Mutex::new(State {
                entries,
                node: NodeInputs {
                    store_failure: None,
                    broker_connected: true,
                },
                unsaved: HashMap::new(),
            }),
            events,
            config,
        }))
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ChainsConfig {
        &self.config
    }

    /// A sign of life seen by this node (it is remembered for the store).
    pub fn local_alive(&self, chain: &ChainId, wall_ms: i64) -> Result<(), ChainRefused> {
        self.alive(chain, Some(wall_ms))
    }

    /// A sign of life another node saw.
    pub fn remote_alive(&self, chain: &ChainId) -> Result<(), ChainRefused> {
        self.alive(chain, None)
    }

    fn alive(&self, chain: &ChainId, wall_ms: Option<i64>) -> Result<(), ChainRefused> {
        let now = Instant::now();
        {
            let mut st = self.state.lock();
            let State {
                entries,
                node,
                unsaved,
            } = &mut *st;
            let entry = self.admit(entries, chain)?;
            entry.last_seen = Some(now);
            if let Some(ms) = wall_ms {
                match unsaved.get_mut(chain) {
                    Some(slot) => *slot = ms,
                    None => {
                        unsaved.insert(chain.clone(), ms);
                    }
                }
            }
            let change = settle(entry, node, now);
            self.announce(change.into_iter().collect());
        }
        Ok(())
    }

    /// Sets an operator mode. With `add`, an unknown chain is taken in (a mode stored or
    /// set on another node); without, it is refused.
    pub fn set_mode(
        &self,
        chain: &ChainId,
        mode: Mode,
        add: bool,
    ) -> Result<ChainView, ChainRefused> {
        let now = Instant::now();
        let mut st = self.state.lock();
        let State { entries, node, .. } = &mut *st;
        if !add && !entries.contains_key(chain) {
            return Err(ChainRefused::Unknown(chain.to_string()));
        }
        let entry = self.admit(entries, chain)?;
        entry.mode = mode;
        let change = settle(entry, node, now);
        let view = view_of(entry, node, now);
        self.announce(change.into_iter().collect());
        Ok(view)
    }

    /// Restores a chain at start (from the store or a peer): its mode when given, and its
    /// last sign of life (`age` ago) when later than the one known.
    pub fn restore(&self, chain: &ChainId, mode: Option<Mode>, age: Option<Duration>) {
        let now = Instant::now();
        let mut st = self.state.lock();
        let State { entries, node, .. } = &mut *st;
        let Ok(entry) = self.admit(entries, chain) else {
            return;
        };
        if let Some(mode) = mode {
            entry.mode = mode;
        }
        if let Some(seen) = age.and_then(|a| now.checked_sub(a)) {
            if entry.last_seen.is_none_or(|t| t < seen) {
                entry.last_seen = Some(seen);
            }
        }
        let change = settle(entry, node, now);
        self.announce(change.into_iter().collect());
    }

    /// Sets whether the history store takes writes (`None`) or why not.
    pub fn set_store_failure(&self, failure: Option<String>) {
        let mut st = self.state.lock();
        let changed = st.node.store_failure.is_some() != failure.is_some();
        st.node.store_failure = failure;
        drop(st);
        if changed {
            self.tick();
        }
    }

    /// Sets whether the cluster broker is connected.
    pub fn set_broker_connected(&self, connected: bool) {
        self.state.lock().node.broker_connected = connected;
        self.tick();
    }

    /// Re-applies the rule to every chain (staleness, node inputs).
    pub fn tick(&self) {
        let now = Instant::now();
        let mut st = self.state.lock();
        let State { entries, node, .. } = &mut *st;
        let changes = entries
            .values_mut()
            .filter_map(|e| settle(e, node, now))
            .collect();
        self.announce(changes);
    }

    /// Takes the signs of life not yet written to the store.
    pub fn take_unsaved(&self) -> HashMap<ChainId, i64> {
        std::mem::take(&mut self.state.lock().unsaved)
    }

    /// Gives back signs of life whose write failed (a newer one wins).
    pub fn return_unsaved(&self, back: HashMap<ChainId, i64>) {
        let mut st = self.state.lock();
        for (chain, ms) in back {
            let slot = st.unsaved.entry(chain).or_insert(ms);
            *slot = (*slot).max(ms);
        }
    }

    /// Takes `chain` in when it is known or there is room; counts a refusal.
    fn admit<'a>(
        &self,
        entries: &'a mut HashMap<ChainId, Entry>,
        chain: &ChainId,
    ) -> Result<&'a mut Entry, ChainRefused> {
        if !entries.contains_key(chain) {
            let key = chain.to_string();
            if entries.len() >= self.config.max_chains {
                metrics::chains_refused(1);
                tracing::debug!(chain = %key, max = self.config.max_chains, "Chain refused: chains.max_chains reached.");
                return Err(ChainRefused::Limit {
                    chain: key,
                    max: self.config.max_chains,
                });
            }
            metrics::chain_status(&key, false);
            let stale = self.config.stale_after_of(&key);
            entries.insert(chain.clone(), Entry::new(chain.clone(), stale));
        }
        entries
            .get_mut(chain)
            .ok_or_else(|| ChainRefused::Unknown(chain.to_string()))
    }

    /// Tells the subscribers of `events` about `changes`. Called with the state locked: an
    /// event sent after the lock was released could overtake a later change's event, and
    /// wallets would end on a status the node does not hold.
    fn announce(&self, mut changes: Vec<(ChainId, bool)>) {
        if changes.is_empty() {
            return;
        }
        changes.sort();
        for (chain, up) in &changes {
            metrics::chain_status(&chain.to_string(), *up);
            tracing::info!(chain = %chain, status = if *up { "up" } else { "down" }, "Chain status changed.");
        }
        // No receiver is not an error: nobody is connected.
        let _ = self.events.send(Arc::new(ChainEvent { changes }));
    }

    /// Every chain that is up now, sorted.
    pub fn up_chains(&self) -> Vec<ChainId> {
        let st = self.state.lock();
        let mut up: Vec<ChainId> = st
            .entries
            .values()
            .filter(|e| e.up)
            .map(|e| e.chain.clone())
            .collect();
        up.sort();
        up
    }

    /// One chain's view, when known.
    pub fn view(&self, chain: &ChainId) -> Option<ChainView> {
        let st = self.state.lock();
        st.entries
            .get(chain)
            .map(|e| view_of(e, &st.node, Instant::now()))
    }

    /// Every chain, sorted by id.
    pub fn views(&self) -> Vec<ChainView> {
        let now = Instant::now();
        let st = self.state.lock();
        let mut views: Vec<ChainView> = st
            .entries
            .values()
            .map(|e| view_of(e, &st.node, now))
            .collect();
        views.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        views
    }

    /// Each chain's mode and age of its last sign of life (what a starting peer learns).
    pub fn snapshot(&self) -> Vec<(String, Mode, Option<Duration>)> {
        let now = Instant::now();
        let st = self.state.lock();
        st.entries
            .values()
            .map(|e| {
                let age = e.last_seen.map(|t| now.duration_since(t));
                (e.chain.to_string(), e.mode, age)
            })
            .collect()
    }

    /// Status changes from now on.
    pub fn events(&self) -> broadcast::Receiver<Arc<ChainEvent>> {
        self.events.subscribe()
    }
}

/// Applies the rule to one entry; the change to announce, if any.
fn settle(e: &mut Entry, node: &NodeInputs, now: Instant) -> Option<(ChainId, bool)> {
    let up = e.should_be_up(node, now);
    (up != e.up).then(|| {
        e.up = up;
        (e.chain.clone(), up)
    })
}
