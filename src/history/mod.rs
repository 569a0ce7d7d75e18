//! The durable publication log: account-activity publications are appended to per-account
//! streams before the publish API answers, and subscribers that acknowledge deliveries resume
//! from a [`Position`] after reconnecting.
//!
//! A stream (one account across the chains of its namespace) has an epoch, a random string
//! that changes whenever its history is lost, and offsets that start at 1, increase strictly
//! and are never reused within an epoch. The database assigns them (under the stream's row
//! lock), so several nodes may share one PostgreSQL.
//!
//! A stream's row exists only while it has publications: the first append creates it, and
//! retention removes it once age retention deleted its last publication. Reads never write:
//! the position of a stream without a row is an *unborn* position ([`unborn`]), from which a
//! resume replays the stream's next incarnation from its first publication.
//!
//! Only the write path (the committer) decides whether the store is available; a failed read
//! fails its caller alone. Reads share the pool with the committer but never take more than
//! all but two of its connections, so a crowd of resumes cannot starve the writes.
//!
//! # Layout
//! - [`StorageConfig`] and [`HistoryConfig`] live in [`crate::config`].
//! - `types`: publications in and out, positions, [`Recovery`], [`CommitListener`].
//! - `error`: [`HistoryError`].
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

mod chain_state;
mod checkpoints;
mod committer;
mod error;
mod health;
mod plan;
mod store;
mod trimmer;
mod types;
mod unborn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::history as metrics;
use crate::protocol::now_ms;

pub use crate::config::{HistoryConfig, StorageConfig};
pub use chain_state::StoredChain;
pub use error::HistoryError;
pub use types::{
    CommitListener, Committed, NewPublication, Position, Recovery, RecoveryFailure, Stored,
};

pub(crate) use store::sqlite_memory_used;

use committer::{Claim, Committer, Job, Request};
use health::Health;
use store::Store;

