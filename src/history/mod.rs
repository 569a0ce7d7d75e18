//! The durable publication log: account-activity publications are appended to per-account
//! streams before the publish API answers, and subscribers that acknowledge deliveries resume
//! from a [`Position`] after reconnecting. This file owns the [`History`] handle: opening the
//! store, starting and stopping the background tasks, and the store's availability.
//!
//! A stream (one account across the chains of its namespace) has an epoch, a random string
//! that changes whenever its history is lost, and offsets that start at 1, increase strictly
//! and are never reused within an epoch. The database assigns them (under the stream's row
//! lock), so several nodes may share one PostgreSQL.
//!
//! A stream's row exists only while it has publications: the first append creates it, and
//! retention removes it when age retention has deleted its last publication. Reads never
//! write: the position of a stream without a row is an *unborn* position ([`unborn`]), from
//! which a resume replays the stream's next incarnation from its first publication.
//!
//! Only the write path (the committer) decides whether the store is available; a failed read
//! fails its caller alone. Reads share the pool with the committer but never take more than
//! all but two of its connections, so a crowd of resumes cannot starve the writes.
//!
//! The history depends on no other part of the gateway but the leaves (`config`, `protocol`,
//! `metrics`); its position type is [`crate::protocol::Position`], re-exported here.
//!
//! # Layout
//! - [`StorageConfig`] and [`HistoryConfig`] live in [`crate::config`].
//! - `types`: publications in and out, positions, [`Recovery`], [`CommitListener`].
//! - `error`: [`HistoryError`].
//! - `append`: the writer side of the handle ([`History::append`]).
//! - `read`: the reader side of the handle ([`History::positions`], [`History::read_after`]).
//! - `plan`: offset assignment and idempotency for one batch (pure, shared by the backends).
//! - `store`: the SQLite and PostgreSQL backends behind one type, and their maintenance
//!   (retention deletes, WAL checkpoints).
//! - `committer`: group commit, and the listener call in commit order; on SQLite also the
//!   node's retention deletes and WAL rewinds, so the database has one writer.
//! - `trimmer`: retention by age and count.
//! - `checkpoints`: SQLite's WAL upkeep.
//! - `chain_state`: operator modes and last signs of life of chains, for the chain registry.
//! - `health`: the availability flag and the probe that restores it.
//! - `unborn`: positions of streams that have no row.

mod append;
mod chain_state;
mod checkpoints;
mod committer;
mod error;
mod health;
mod plan;
mod read;
mod store;
mod trimmer;
mod types;
mod unborn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::history as metrics;

pub use crate::config::{HistoryConfig, StorageConfig};
pub use chain_state::StoredChain;
pub use error::HistoryError;
pub use types::{
    CommitListener, Committed, NewPublication, Position, Recovery, RecoveryFailure, Stored,
};

pub(crate) use store::sqlite_memory_used;

use committer::{Committer, Job};
use health::Health;
use store::Store;

/// Longest an `append`, `positions` or `read_after` waits for the store (a read: for a turn
/// among the reads, then for its answer) before answering [`HistoryError::Unavailable`]. An
/// append already in a batch being committed waits for that batch's outcome instead (at most
/// `committer::COMMIT_TIMEOUT` more): its answer is never "unavailable" for publications that
/// were in fact committed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Appends queued for the committer before `append` waits for room (back-pressure).
const QUEUE: usize = 4096;

/// Handle to the history. Cheap to clone; the background tasks stop when [`History::close`]
/// is called or the last clone is dropped.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

/// What every clone of the handle shares.
struct Inner {
    /// Queue of the committer, the only writer of publications on this node.
    tx: mpsc::Sender<Job>,
    /// Pool for reads, which do not go through the committer.
    store: Store,
    /// Turns among the reads: all but two of the pool's connections, so that the committer
    /// (which takes a new connection after an error), retention and the probe always find one.
    reads: Semaphore,
    /// Age retention, which bounds how long an unborn position stays resumable.
    retention_age: Duration,
    /// Whether the store takes writes: set by the committer, restored by the probe.
    health: Arc<Health>,
    /// Stops the committer (after it flushed its queue), the trimmer, the checkpoints and the
    /// probe.
    shutdown: CancellationToken,
    /// Set by `close`; refuses new appends.
    closed: AtomicBool,
    /// The background tasks, awaited by `close`.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

// === History ===

impl History {
    /// Connects to the store, runs the migrations and starts the committer, the trimmer, the
    /// SQLite checkpoints and the availability probe. `listener` is told about every commit,
    /// in commit order.
    pub async fn open(
        storage: &StorageConfig,
        cfg: &HistoryConfig,
        listener: Arc<dyn CommitListener>,
    ) -> Result<History, HistoryError> {
        cfg.validate().map_err(HistoryError::Config)?;
        let store = Store::connect(storage).await?;
        store.migrate().await?;
        info!(url = %crate::config::redact::url(&storage.url), "History store opened.");

        let health = Health::new();
        let shutdown = CancellationToken::new();
        let (tx, rx) = mpsc::channel(QUEUE);
        let committer = Committer {
            store: store.clone(),
            listener,
            health: health.clone(),
            rx,
            max_batch: cfg.max_batch,
            shutdown: shutdown.clone(),
            writer: None,
        };
        let tasks = vec![
            tokio::spawn(committer.run()),
            tokio::spawn(trimmer::run(
                store.clone(),
                tx.clone(),
                cfg.clone(),
                health.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(checkpoints::run(
                store.clone(),
                tx.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(health::run_probe(
                store.clone(),
                health.clone(),
                u64::from(storage.sqlite_min_free_mib) * 1024 * 1024,
                shutdown.clone(),
            )),
        ];
        Ok(History {
            inner: Arc::new(Inner {
                tx,
                store,
                reads: Semaphore::new(read::read_turns(storage.max_connections)),
                retention_age: cfg.retention_age,
                health,
                shutdown,
                closed: AtomicBool::new(false),
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// False while the store is failing; appends are refused until a probe succeeds.
    pub fn is_available(&self) -> bool {
        self.inner.health.is_up()
    }

    /// Why the store does not take writes, while [`History::is_available`] is false.
    pub fn unavailable_reason(&self) -> String {
        self.inner.health.reason()
    }

    /// Commits what is queued, stops the background tasks and closes the connections.
    /// Appends after this answer [`HistoryError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        self.inner.store.close().await;
    }
}

// === Inner ===

impl Drop for Inner {
    /// The last handle is gone: stop the background tasks rather than leak them.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the embedded migrations against `storage` (e.g. from a `migrate` subcommand).
pub async fn migrate(storage: &StorageConfig) -> Result<(), HistoryError> {
    let store = Store::connect(storage).await?;
    let res = store.migrate().await;
    store.close().await;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_failures_have_wire_names() {
        assert_eq!(RecoveryFailure::EpochChanged.as_str(), "epoch_changed");
        assert_eq!(RecoveryFailure::Trimmed.as_str(), "trimmed");
        assert_eq!(RecoveryFailure::BeyondEnd.as_str(), "beyond_end");
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg = HistoryConfig::default();
        assert_eq!(cfg.retention_count, 1000);
        assert_eq!(cfg.retention_age, Duration::from_secs(86_400));
        assert!(cfg.validate().is_ok());
        let bad = HistoryConfig {
            max_batch: 0,
            ..HistoryConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(StorageConfig::default().url, "sqlite://data/gateway.db");
    }
}
