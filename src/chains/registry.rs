//! The chain registry and its staleness clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::serde_helpers::string_list;
use crate::metrics;
use crate::protocol::caip::ChainId;

/// `[chains]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainsConfig {
    /// Chains known from the start (CAIP-2 ids); they start `down` until a sign of life.
    #[serde(deserialize_with = "string_list")]
    pub known: Vec<String>,
    /// How long a chain in `auto` stays up after its last heartbeat or publication.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Per-chain `stale_after` overrides (file only), e.g. `"eip155:1" = "30s"`.
    #[serde(with = "humantime_serde_map")]
    pub stale_after_overrides: HashMap<String, Duration>,
    /// How often staleness is checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for ChainsConfig {
    fn default() -> Self {
        Self {
            known: Vec::new(),
            stale_after: Duration::from_secs(60),
            stale_after_overrides: HashMap::new(),
            check_interval: Duration::from_millis(500),
        }
    }
}

mod humantime_serde_map {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<String, Duration>, D::Error> {
        let raw = HashMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// How a chain's status is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Auto,
    Up,
    Down,
}

/// Status changes, broadcast to every session.
#[derive(Debug, Clone)]
pub struct ChainEvent {
    /// `(chain id, up)` for every chain that changed.
    pub changes: Vec<(ChainId, bool)>,
}

/// What `GET /v1/chains` shows of one chain.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainView {
    pub chain_id: String,
    pub status: &'static str,
    pub mode: Mode,
    pub reason: String,
    pub stale_after_ms: u64,
    pub last_seen_ms_ago: Option<u64>,
}

/// The admin API named a chain the registry does not know.
#[derive(Debug, thiserror::Error)]
#[error("chain {0} is not known: list it in chains.known or send a heartbeat for it first")]
pub struct UnknownChain(pub String);

struct Entry {
    chain: ChainId,
    mode: Mode,
    up: bool,
    last_seen: Option<Instant>,
    stale_after: Duration,
}

/// The registry of chains. Cheap to share behind an `Arc`.
pub struct Chains {
    entries: Mutex<HashMap<String, Entry>>,
    /// While the cluster broker is unreachable every chain is reported down.
    outage: std::sync::atomic::AtomicBool,
    events: broadcast::Sender<Arc<ChainEvent>>,
    config: ChainsConfig,
}

// === Entry ===

impl Entry {
    fn computed_up(&self, now: Instant) -> bool {
        match self.mode {
            Mode::Up => true,
            Mode::Down => false,
            Mode::Auto => self
                .last_seen
                .is_some_and(|t| now.duration_since(t) < self.stale_after),
        }
    }
}

// === Chains ===

impl Chains {
    /// Builds the registry; every configured chain id must be valid CAIP-2.
    pub fn new(config: ChainsConfig) -> Result<Arc<Self>, String> {
        let (events, _) = broadcast::channel(256);
        let chains = Chains {
            entries: Mutex::new(HashMap::new()),
            outage: std::sync::atomic::AtomicBool::new(false),
            events,
            config,
        };
        for id in chains.config.known.clone() {
            let chain = ChainId::parse(&id).map_err(|e| format!("chains.known: {e}"))?;
            if chain.is_wildcard() {
                return Err(format!(
                    "chains.known: {id} is the wildcard reference 0, not a chain"
                ));
            }
            chains
                .entries
                .lock()
                .entry(chain.to_string())
                .or_insert_with(|| {
                    metrics::chain_status(&chain.to_string(), false);
                    chains.new_entry(chain.clone())
                });
        }
        for key in chains.config.stale_after_overrides.keys() {
            ChainId::parse(key).map_err(|e| format!("chains.stale_after_overrides: {e}"))?;
        }
        Ok(Arc::new(chains))
    }

    fn new_entry(&self, chain: ChainId) -> Entry {
        let stale_after = self
            .config
            .stale_after_overrides
            .get(&chain.to_string())
            .copied()
            .unwrap_or(self.config.stale_after);
        Entry {
            chain,
            mode: Mode::Auto,
            up: false,
            last_seen: None,
            stale_after,
        }
    }

    /// A heartbeat or a publication for `chain`: adds it if unknown; brings it up if `auto`.
    pub fn sign_of_life(&self, chain: &ChainId) {
        let now = Instant::now();
        let changed = {
            let mut entries = self.entries.lock();
            let entry = entries
                .entry(chain.to_string())
                .or_insert_with(|| self.new_entry(chain.clone()));
            entry.last_seen = Some(now);
            let up =
                !self.outage.load(std::sync::atomic::Ordering::Acquire) && entry.computed_up(now);
            let changed = up != entry.up;
            entry.up = up;
            changed.then(|| (entry.chain.clone(), up))
        };
        self.announce(changed.into_iter().collect());
    }

