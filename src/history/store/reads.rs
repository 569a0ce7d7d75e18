//! The reads of the history, the same SQL on both backends: stream rows for positions and
//! resumes, publication rows for replays. They run on the pool, beside the committer, and
//! write nothing.

use sqlx::Row;

use super::Store;
use crate::history::plan::StreamState;

/// A stream's row as read for a position or a resume.
pub(crate) struct StreamRow {
    /// Epoch and last offset.
    pub state: StreamState,
    /// When the row was created (with the stream's first publications).
    pub created_at_ms: i64,
}

/// A publication row read back for recovery.
pub(crate) struct StoredRow {
    /// Offset in the stream's current epoch.
    pub offset: u64,
    /// Channel the publication was made on.
    pub channel: String,
    /// JSON payload.
    pub payload: String,
    /// Commit time, milliseconds since the Unix epoch.
    pub published_at_ms: i64,
}

// === Store ===

impl Store {
    /// Epoch and last offset of each stream that has a row (`None`: no row); result order =
    /// input order. Writes nothing.
    pub(crate) async fn positions(
        &self,
        streams: &[String],
    ) -> Result<Vec<Option<StreamState>>, sqlx::Error> {
        let mut out = Vec::with_capacity(streams.len());
        for s in streams {
            out.push(self.stream_state(s).await?.map(|row| row.state));
        }
        Ok(out)
    }

    /// A stream's row, if it has one.
    pub(crate) async fn stream_state(
        &self,
        stream: &str,
    ) -> Result<Option<StreamRow>, sqlx::Error> {
        let row = on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT epoch, last_offset, created_at_ms FROM streams WHERE stream = $1",
            )
            .bind(stream)
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Some((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get::<i64, _>(2)?,
                )),
                None => None,
            }
        });
        Ok(row.map(|(epoch, last, created_at_ms)| StreamRow {
            state: StreamState {
                epoch,
                last_offset: u64::try_from(last).unwrap_or(0),
            },
            created_at_ms,
        }))
    }

    /// Up to `limit` publications of a stream with offset > `after`, ascending.
    pub(crate) async fn read_rows(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRow>, sqlx::Error> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT stream_offset, channel, payload, published_at_ms FROM publications \
                 WHERE stream_id = (SELECT id FROM streams WHERE stream = $1) \
                 AND stream_offset > $2 ORDER BY stream_offset LIMIT $3",
            )
            .bind(stream)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(StoredRow {
                        offset: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                        channel: r.try_get(1)?,
                        payload: r.try_get(2)?,
                        published_at_ms: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }
}
