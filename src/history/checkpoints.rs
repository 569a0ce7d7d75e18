//! SQLite's WAL upkeep: a PASSIVE checkpoint every 100 ms on its own connection (it copies
//! the WAL into the database file without blocking the committer), and a rewind through the
//! committer when the WAL has grown past its bound. PostgreSQL needs none of it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::committer::{self, Job};
use super::store::{Maintenance, Store};
use super::HistoryError;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// Checkpoints until `shutdown`; returns at once for PostgreSQL.
pub(crate) async fn run(store: Store, committer: mpsc::Sender<Job>, shutdown: CancellationToken) {
    if !store.single_writer() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        let outcome = match store.checkpoint().await {
            Ok(true) => committer::maintain(&committer, Maintenance::RewindWal)
                .await
                .map(drop),
            Ok(false) => Ok(()),
            Err(e) => Err(HistoryError::Unavailable(format!(
                "WAL checkpoint failed: {e}"
            ))),
        };
        match outcome {
            Ok(()) => {}
            Err(HistoryError::Closed) => return,
            // The commits' own checkpoint (at `wal_autocheckpoint`) still bounds the WAL.
            Err(e) => debug!(error = %e, "WAL checkpoint failed; retrying."),
        }
    }
}
