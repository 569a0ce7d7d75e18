//! The `[storage]` and `[history]` sections: where the history is stored and how long it is
//! kept.

use std::time::Duration;

use serde::Deserialize;

/// Where the history lives.
///
/// `sqlite://path` (the default, embedded, created on first start) or `postgres://...`
/// (shared by several gateway nodes). `Debug` redacts the URL's password.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Database URL; may carry a password, so it is never logged as is.
    pub url: String,
    /// Size of the connection pool (the committer holds one connection of it).
    pub max_connections: u32,
    /// SQLite only: page cache of one connection, in MiB; the memory SQLite holds in the whole
    /// process (every connection's cache together) is kept near twice this with its
    /// process-wide `soft_heap_limit`, however many pool connections have run a query.
    pub sqlite_cache_mib: u32,
    /// SQLite only: free space (MiB) the database's filesystem must have before a store that
    /// failed is taken for writable again, so that a full disk is a steady outage rather
    /// than a flapping one.
    pub sqlite_min_free_mib: u32,
}

/// How the history is kept and written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Publications older than this are trimmed.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// At most this many publications are kept per stream.
    pub retention_count: u64,
    /// How often the trimmer runs.
    #[serde(with = "humantime_serde")]
    pub trim_interval: Duration,
    /// Most publications committed in one transaction (an append is never split).
    pub max_batch: usize,
}

// === StorageConfig ===

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/gateway.db".to_owned(),
            max_connections: 8,
            sqlite_cache_mib: 16,
            sqlite_min_free_mib: 64,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &super::redact::url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("sqlite_cache_mib", &self.sqlite_cache_mib)
            .finish()
    }
}

// === HistoryConfig ===

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention_age: Duration::from_secs(24 * 60 * 60),
            retention_count: 1000,
            trim_interval: Duration::from_secs(30),
            max_batch: 2048,
        }
    }
}

impl HistoryConfig {
    /// Rejects values that would make the history useless rather than failing later; the
    /// message names the key and what to set.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("history.max_batch must be at least 1".to_owned());
        }
        if self.retention_count == 0 {
            return Err(
                "history.retention_count must be at least 1 (recovery needs a history)".to_owned(),
            );
        }
        if self.trim_interval.is_zero() {
            return Err("history.trim_interval must be longer than 0s (e.g. \"30s\")".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let cfg = HistoryConfig::default();
        assert_eq!(cfg.retention_count, 1000);
        assert!(cfg.validate().is_ok());
        let bad = HistoryConfig {
            max_batch: 0,
            ..HistoryConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "history.max_batch must be at least 1"
        );
    }
}
