//! The embedded SQLite backend: one file in WAL mode, written by one transaction at a time
//! (`BEGIN IMMEDIATE` takes the database's write lock up front, so a batch never fails
//! half-way on a lock upgrade).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::{CommitError, BUSY_TIMEOUT};
use crate::history::plan::{self, Existing, StreamState};
use crate::history::{Committed, HistoryError, NewPublication, StorageConfig};

/// Rows per multi-row statement: well under SQLite's 32766 bound variables.
const CHUNK: usize = 500;

/// WAL pages (4 KiB) past which a commit checkpoints itself: the backstop of `checkpoint`.
const WAL_AUTOCHECKPOINT: u32 = 16384;

/// Opens (creating the directory and file if needed) the database at `cfg.url`.
pub(super) async fn connect(cfg: &StorageConfig) -> Result<SqlitePool, HistoryError> {
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
        // connections get used (BENCHMARKS.md, "Memory over time"). The limit is
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
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), HistoryError> {
    sqlx::migrate!("./migrations/sqlite")
        .run(pool)
        .await
        .map_err(|e| HistoryError::Migration(e.to_string()))
}

/// Appends one batch in one transaction.
pub(super) async fn commit(
    conn: &mut SqliteConnection,
    pubs: &[NewPublication],
    now_ms: i64,
) -> Result<Vec<Committed>, CommitError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let streams = plan::sorted_streams(pubs);

    // Existing streams first (the usual case: one indexed read), then the missing ones.
    let mut states = HashMap::with_capacity(streams.len());
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(streams.len());
    for chunk in streams.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, stream, epoch, last_offset FROM streams WHERE stream IN (",
        );
        let mut sep = qb.separated(", ");
        for s in chunk {
            sep.push_bind(*s);
        }
        qb.push(")");
        for row in qb.build().persistent(false).fetch_all(&mut *tx).await? {
            read_stream(&row, &mut ids, &mut states)?;
        }
    }
    let missing: Vec<&str> = streams
        .iter()
        .copied()
        .filter(|s| !ids.contains_key(*s))
        .collect();
    for chunk in missing.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO streams (stream, epoch, last_offset, trim_floor, created_at_ms) ",
        );
        qb.push_values(chunk, |mut b, s| {
            b.push_bind(*s)
                .push_bind(plan::new_epoch())
                .push_bind(0_i64)
                .push_bind(0_i64)
                .push_bind(now_ms);
        });
        // `positions` (on another connection) cannot have created one meanwhile: this
        // transaction holds the write lock.
        qb.push(" RETURNING id, stream, epoch, last_offset");
        for row in qb.build().persistent(false).fetch_all(&mut *tx).await? {
            read_stream(&row, &mut ids, &mut states)?;
        }
    }

    let mut existing = HashMap::new();
    for chunk in plan::keyed(pubs).chunks(CHUNK) {
        // CROSS JOIN keeps the keys as the outer loop: each is one search of the unique
        // index, where `(stream_id, key) IN (VALUES ...)` scanned the whole index.
        let mut qb = QueryBuilder::<Sqlite>::new("WITH k(s, key) AS (");
        qb.push_values(chunk, |mut b, (s, k)| {
            b.push_bind(ids.get(*s).copied().unwrap_or(-1))
                .push_bind(*k);
        });
        qb.push(
            ") SELECT k.s, p.idempotency_key, p.stream_offset, p.published_at_ms, \
             p.channel, p.payload FROM k CROSS JOIN publications p \
             ON p.stream_id = k.s AND p.idempotency_key = k.key \
             WHERE p.idempotency_key IS NOT NULL",
        );
        let rows = qb.build().persistent(false).fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            continue;
        }
        let names: HashMap<i64, &str> = ids.iter().map(|(s, id)| (*id, s.as_str())).collect();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let offset: i64 = row.try_get(2)?;
            let stream = names.get(&id).copied().unwrap_or_default().to_owned();
            existing.insert(
                (stream, row.try_get::<String, _>(1)?),
                Existing {
                    offset: u64::try_from(offset).unwrap_or(0),
                    published_at_ms: row.try_get(3)?,
                    channel: row.try_get(4)?,
                    payload: row.try_get(5)?,
                },
            );
        }
    }

    let planned = plan::plan(pubs, &states, &existing, now_ms).map_err(CommitError::Rejected)?;

    for chunk in planned.fresh.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            // OR ROLLBACK: a conflict (impossible under the write lock, after the key lookup)
            // fails the whole batch, so SQLite needs no statement journal for the multi-row
            // insert: that journal cost ~5 % of the gateway's CPU under S1 load.
            "INSERT OR ROLLBACK INTO publications \
             (stream_id, stream_offset, channel, payload, idempotency_key, published_at_ms) ",
        );
        qb.push_values(chunk, |mut b, &i| {
            let c = &planned.results[i];
            b.push_bind(ids.get(&c.stream).copied().unwrap_or(-1))
                .push_bind(offset_i64(c.position.offset))
                .push_bind(c.channel.as_str())
                .push_bind(&*c.payload)
                .push_bind(pubs[i].idempotency_key.as_deref())
                .push_bind(c.published_at_ms);
        });
        qb.build().persistent(false).execute(&mut *tx).await?;
    }

    for chunk in planned.tops.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new("WITH v(id, top) AS (");
        qb.push_values(chunk, |mut b, (s, top)| {
            b.push_bind(ids.get(s).copied().unwrap_or(-1))
                .push_bind(offset_i64(*top));
        });
        qb.push(
            ") UPDATE OR ROLLBACK streams SET last_offset = v.top FROM v WHERE streams.id = v.id",
        );
        qb.build().persistent(false).execute(&mut *tx).await?;
    }

    tx.commit().await?;
    Ok(planned.results)
}

