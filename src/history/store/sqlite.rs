//! The embedded SQLite backend: one file in WAL mode, written by one transaction at a time
//! (`BEGIN IMMEDIATE` takes the database's write lock up front, so a batch never fails
//! half-way on a lock upgrade).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
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
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), HistoryError> {
    sqlx::migrate!("./migrations/sqlite")
        .run(pool)
        .await
        .map_err(|e| HistoryError::Migration(e.to_string()))
}

/// The committer's connection, and the streams it has committed to.
pub(crate) struct SqliteWriter {
    conn: PoolConnection<Sqlite>,
    known: KnownStreams,
}

/// Id, epoch and last offset of the streams this connection has committed to. The committer's
/// connection is the only writer of `streams` (it creates the rows with their first
/// publications; SQLite's retention, which removes the rows it leaves empty, runs on it too and
/// forgets them here; reads write nothing), so what it committed is what the table holds: a batch
/// whose streams are all known skips the read and is written, committed included, in one
/// round trip to SQLite's thread. The map dies with the connection, which the committer drops
/// after any error. Were a second process writing the same file regardless (an old and a new
/// gateway overlapping on one volume), its offsets would collide with the ones handed out from
/// here on the publications' primary key: the batch rolls back, and `Writer::commit` forgets
/// what was known and retries, reading the rows again, rather than reuse a position.
#[derive(Default)]
struct KnownStreams(HashMap<String, Known>);

struct Known {
    id: i64,
    state: StreamState,
}

/// Streams remembered at most: ~150 bytes each. Past it the map starts over.
const KNOWN_STREAMS: usize = 100_000;

impl SqliteWriter {
    pub(super) fn new(conn: PoolConnection<Sqlite>) -> SqliteWriter {
        SqliteWriter {
            conn,
            known: KnownStreams::default(),
        }
    }

    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    pub(super) fn detach(self) -> SqliteConnection {
        self.conn.detach()
    }

    /// Forgets streams whose rows retention removed: their next publication creates a new row
    /// (a new id and epoch).
    pub(super) fn forget_streams(&mut self, streams: &[String]) {
        for s in streams {
            self.known.0.remove(s);
        }
    }

    /// Forgets the known streams, after a collision. Every write of a batch is `OR ROLLBACK`,
    /// so the collision has ended the transaction already.
    pub(super) fn forget(&mut self) {
        self.known.0.clear();
    }
}

/// True for a uniqueness violation: under the write lock, after the key lookup, only a stale
/// `KnownStreams` can cause one.
pub(super) fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Appends one batch in one transaction: `BEGIN IMMEDIATE` (the write lock), reading the
/// streams not known yet and the stored idempotency keys, then the inserts, the new last
/// offsets and `COMMIT` sent together. A failure leaves the transaction to the connection's
/// end: the committer drops the connection after any store error.
pub(super) async fn commit(
    w: &mut SqliteWriter,
    pubs: &[NewPublication],
    now_ms: i64,
) -> Result<Vec<Committed>, CommitError> {
    let streams = plan::sorted_streams(pubs);
    let keyed = plan::keyed(pubs);
    let mut states = HashMap::with_capacity(streams.len());
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(streams.len());
    let mut unknown = Vec::new();
    for s in streams {
        match w.known.0.get(s) {
            Some(k) => {
                ids.insert(s.to_owned(), k.id);
                states.insert(s.to_owned(), k.state.clone());
            }
            None => unknown.push(s),
        }
    }

    let mut existing = HashMap::new();
    let open = !unknown.is_empty() || !keyed.is_empty();
    if open {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *w.conn).await?;
        read_streams(&mut w.conn, &unknown, now_ms, &mut ids, &mut states).await?;
        read_keys(&mut w.conn, &keyed, &ids, &mut existing).await?;
    }

    let planned = match plan::plan(pubs, &states, &existing, now_ms) {
        Ok(p) => p,
        Err(e) => {
            if open {
                sqlx::query("ROLLBACK").execute(&mut *w.conn).await?;
            }
            return Err(CommitError::Rejected(e));
        }
    };

    let mut qb = QueryBuilder::<Sqlite>::new(if open { "" } else { "BEGIN IMMEDIATE; " });
    for chunk in planned.fresh.chunks(CHUNK) {
        // OR ROLLBACK: a conflict (impossible under the write lock, after the key lookup)
        // fails the whole batch, so SQLite needs no statement journal for the multi-row
        // insert: that journal cost ~5 % of the gateway's CPU under S1 load.
        qb.push(
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
        qb.push("; ");
    }
    for chunk in planned.tops.chunks(CHUNK) {
        qb.push("WITH v(id, top) AS (");
        qb.push_values(chunk, |mut b, (s, top)| {
            b.push_bind(ids.get(s).copied().unwrap_or(-1))
                .push_bind(offset_i64(*top));
        });
        qb.push(
            ") UPDATE OR ROLLBACK streams SET last_offset = v.top FROM v WHERE streams.id = v.id; ",
        );
    }
    qb.push("COMMIT");
    qb.build().persistent(false).execute(&mut *w.conn).await?;

    w.known.remember(ids, states, &planned.tops);
    Ok(planned.results)
}

impl KnownStreams {
    /// Records the batch's streams as committed.
    fn remember(
        &mut self,
        ids: HashMap<String, i64>,
        mut states: HashMap<String, StreamState>,
        tops: &[(String, u64)],
    ) {
        for (s, top) in tops {
            if let Some(st) = states.get_mut(s) {
                st.last_offset = *top;
            }
        }
        if self.0.len() + ids.len() > KNOWN_STREAMS {
            self.0.clear();
        }
        for (s, id) in ids {
            if let Some(state) = states.remove(&s) {
                self.0.insert(s, Known { id, state });
            }
        }
    }
}

