//! Retention: deletes publications past the age limit and beyond the per-stream count, in
//! small chunks so that no single delete holds up appends for long. On SQLite, which has one
//! writer, each chunk runs in the committer between two batches; on PostgreSQL, beside it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::committer::{self, Job};
use super::health::Health;
use super::metrics;
use super::store::{Maintenance, Store};
use super::{HistoryConfig, HistoryError};

/// Rows per age-retention delete.
const AGE_CHUNK: i64 = 250;
/// Streams per count-retention delete.
const COUNT_CHUNK: i64 = 200;
/// Pause between chunks, letting appends through.
const PAUSE: Duration = Duration::from_millis(5);

/// Trims every `cfg.trim_interval` until `shutdown`.
pub(crate) async fn run(
    store: Store,
    committer: mpsc::Sender<Job>,
    cfg: HistoryConfig,
    health: std::sync::Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.trim_interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if !health.is_up() {
            continue;
        }
        match trim_once(&store, &committer, &cfg, &shutdown).await {
            Ok((by_age, by_count)) => {
                debug!(by_age, by_count, "History trimmed.");
            }
            // The committer is gone: the history is closing.
            Err(HistoryError::Closed) => return,
            Err(e) => warn!(error = %e, "History trim failed; retrying at the next interval."),
        }
    }
}

/// One retention pass; returns the rows deleted by age and by count.
async fn trim_once(
    store: &Store,
    committer: &mpsc::Sender<Job>,
    cfg: &HistoryConfig,
    shutdown: &CancellationToken,
) -> Result<(u64, u64), HistoryError> {
    // A run goes on while there is work, for at most one interval; then the next run goes on
    // after a pause of one interval. So retention keeps up with appends as long as half the
    // time suffices, whatever the rate: a fixed number of chunks per run would cap the rate it
    // trims at, and a faster stream of appends would grow the store without bound.
    let deadline = tokio::time::Instant::now() + cfg.trim_interval;
    let out_of_time = || tokio::time::Instant::now() >= deadline;
    let age_ms = i64::try_from(cfg.retention_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = crate::protocol::now_ms().saturating_sub(age_ms);
    let mut by_age = 0;
    loop {
        let work = Maintenance::TrimAge {
            cutoff_ms: cutoff,
            limit: AGE_CHUNK,
        };
        let n = run_chunk(store, committer, work).await?;
        by_age += n;
        metrics::trimmed(n);
        if n < AGE_CHUNK as u64 || shutdown.is_cancelled() || out_of_time() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    // At least one chunk per run, so that an age backlog cannot starve count retention.
    let mut by_count = 0;
    loop {
        let streams = store
            .trim_candidates(cfg.retention_count, COUNT_CHUNK)
            .await
            .map_err(|e| {
                HistoryError::Unavailable(format!("finding streams over their count failed: {e}"))
            })?;
        if streams.is_empty() {
            break;
        }
        let full = streams.len() as i64 == COUNT_CHUNK;
        let n = run_chunk(store, committer, Maintenance::TrimCount(streams)).await?;
        by_count += n;
        metrics::trimmed(n);
        if !full || shutdown.is_cancelled() || out_of_time() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok((by_age, by_count))
}

/// Runs one chunk where it belongs: in the committer when the store has one writer (SQLite),
/// else on the pool.
async fn run_chunk(
    store: &Store,
    committer: &mpsc::Sender<Job>,
    work: Maintenance,
) -> Result<u64, HistoryError> {
    if store.single_writer() {
        committer::maintain(committer, work).await
    } else {
        store
            .maintain(&work)
            .await
            .map_err(|e| HistoryError::Unavailable(format!("{} failed: {e}", work.what())))
    }
}