    /// Operator override. Unknown chains are refused.
    pub fn set_mode(&self, chain: &ChainId, mode: Mode) -> Result<ChainView, UnknownChain> {
        let now = Instant::now();
        let (changed, view) = {
            let mut entries = self.entries.lock();
            let entry = entries
                .get_mut(&chain.to_string())
                .ok_or_else(|| UnknownChain(chain.to_string()))?;
            entry.mode = mode;
            let up =
                !self.outage.load(std::sync::atomic::Ordering::Acquire) && entry.computed_up(now);
            let changed = up != entry.up;
            entry.up = up;
            (
                changed.then(|| (entry.chain.clone(), up)),
                view_of(entry, now),
            )
        };
        self.announce(changed.into_iter().collect());
        Ok(view)
    }

    /// Starts or ends a broker outage: while it lasts every chain is down (wallets poll).
    pub fn set_outage(&self, outage: bool) {
        self.outage
            .store(outage, std::sync::atomic::Ordering::Release);
        self.tick();
    }

    /// Re-evaluates staleness; run periodically.
    pub fn tick(&self) {
        let now = Instant::now();
        let outage = self.outage.load(std::sync::atomic::Ordering::Acquire);
        let mut changes = Vec::new();
        {
            let mut entries = self.entries.lock();
            for entry in entries.values_mut() {
                let up = !outage && entry.computed_up(now);
                if up != entry.up {
                    entry.up = up;
                    changes.push((entry.chain.clone(), up));
                }
            }
        }
        self.announce(changes);
    }

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
        let entries = self.entries.lock();
        let mut up: Vec<ChainId> = entries
            .values()
            .filter(|e| e.up)
            .map(|e| e.chain.clone())
            .collect();
        up.sort();
        up
    }

    pub fn view(&self, chain: &ChainId) -> Option<ChainView> {
        let entries = self.entries.lock();
        entries
            .get(&chain.to_string())
            .map(|e| view_of(e, Instant::now()))
    }

    /// Every chain, sorted by id.
    pub fn views(&self) -> Vec<ChainView> {
        let now = Instant::now();
        let entries = self.entries.lock();
        let mut views: Vec<ChainView> = entries.values().map(|e| view_of(e, now)).collect();
        views.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        views
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<ChainEvent>> {
        self.events.subscribe()
    }

    /// Runs the staleness clock until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(self.config.check_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => self.tick(),
            }
        }
    }
}

fn view_of(e: &Entry, now: Instant) -> ChainView {
    let ago = e.last_seen.map(|t| now.duration_since(t));
    let reason = match (e.mode, ago) {
        _ if !e.up && e.mode != Mode::Down && e.computed_up(now) => {
            "cluster broker unreachable".to_owned()
        }
        (Mode::Up, _) => "forced up by an operator".to_owned(),
        (Mode::Down, _) => "forced down by an operator".to_owned(),
        (Mode::Auto, None) => "no heartbeat or publication seen yet".to_owned(),
        (Mode::Auto, Some(a)) if a < e.stale_after => {
            format!("last heartbeat or publication {}ms ago", a.as_millis())
        }
        (Mode::Auto, Some(a)) => format!(
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
        stale_after_ms: e.stale_after.as_millis() as u64,
        last_seen_ms_ago: ago.map(|a| a.as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(stale: Duration) -> Arc<Chains> {
        Chains::new(ChainsConfig {
            known: vec!["eip155:1".into()],
            stale_after: stale,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn heartbeat_brings_up_and_staleness_brings_down() {
        let c = chains(Duration::from_millis(30));
        let mut rx = c.events();
        let eth = ChainId::parse("eip155:1").unwrap();
        assert!(c.up_chains().is_empty());
        c.sign_of_life(&eth);
        assert_eq!(rx.try_recv().unwrap().changes, vec![(eth.clone(), true)]);
        c.sign_of_life(&eth);
        assert!(rx.try_recv().is_err(), "no event without a change");
        std::thread::sleep(Duration::from_millis(40));
        c.tick();
        assert_eq!(rx.try_recv().unwrap().changes, vec![(eth.clone(), false)]);
    }

    #[test]
    fn operator_modes_override_and_unknown_chains_are_refused() {
        let c = chains(Duration::from_secs(60));
        let eth = ChainId::parse("eip155:1").unwrap();
        assert_eq!(c.set_mode(&eth, Mode::Up).unwrap().status, "up");
        assert_eq!(c.set_mode(&eth, Mode::Down).unwrap().status, "down");
        c.sign_of_life(&eth);
        assert_eq!(
            c.view(&eth).unwrap().status,
            "down",
            "forced down ignores signs of life"
        );
        assert_eq!(c.set_mode(&eth, Mode::Auto).unwrap().status, "up");
        assert!(c
            .set_mode(&ChainId::parse("eip155:10").unwrap(), Mode::Up)
            .is_err());
        let base = ChainId::parse("eip155:8453").unwrap();
        c.sign_of_life(&base);
        assert_eq!(
            c.up_chains(),
            vec![eth, base],
            "a heartbeat adds an unknown chain"
        );
    }
}
