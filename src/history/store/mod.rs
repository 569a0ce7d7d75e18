//! The storage backends behind one type: SQLite (embedded, default) or PostgreSQL (shared by
//! several nodes). Backend-specific SQL lives in `sqlite.rs` and `postgres.rs`; the queries
//! both understand the same way are written once here.

mod postgres;
mod sqlite;

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Postgres, Row};

use super::plan::StreamState;
use super::{Committed, HistoryError, NewPublication, StorageConfig};

/// How long a write waits for a lock (SQLite) or a connection (both) before the store counts
/// as unavailable.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Attempts of one batch when PostgreSQL aborts it for a deadlock or serialisation failure.
const COMMIT_ATTEMPTS: usize = 3;

/// A connection pool to one of the backends. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The connection the committer keeps between batches (saves a pool round trip per batch).
pub(crate) enum Writer {
    Sqlite(sqlite::SqliteWriter),
    Postgres(PoolConnection<Postgres>),
}

/// Why a batch was not committed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// The store failed: the batch is rolled back and the store is suspect.
    Store(sqlx::Error),
    /// The batch cannot be stored as it is; the store is fine.
    Rejected(HistoryError),
}

/// Writes that keep the store in shape, as opposed to appends.
#[derive(Debug)]
pub(crate) enum Maintenance {
    /// Delete up to `limit` publications older than `cutoff_ms`, then the rows of the streams
    /// this left without publications.
    TrimAge { cutoff_ms: i64, limit: i64 },
    /// Delete each stream's (by id) publications at or below its offset.
    TrimCount(Vec<(i64, i64)>),
    /// SQLite: make the WAL start over (see `sqlite::rewind_wal`).
    RewindWal,
}

/// A stream's row as read for a position or a resume.
pub(crate) struct StreamRow {
    /// Epoch and last offset.
    pub state: StreamState,
    /// When the row was created (with the stream's first publications).
    pub created_at_ms: i64,
}

/// A publication row read back for recovery.
pub(crate) struct StoredRow {
    pub offset: u64,
    pub channel: String,
    pub payload: String,
    pub published_at_ms: i64,
}

/// Runs the same code against whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

// === Store ===

impl Store {
    /// Connects to the backend named by the URL's scheme.
    pub(crate) async fn connect(cfg: &StorageConfig) -> Result<Store, HistoryError> {
        if cfg.max_connections == 0 {
            return Err(HistoryError::Config(
                "storage.max_connections must be at least 1".to_owned(),
            ));
        }
        if is_postgres(&cfg.url) {
            Ok(Store::Postgres(postgres::connect(cfg).await?))
        } else if cfg.url.starts_with("sqlite:") {
            Ok(Store::Sqlite(sqlite::connect(cfg).await?))
        } else {
            Err(HistoryError::Config(format!(
                "storage.url {} names no supported database; use sqlite://path or \
                 postgres://user@host/database",
                crate::config::redact::url(&cfg.url)
            )))
        }
    }

    /// Brings the schema up to date.
    pub(crate) async fn migrate(&self) -> Result<(), HistoryError> {
        match self {
            Store::Sqlite(p) => sqlite::migrate(p).await,
            Store::Postgres(p) => postgres::migrate(p).await,
        }
    }

    /// A connection for the committer.
    pub(crate) async fn writer(&self) -> Result<Writer, sqlx::Error> {
        Ok(match self {
            Store::Sqlite(p) => Writer::Sqlite(sqlite::SqliteWriter::new(p.acquire().await?)),
            Store::Postgres(p) => Writer::Postgres(p.acquire().await?),
        })
    }

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

