//! The reader side of the handle: stream positions and resumes. Reads go to the pool beside
//! the committer, in turns that leave two connections to the writes, and never write: the
//! position of a stream without a row is an unborn one ([`super::unborn`]). A failed read
//! fails its caller alone; the store's availability is the write path's to decide.

use std::sync::Arc;

use crate::protocol::now_ms;

use super::{
    metrics, unborn, History, HistoryError, Position, Recovery, RecoveryFailure, Stored,
    CALL_TIMEOUT,
};

impl History {
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
pub(super) fn read_turns(max_connections: u32) -> usize {
    usize::try_from(max_connections.max(2) - 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_leave_two_connections_to_the_writes() {
        assert_eq!(read_turns(8), 6);
        assert_eq!(read_turns(3), 1);
        assert_eq!(read_turns(2), 1);
        assert_eq!(read_turns(0), 1, "pools have at least two connections");
    }
}