/// Reads one `id, stream, epoch, last_offset` row into the batch's maps.
fn read_stream(
    row: &SqliteRow,
    ids: &mut HashMap<String, i64>,
    states: &mut HashMap<String, StreamState>,
) -> Result<(), sqlx::Error> {
    let stream: String = row.try_get(1)?;
    let last: i64 = row.try_get(3)?;
    ids.insert(stream.clone(), row.try_get(0)?);
    states.insert(
        stream,
        StreamState {
            epoch: row.try_get(2)?,
            last_offset: u64::try_from(last).unwrap_or(0),
        },
    );
    Ok(())
}

/// Deletes up to `limit` publications older than `cutoff_ms`; returns how many.
pub(super) async fn trim_age(
    conn: &mut SqliteConnection,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    // Rowids grow in commit order, and so does `published_at_ms` (one writer, one clock):
    // the old publications are a prefix of the table, found without an index on the time.
    // Only the first `limit` rows are looked at; a row that is not old ends the prefix.
    let done = sqlx::query(
        "DELETE FROM publications WHERE rowid IN \
         (SELECT rowid FROM publications ORDER BY rowid LIMIT $2) AND published_at_ms < $1",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes, per stream, the publications at or below `upto` and records the new floor.
pub(super) async fn trim_count(
    conn: &mut SqliteConnection,
    streams: &[(i64, i64)],
) -> Result<u64, sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut deleted = 0;
    for (stream, upto) in streams {
        deleted +=
            sqlx::query("DELETE FROM publications WHERE stream_id = $1 AND stream_offset <= $2")
                .bind(stream)
                .bind(upto)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("UPDATE streams SET trim_floor = $2 WHERE id = $1 AND trim_floor < $2")
            .bind(stream)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// WAL frames (4 KiB pages) past which the WAL is rewound (`rewind_wal`).
pub(super) const WAL_RESTART_FRAMES: i64 = 8192;

/// Copies what the WAL holds into the database file without waiting for (or blocking) the
/// committer (PASSIVE); returns the frames the WAL holds.
pub(super) async fn checkpoint(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
    Ok(frames)
}

/// Makes the WAL start over. Under a steady write load PASSIVE checkpoints alone never do:
/// SQLite starts the WAL file over only when a writer finds every frame copied, and the
/// committer has always appended a few more by then (a 10-minute run at 5,000 msgs/s left a
/// 627 MB WAL and p99 latencies of 0.5 s). A RESTART checkpoint copies the frames left and
/// makes the next transaction start the file over. It runs on the committer's connection,
/// between two batches, so it never waits for a writer; it waits at most `RESTART_WAIT` for
/// readers (a resume reading history) and is tried again at the next checkpoint if it gives up.
pub(super) async fn rewind_wal(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        RESTART_WAIT.as_millis()
    ))
    .execute(&mut *conn)
    .await?;
    let restarted = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(&mut *conn)
        .await;
    // An error here fails the job, and the committer drops the connection: it never keeps one
    // that gives up on locks after milliseconds.
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        BUSY_TIMEOUT.as_millis()
    ))
    .execute(&mut *conn)
    .await?;
    restarted?;
    Ok(0)
}

/// Longest a RESTART checkpoint waits for readers.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// Succeeds only if the database can be written: a `SELECT 1` would pass while another
/// process holds the write lock.
pub(super) async fn probe(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    tx.rollback().await
}

/// Bytes SQLite holds from the heap in this process (page caches, statements, schemas), for
/// all connections together.
pub(crate) fn memory_used() -> i64 {
    // SAFETY: sqlite3_memory_used takes no arguments and only reads SQLite's own counter
    // under its mutex; it is safe from any thread, before or after any connection opens.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// Offsets are below 2^53, so they always fit.
fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
