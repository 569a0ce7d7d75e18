//! The storage backends behind one type: SQLite (embedded, default) or PostgreSQL (shared by
//! several nodes). This file owns connecting, migrating, probing and closing the store, and
//! the committer's connection ([`Writer`]) with its commit retries. Backend-specific SQL lives
//! in `sqlite` and `postgres`; what both understand the same way is written once, in `reads`
//! (positions, replays), `maintenance` (retention, WAL upkeep) and `chain_state`.

/// Runs the same code against whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

// The macro comes first: textual scope makes it visible to the submodules declared after it.
mod chain_state;
mod maintenance;
mod postgres;
mod reads;
mod sqlite;

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Postgres;

use super::{Committed, HistoryError, NewPublication, StorageConfig};

pub use chain_state::StoredChain;
pub(crate) use maintenance::Maintenance;

/// How long a write waits for a lock (SQLite) or a connection (both) before the store counts
/// as unavailable.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Attempts of one batch when PostgreSQL aborts it for a deadlock or serialisation failure.
const COMMIT_ATTEMPTS: usize = 3;

/// A connection pool to one of the backends. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Store {
    /// The embedded database: one writer at a time.
    Sqlite(SqlitePool),
    /// A server shared by several nodes: its row locks order their writers.
    Postgres(PgPool),
}

/// The connection the committer keeps between batches (saves a pool round trip per batch).
pub(crate) enum Writer {
    /// With what it knows of the streams it committed to.
    Sqlite(sqlite::SqliteWriter),
    /// A plain connection: offsets are read under the rows' locks on every batch.
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

    /// Drops the connection for good: after an error its state is unknown.
    pub(crate) fn discard(self) {
        match self {
            Writer::Sqlite(w) => drop(w.detach()),
            Writer::Postgres(c) => drop(c.detach()),
        }
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