/// Longest an `append`, `positions` or `read_after` waits for the store (a read: for a turn
/// among the reads, then for its answer) before answering [`HistoryError::Unavailable`]. An append already in a batch being committed waits for that
/// batch's outcome instead (at most `committer::COMMIT_TIMEOUT` more): its answer is never
/// "unavailable" for publications that were in fact committed.
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
                reads: Semaphore::new(read_turns(storage.max_connections)),
                retention_age: cfg.retention_age,
                health,
                shutdown,
                closed: AtomicBool::new(false),
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Appends publications, all in one transaction with whatever else is queued, and
    /// returns their positions in input order. Publications whose idempotency key is already
    /// stored for their stream come back with the original position and `duplicate: true`.
    pub async fn append(&self, batch: Vec<NewPublication>) -> Result<Vec<Committed>, HistoryError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        validate(&batch)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HistoryError::Closed);
        }
        if !self.inner.health.is_up() {
            return Err(HistoryError::Unavailable(self.inner.health.reason()));
        }
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        let request = Request {
            pubs: batch,
            reply,
            claim: claim.clone(),
        };
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let unavailable =
            || HistoryError::Unavailable(format!("no commit within {CALL_TIMEOUT:?}"));
        match tokio::time::timeout_at(deadline, self.inner.tx.send(Job::Append(request))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(HistoryError::Closed),
            Err(_) => return Err(unavailable()),
        }
        // The committer answers every request it takes; a dropped sender means it stopped.
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(res) => res.map_err(|_| HistoryError::Closed)?,
            // Still queued: it never will be committed.
            Err(_) if claim.abandon() => Err(unavailable()),
            // Already in a batch being committed: its outcome is the answer.
            Err(_) => answer.await.map_err(|_| HistoryError::Closed)?,
        }
    }

    /// Current top of each stream (result order = input order). A stream without publications
    /// has no row, and its position is an unborn one (see [`unborn`]): reading a position
    /// writes nothing.
    pub async fn positions(&self, streams: &[String]) -> Result<Vec<Position>, HistoryError> {
        let states = self.read(self.inner.store.positions(streams)).await?;
        let now = now_ms();
        Ok(states
            .into_iter()
            .map(|state| match state {
                Some(s) => Position {
                    epoch: s.epoch,
                    offset: s.last_offset,
                },
                None => unborn::position(now),
            })
            .collect())
    }

    /// The publications after `after`, ascending, at most `limit` of them. From an unborn
    /// position, the stream's first publications (its offsets, in the epoch it got).
    pub async fn read_after(
        &self,
        stream: &str,
        after: &Position,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        let store = &self.inner.store;
        let row = self.read(store.stream_state(stream)).await?;
        let state = match (unborn::handed_out_at(&after.epoch), row) {
            (None, None) => return Ok(Recovery::Failed(RecoveryFailure::EpochChanged)),
            (None, Some(row)) if row.state.epoch != after.epoch => {
                return Ok(Recovery::Failed(RecoveryFailure::EpochChanged))
            }
            (None, Some(row)) => row.state,
            (Some(at), row) => {
                let created = row.as_ref().map(|r| r.created_at_ms);
                match unborn::resolve(at, after.offset, created, now_ms(), self.age_ms()) {
                    unborn::Verdict::Failed(f) => return Ok(Recovery::Failed(f)),
                    unborn::Verdict::Nothing => {
                        return Ok(Recovery::Recovered {
                            publications: Vec::new(),
                            more: false,
                        })
                    }
                    // `resolve` answers `Continue` only for a row.
                    unborn::Verdict::Continue => match row {
                        Some(r) => r.state,
                        None => return Ok(Recovery::Failed(RecoveryFailure::EpochChanged)),
                    },
                }
            }
        };
        if after.offset > state.last_offset {
            return Ok(Recovery::Failed(RecoveryFailure::BeyondEnd));
        }
        if after.offset == state.last_offset {
            return Ok(Recovery::Recovered {
                publications: Vec::new(),
                more: false,
            });
        }
        // One row past the limit tells whether more follow; the first row tells whether the
        // next offset is still retained.
        let rows = self
            .read(store.read_rows(stream, after.offset, limit.saturating_add(1)))
            .await?;
        if rows.first().map(|r| r.offset) != Some(after.offset + 1) {
            return Ok(Recovery::Failed(RecoveryFailure::Trimmed));
        }
        let more = rows.len() > limit;
        let publications = rows
            .into_iter()
            .take(limit)
            .map(|r| Stored {
                channel: r.channel,
                payload: Arc::from(r.payload),
                position: Position {
                    epoch: state.epoch.clone(),
                    offset: r.offset,
                },
                published_at_ms: r.published_at_ms,
            })
            .collect();
        Ok(Recovery::Recovered { publications, more })
    }

    /// False while the store is failing; appends are refused until a probe succeeds.
    pub fn is_available(&self) -> bool {
        self.inner.health.is_up()
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

    /// Runs a store read in its turn, with the call timeout. A failure answers this caller
    /// only: the store's availability is the write path's to decide, so that failing or slow
    /// reads (a storm of resumes) cannot stop the publishes.
    async fn read<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, HistoryError> {
        let turn_and_read = async {
            // The semaphore is never closed, so acquiring only waits.
            let _turn = self.inner.reads.acquire().await;
            fut.await
        };
        let reason = match tokio::time::timeout(CALL_TIMEOUT, turn_and_read).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        metrics::read_failed();
        Err(HistoryError::Unavailable(format!(
            "a read failed: {reason}"
        )))
    }

    /// Age retention in milliseconds.
    fn age_ms(&self) -> i64 {
        i64::try_from(self.inner.retention_age.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Concurrent reads allowed on a pool of `max_connections` (at least 2, as the pools are
/// built): all but two, and at least one.
fn read_turns(max_connections: u32) -> usize {
    usize::try_from(max_connections.max(2) - 2)
        .unwrap_or(usize::MAX)
        .max(1)
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

/// Refuses what the store cannot hold, before it can fail a whole batch.
fn validate(batch: &[NewPublication]) -> Result<(), HistoryError> {
    for p in batch {
        let has_nul = p.stream.contains('\0')
            || p.channel.contains('\0')
            || p.payload.contains('\0')
            || p.idempotency_key
                .as_deref()
                .is_some_and(|k| k.contains('\0'));
        if has_nul {
            return Err(HistoryError::Invalid(format!(
                "a publication to stream {:?} contains a NUL character, which the store cannot hold",
                p.stream
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_refused_up_front() {
        let p = NewPublication {
            stream: "s".to_owned(),
            channel: "c".to_owned(),
            payload: "{\"a\":\"\0\"}".to_owned(),
            idempotency_key: None,
        };
        assert!(matches!(validate(&[p]), Err(HistoryError::Invalid(_))));
    }

    #[test]
    fn reads_leave_two_connections_to_the_writes() {
        assert_eq!(read_turns(8), 6);
        assert_eq!(read_turns(3), 1);
        assert_eq!(read_turns(2), 1);
        assert_eq!(read_turns(0), 1, "pools have at least two connections");
    }

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
