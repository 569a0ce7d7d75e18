//! `[chains]` configuration: the chains known from the start, staleness, and the cap on how
//! many chains publishers may add.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::string_list;

/// `[chains]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainsConfig {
    /// Chains known from the start (CAIP-2 ids); they start `down` until a sign of life.
    #[serde(deserialize_with = "string_list")]
    pub known: Vec<String>,
    /// How long a chain in `auto` stays up after its last heartbeat or committed publication.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Per-chain `stale_after` overrides (file only), e.g. `"eip155:1" = "30s"`.
    #[serde(with = "humantime_serde_map")]
    pub stale_after_overrides: HashMap<String, Duration>,
    /// How often staleness and the history store's health are checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Most chains the registry holds (configured, stored, or added by a sign of life); a
    /// sign of life for one more chain is refused and counted.
    pub max_chains: usize,
}

impl Default for ChainsConfig {
    fn default() -> Self {
        Self {
            known: Vec::new(),
            stale_after: Duration::from_secs(60),
            stale_after_overrides: HashMap::new(),
            check_interval: Duration::from_millis(500),
            max_chains: 256,
        }
    }
}

impl ChainsConfig {
    /// The `stale_after` of one chain.
    pub fn stale_after_of(&self, chain: &str) -> Duration {
        self.stale_after_overrides
            .get(chain)
            .copied()
            .unwrap_or(self.stale_after)
    }

    /// How often the last time each chain was seen alive is written to the store: often
    /// enough that a restart shorter than `stale_after` finds it still fresh.
    pub fn persist_every(&self) -> Duration {
        (self.stale_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
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