/// Reads (creating the missing ones) the rows of `streams` into the batch's maps; runs under
/// the write lock.
async fn read_streams(
    conn: &mut SqliteConnection,
    streams: &[&str],
    now_ms: i64,
    ids: &mut HashMap<String, i64>,
    states: &mut HashMap<String, StreamState>,
) -> Result<(), sqlx::Error> {
    // Existing streams first (the usual case: one indexed read), then the missing ones.
    for chunk in streams.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, stream, epoch, last_offset FROM streams WHERE stream IN (",
        );
        let mut sep = qb.separated(", ");
        for s in chunk {
            sep.push_bind(*s);
        }
        qb.push(")");
        for row in qb.build().persistent(false).fetch_all(&mut *conn).await? {
            read_stream(&row, ids, states)?;
        }
    }
    let missing: Vec<&str> = streams
        .iter()
        .copied()
        .filter(|s| !ids.contains_key(*s))
        .collect();
    for chunk in missing.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT OR ROLLBACK INTO streams \
             (stream, epoch, last_offset, trim_floor, created_at_ms) ",
        );
        qb.push_values(chunk, |mut b, s| {
            b.push_bind(*s)
                .push_bind(plan::new_epoch())
                .push_bind(0_i64)
                .push_bind(0_i64)
                .push_bind(now_ms);
        });
        // Nothing else creates stream rows in this process, and another process cannot
        // meanwhile: this transaction holds the write lock.
        qb.push(" RETURNING id, stream, epoch, last_offset");
        for row in qb.build().persistent(false).fetch_all(&mut *conn).await? {
            read_stream(&row, ids, states)?;
        }
    }
    Ok(())
}

/// Reads the publications already stored under the batch's idempotency keys.
async fn read_keys(
    conn: &mut SqliteConnection,
    keyed: &[(&str, &str)],
    ids: &HashMap<String, i64>,
    existing: &mut HashMap<(String, String), Existing>,
) -> Result<(), sqlx::Error> {
    for chunk in keyed.chunks(CHUNK) {
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
        let rows = qb.build().persistent(false).fetch_all(&mut *conn).await?;
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
    Ok(())
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

/// Deletes up to `limit` publications older than `cutoff_ms`, then the rows of the streams
/// this left without publications; returns how many publications, and the streams removed.
/// Runs on the committer's connection, which must forget the removed streams.
pub(super) async fn trim_age(
    conn: &mut SqliteConnection,
    cutoff_ms: i64,
    limit: i64,
) -> Result<(u64, Vec<String>), sqlx::Error> {
    // Rowids grow in commit order, and so does `published_at_ms` (one writer, one clock):
    // the old publications are a prefix of the table, found without an index on the time.
    // Only the first `limit` rows are looked at; a row that is not old ends the prefix.
    let mut touched: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM publications WHERE rowid IN \
         (SELECT rowid FROM publications ORDER BY rowid LIMIT $2) AND published_at_ms < $1 \
         RETURNING stream_id",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let deleted = touched.len() as u64;
    touched.sort_unstable();
    touched.dedup();
    // Only a stream that just lost publications can have been left empty (count retention
    // always keeps at least one), so the work is bounded by the chunk, not by the streams.
    let mut removed = Vec::new();
    for chunk in touched.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM streams WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(
            ") AND NOT EXISTS (SELECT 1 FROM publications p WHERE p.stream_id = streams.id) \
             RETURNING stream",
        );
        for row in qb.build().persistent(false).fetch_all(&mut *conn).await? {
            removed.push(row.try_get::<String, _>(0)?);
        }
    }
    Ok((deleted, removed))
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

/// Succeeds only if the database can take writes: the filesystem holding it has at least
/// `min_free_bytes` available, and a real write commits. A probe that wrote nothing (or only
/// reused room the WAL file already has) would pass on a full disk while every batch fails,
/// and readiness would flap; a `SELECT 1` would even pass while another process holds the
/// write lock. Answers why not, for the operators and the refused publishers.
pub(super) async fn probe(pool: &SqlitePool, min_free_bytes: u64) -> Result<(), String> {
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

/// Offsets are below 2^53, so they always fit.
fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: &str, last_offset: u64) -> StreamState {
        StreamState {
            epoch: epoch.to_owned(),
            last_offset,
        }
    }

    #[test]
    fn known_streams_take_the_batch_tops_and_start_over_when_full() {
        let mut known = KnownStreams::default();
        let ids = HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let states = HashMap::from([
            ("a".to_owned(), state("e1", 4)),
            ("b".to_owned(), state("e2", 0)),
        ]);
        // `b` was only read (all its publications were duplicates): it keeps its offset.
        known.remember(ids, states, &[("a".to_owned(), 7)]);
        assert_eq!(known.0["a"].id, 1);
        assert_eq!(known.0["a"].state.last_offset, 7);
        assert_eq!(known.0["a"].state.epoch, "e1");
        assert_eq!(known.0["b"].state.last_offset, 0);

        for i in 0..KNOWN_STREAMS as i64 - 2 {
            let s = format!("s{i}");
            known.remember(
                HashMap::from([(s.clone(), i + 10)]),
                HashMap::from([(s, state("e", 1))]),
                &[],
            );
        }
        assert_eq!(known.0.len(), KNOWN_STREAMS);
        known.remember(
            HashMap::from([("c".to_owned(), 3)]),
            HashMap::from([("c".to_owned(), state("e3", 9))]),
            &[],
        );
        assert_eq!(known.0.len(), 1, "past the bound the map starts over");
        assert_eq!(known.0["c"].state.last_offset, 9);
    }
}
