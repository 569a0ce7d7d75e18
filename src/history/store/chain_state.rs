//! The `chain_state` table: operator modes and the last sign of life of each chain, kept for
//! the chain registry. Same SQL on both backends.

use sqlx::Row;

use super::Store;

/// One stored chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChain {
    /// CAIP-2 chain id.
    pub chain: String,
    /// `auto`, `up` or `down`.
    pub mode: String,
    /// Wall clock (ms since the Unix epoch) of the last sign of life written, if any.
    pub last_seen_ms: Option<i64>,
}

impl Store {
    /// Every stored chain.
    pub(crate) async fn chain_states(&self) -> Result<Vec<StoredChain>, sqlx::Error> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT chain, mode, last_seen_ms FROM chain_state")
                .fetch_all(p)
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(StoredChain {
                        chain: r.try_get(0)?,
                        mode: r.try_get(1)?,
                        last_seen_ms: r.try_get(2)?,
                    })
                })
                .collect()
        })
    }

    /// Stores a chain's operator mode.
    pub(crate) async fn save_chain_mode(&self, chain: &str, mode: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO chain_state (chain, mode) VALUES ($1, $2) \
                 ON CONFLICT (chain) DO UPDATE SET mode = excluded.mode",
            )
            .bind(chain)
            .bind(mode)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Stores the last sign of life of each chain, keeping a later one already stored (by
    /// another node).
    pub(crate) async fn save_chains_seen(&self, seen: &[(String, i64)]) -> Result<(), sqlx::Error> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (chain, ms) in seen {
                sqlx::query(
                    "INSERT INTO chain_state (chain, last_seen_ms) VALUES ($1, $2) \
                     ON CONFLICT (chain) DO UPDATE SET last_seen_ms = CASE \
                     WHEN chain_state.last_seen_ms IS NULL \
                       OR excluded.last_seen_ms > chain_state.last_seen_ms \
                     THEN excluded.last_seen_ms ELSE chain_state.last_seen_ms END",
                )
                .bind(chain)
                .bind(ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