    /// True when the backend admits one writer at a time (SQLite): then retention and WAL
    /// rewinds run in the committer, between batches, rather than beside it, where the
    /// committer would wait for them in SQLite's busy handler (sleeps of up to 100 ms each).
    pub(crate) fn single_writer(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Runs maintenance on a pooled connection, beside the committer: what PostgreSQL's
    /// retention does. On SQLite that connection would be a second writer, so the trimmer
    /// hands SQLite's work to the committer instead (`single_writer`).
    pub(crate) async fn maintain(&self, work: &Maintenance) -> Result<u64, sqlx::Error> {
        match self {
            Store::Sqlite(p) => sqlite_maintain(&mut *p.acquire().await?, work).await,
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

    /// Succeeds when the store can take writes again (on SQLite: a real write, and at least
    /// `sqlite_min_free_bytes` free on its filesystem); else says why not.
    pub(crate) async fn probe(&self, sqlite_min_free_bytes: u64) -> Result<(), String> {
        match self {
            Store::Sqlite(p) => sqlite::probe(p, sqlite_min_free_bytes).await,
            Store::Postgres(p) => postgres::probe(p).await.map_err(|e| e.to_string()),
        }
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

// === Writer ===

impl Writer {
    /// Commits one batch, retrying what PostgreSQL asks to retry and, on SQLite, a batch that
    /// collided with another process's (see `sqlite::SqliteWriter`).
    pub(crate) async fn commit(
        &mut self,
        pubs: &[NewPublication],
    ) -> Result<Vec<Committed>, CommitError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = crate::protocol::now_ms();
            let (res, retry) = match self {
                Writer::Sqlite(w) => {
                    let res = sqlite::commit(w, pubs, now).await;
                    // A collision means another process wrote the file: what this connection
                    // knew of the streams is stale. The retry reads them again.
                    let retry =
                        matches!(&res, Err(CommitError::Store(e)) if sqlite::is_conflict(e));
                    if retry {
                        w.forget();
                    }
                    (res, retry)
                }
                Writer::Postgres(c) => {
                    let res = postgres::commit(c, pubs, now).await;
                    let retry =
                        matches!(&res, Err(CommitError::Store(e)) if postgres::is_retryable(e));
                    (res, retry)
                }
            };
            if !retry || attempt == COMMIT_ATTEMPTS {
                return res;
            }
        }
    }

    /// Runs maintenance on the committer's connection; returns the rows deleted.
    pub(crate) async fn maintain(&mut self, work: &Maintenance) -> Result<u64, sqlx::Error> {
        match self {
            Writer::Sqlite(w) => match work {
                // The committer must not go on appending to a row that is gone.
                Maintenance::TrimAge { cutoff_ms, limit } => {
                    let (deleted, removed) = sqlite::trim_age(w.conn(), *cutoff_ms, *limit).await?;
                    w.forget_streams(&removed);
                    super::metrics::streams_removed(removed.len());
                    Ok(deleted)
                }
                _ => sqlite_maintain(w.conn(), work).await,
            },
            Writer::Postgres(c) => postgres_maintain(c, work).await,
        }
    }

    /// Drops the connection for good: after an error its state is unknown.
    pub(crate) fn discard(self) {
        match self {
            Writer::Sqlite(w) => drop(w.detach()),
            Writer::Postgres(c) => drop(c.detach()),
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

async fn sqlite_maintain(
    conn: &mut sqlx::SqliteConnection,
    work: &Maintenance,
) -> Result<u64, sqlx::Error> {
    match work {
        // Only the committer's connection may remove streams (see `Writer::maintain`); this
        // pooled path is not used for SQLite, whose maintenance runs in the committer.
        Maintenance::TrimAge { cutoff_ms, limit } => {
            let (deleted, removed) = sqlite::trim_age(conn, *cutoff_ms, *limit).await?;
            super::metrics::streams_removed(removed.len());
            Ok(deleted)
        }
        Maintenance::TrimCount(streams) => sqlite::trim_count(conn, streams).await,
        Maintenance::RewindWal => sqlite::rewind_wal(conn).await,
    }
}

async fn postgres_maintain(
    conn: &mut sqlx::PgConnection,
    work: &Maintenance,
) -> Result<u64, sqlx::Error> {
    match work {
        Maintenance::TrimAge { cutoff_ms, limit } => {
            let (deleted, removed) = postgres::trim_age(conn, *cutoff_ms, *limit).await?;
            super::metrics::streams_removed(removed);
            Ok(deleted)
        }
        Maintenance::TrimCount(streams) => postgres::trim_count(conn, streams).await,
        // PostgreSQL manages its own WAL.
        Maintenance::RewindWal => Ok(0),
    }
}

// === CommitError ===

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        CommitError::Store(e)
    }
}

/// Bytes the embedded SQLite holds from the heap (0 when only PostgreSQL is used).
pub(crate) fn sqlite_memory_used() -> u64 {
    u64::try_from(sqlite::memory_used()).unwrap_or(0)
}

/// True when the URL names a PostgreSQL database.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_postgres_urls() {
        assert!(is_postgres("postgres://x/y"));
        assert!(is_postgres("postgresql://x/y"));
        assert!(!is_postgres("sqlite://data/gateway.db"));
    }
}

// After `on_pool!`, which it uses.
mod chain_state;
pub use chain_state::StoredChain;
