//! Chain state kept in the history store for the chain registry: operator modes and the last
//! sign of life of each chain. These calls never change the store's health: only the commit
//! path decides it; a failure is answered to the caller.

use std::time::Duration;

pub use super::store::StoredChain;
use super::{History, HistoryError};

/// Longest a chain-state call waits for the store.
const CHAIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl History {
    /// Every stored chain.
    pub async fn chain_states(&self) -> Result<Vec<StoredChain>, HistoryError> {
        bounded(self.inner.store.chain_states()).await
    }

    /// Stores a chain's operator mode (`auto`, `up` or `down`).
    pub async fn save_chain_mode(&self, chain: &str, mode: &str) -> Result<(), HistoryError> {
        bounded(self.inner.store.save_chain_mode(chain, mode)).await
    }

    /// Stores the last sign of life (wall clock, ms) of each chain; a later one already
    /// stored is kept.
    pub async fn save_chains_seen(&self, seen: &[(String, i64)]) -> Result<(), HistoryError> {
        if seen.is_empty() {
            return Ok(());
        }
        bounded(self.inner.store.save_chains_seen(seen)).await
    }
}

async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, HistoryError> {
    match tokio::time::timeout(CHAIN_CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(HistoryError::Unavailable(e.to_string())),
        Err(_) => Err(HistoryError::Unavailable(format!(
            "no answer within {CHAIN_CALL_TIMEOUT:?}"
        ))),
    }
}
