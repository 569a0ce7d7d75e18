//! The embedded SQLite backend: one file in WAL mode, written by one transaction at a time
//! (`BEGIN IMMEDIATE` takes the database's write lock up front, so a batch never fails
//! half-way on a lock upgrade). This file owns opening the file (its pragmas), the schema
//! and the probe of whether it takes writes; `writer` commits the batches and `maintenance`
//! holds retention and the WAL's upkeep.

mod maintenance;
mod writer;

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;

use super::BUSY_TIMEOUT;
use crate::history::{HistoryError, StorageConfig};

pub(crate) use maintenance::{checkpoint, rewind_wal, trim_age, trim_count, WAL_RESTART_FRAMES};
pub(crate) use writer::{commit, is_conflict, SqliteWriter};

/// Rows per multi-row statement: well under SQLite's 32766 bound variables.
const CHUNK: usize = 500;

/// WAL pages (4 KiB) past which a commit checkpoints itself: the backstop of `checkpoint`.
const WAL_AUTOCHECKPOINT: u32 = 16384;

/// Opens (creating the directory and file if needed) the database at `cfg.url`.
pub(crate) async fn connect(cfg: &StorageConfig) -> Result<SqlitePool, HistoryError> {
    let opts = SqliteConnectOptions::from_str(&cfg.url)
        .map_err(|e| {
            HistoryError::Config(format!(
                "storage.url is not a valid SQLite URL ({e}); use e.g. sqlite://data/gateway.db"
            ))
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode: a commit survives a crash of the process (not of the machine:
        // a power cut may lose the last transactions, whose offsets would then be handed out
        // again in the same epoch). The trade buys commits without an fsync each.
        .synchronous(SqliteSynchronous::Normal)
        // Index pages of recent streams stay cached rather than re-read each batch.
        .pragma(
            "cache_size",
            format!("-{}", u64::from(cfg.sqlite_cache_mib) * 1024),
        )
        // The caches of all connections together: without it, each pool connection that ever
        // ran a query keeps its own cache full, and RSS creeps up for as long as new
        // connections get used (docs/benchmarks-log.md, "Memory over time"). The limit is
        // process-wide; setting it on every connection sets the same value.
        .pragma(
            "soft_heap_limit",
            (u64::from(cfg.sqlite_cache_mib) * 2 * 1024 * 1024).to_string(),
        )
        // Checkpoints (copying the WAL into the database file, then an fsync) run on their own
        // connection (`checkpoint`), beside the committer rather than inside its commits.
        // This bound only applies if they fall behind: then the commit that crosses it
        // checkpoints, as SQLite does by default at 1000 pages.
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT.to_string())
        // A WAL that a burst grew past this is cut back to it when it starts over.
        .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false);
    let file = opts.get_filename().to_path_buf();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            HistoryError::Config(format!(
                "cannot create the directory {} for the history database: {e}; check the \
                 path in storage.url and the gateway's file permissions",
                dir.display()
            ))
        })?;
    }
    SqlitePoolOptions::new()
        .max_connections(cfg.max_connections.max(2))
        .acquire_timeout(BUSY_TIMEOUT * 2)
        .connect_with(opts)
        .await
        .map_err(|e| {
            HistoryError::Unavailable(format!(
                "cannot open the SQLite database {}: {e}",
                file.display()
            ))
        })
}

/// Runs the embedded migrations.
pub(crate) async fn migrate(pool: &SqlitePool) -> Result<(), HistoryError> {
    sqlx::migrate!("./migrations/sqlite")
        .run(pool)
        .await
        .map_err(|e| HistoryError::Migration(e.to_string()))
}

/// Succeeds only if the database can take writes: the filesystem holding it has at least
/// `min_free_bytes` available, and a real write commits. A probe that wrote nothing (or only
/// reused room the WAL file already has) would pass on a full disk while every batch fails,
/// and readiness would flap; a `SELECT 1` would even pass while another process holds the
/// write lock. Answers why not, for the operators and the refused publishers.
pub(crate) async fn probe(pool: &SqlitePool, min_free_bytes: u64) -> Result<(), String> {
    let file = pool.connect_options().get_filename().to_path_buf();
    if let Some(free) = free_bytes(&file) {
        if free < min_free_bytes {
            return Err(format!(
                "only {} MiB free on the filesystem of {} (storage.sqlite_min_free_mib = {}); \
                 free some space there",
                free / (1024 * 1024),
                file.display(),
                min_free_bytes / (1024 * 1024)
            ));
        }
    }
    let write = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT OR REPLACE INTO store_probe (id, at_ms) VALUES (1, $1)")
            .bind(crate::protocol::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    };
    write.await.map_err(|e: sqlx::Error| e.to_string())
}

/// Bytes available to the gateway on the filesystem holding `file` (its directory, since the
/// file may be gone); `None` where that cannot be told.
fn free_bytes(file: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// Bytes SQLite holds from the heap in this process (page caches, statements, schemas), for
/// all connections together.
pub(crate) fn memory_used() -> i64 {
    // SAFETY: sqlite3_memory_used takes no arguments and only reads SQLite's own counter
    // under its mutex; it is safe from any thread, before or after any connection opens.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}
