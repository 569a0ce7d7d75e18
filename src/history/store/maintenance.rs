//! Maintenance of the store: the retention deletes and the WAL's upkeep, and where each runs.
//! On SQLite, which admits one writer, they run on the committer's connection between two
//! batches; on PostgreSQL, on a pooled connection beside the committer.

use sqlx::Row;

use super::{postgres, sqlite, Store, Writer};
use crate::history::metrics;

/// Writes that keep the store in shape, as opposed to appends.
#[derive(Debug)]
pub(crate) enum Maintenance {
    /// Delete up to `limit` publications older than `cutoff_ms`, then the rows of the streams
    /// this left without publications.
    TrimAge {
        /// Publications committed before this wall clock (ms since the Unix epoch) go.
        cutoff_ms: i64,
        /// Most publications deleted by this chunk.
        limit: i64,
    },
    /// Delete each stream's publications at or below its offset: `(stream id, offset)`.
    TrimCount(Vec<(i64, i64)>),
    /// SQLite: make the WAL start over (see `sqlite::rewind_wal`).
    RewindWal,
}

// === Store ===

impl Store {
    /// True when the backend admits one writer at a time (SQLite): then retention and WAL
    /// rewinds run in the committer, between batches, rather than beside it, where the
    /// committer would wait for them in SQLite's busy handler (sleeps of up to 100 ms each).
    pub(crate) fn single_writer(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Runs maintenance on a pooled connection, beside the committer: what PostgreSQL's
    /// retention does. On SQLite that connection would be a second writer, so SQLite's
    /// maintenance only runs in the committer (`single_writer`, `Writer::maintain`).
    pub(crate) async fn maintain(&self, work: &Maintenance) -> Result<u64, sqlx::Error> {
        match self {
            Store::Sqlite(_) => Err(sqlx::Error::Configuration(
                "SQLite's maintenance runs in the committer, its only writer".into(),
            )),
            Store::Postgres(p) => postgres_maintain(&mut *p.acquire().await?, work).await,
        }
    }

    /// Up to `limit` streams (by id) holding more than `keep` publications since their last
    /// count trim, with the offset up to which they must be trimmed.
    pub(crate) async fn trim_candidates(
        &self,
        keep: u64,
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, last_offset - $1 FROM streams \
                 WHERE last_offset - $1 > trim_floor LIMIT $2",
            )
            .bind(keep)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect()
        })
    }

    /// Copies the SQLite WAL into the database file without blocking the committer and
    /// returns whether the WAL has grown past the point where it must be rewound
    /// ([`Maintenance::RewindWal`]); PostgreSQL checkpoints by itself.
    pub(crate) async fn checkpoint(&self) -> Result<bool, sqlx::Error> {
        match self {
            Store::Sqlite(p) => Ok(sqlite::checkpoint(p).await? > sqlite::WAL_RESTART_FRAMES),
            Store::Postgres(_) => Ok(false),
        }
    }
}

// === Writer ===

impl Writer {
    /// Runs maintenance on the committer's connection; returns the rows deleted.
    pub(crate) async fn maintain(&mut self, work: &Maintenance) -> Result<u64, sqlx::Error> {
        match self {
            Writer::Sqlite(w) => match work {
                // The committer must not go on appending to a row that is gone.
                Maintenance::TrimAge { cutoff_ms, limit } => {
                    let (deleted, removed) = sqlite::trim_age(w.conn(), *cutoff_ms, *limit).await?;
                    w.forget_streams(&removed);
                    metrics::streams_removed(removed.len());
                    Ok(deleted)
                }
                Maintenance::TrimCount(streams) => sqlite::trim_count(w.conn(), streams).await,
                Maintenance::RewindWal => sqlite::rewind_wal(w.conn()).await,
            },
            Writer::Postgres(c) => postgres_maintain(c, work).await,
        }
    }
}

// === Maintenance ===

impl Maintenance {
    /// What it is, for logs and errors.
    pub(crate) fn what(&self) -> &'static str {
        match self {
            Maintenance::TrimAge { .. } => "age retention",
            Maintenance::TrimCount(_) => "count retention",
            Maintenance::RewindWal => "the WAL rewind",
        }
    }
}

async fn postgres_maintain(
    conn: &mut sqlx::PgConnection,
    work: &Maintenance,
) -> Result<u64, sqlx::Error> {
    match work {
        Maintenance::TrimAge { cutoff_ms, limit } => {
            let (deleted, removed) = postgres::trim_age(conn, *cutoff_ms, *limit).await?;
            metrics::streams_removed(removed);
            Ok(deleted)
        }
        Maintenance::TrimCount(streams) => postgres::trim_count(conn, streams).await,
        // PostgreSQL manages its own WAL.
        Maintenance::RewindWal => Ok(0),
    }
}
