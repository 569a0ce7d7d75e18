//! SQLite's maintenance writes: retention by age and by count, and the WAL's upkeep (passive
//! checkpoints beside the committer, rewinds on its connection).

use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::CHUNK;
use crate::history::store::BUSY_TIMEOUT;

/// Deletes up to `limit` publications older than `cutoff_ms`, then the rows of the streams
/// this left without publications; returns how many publications, and the streams removed.
/// Runs on the committer's connection, which must forget the removed streams.
pub(crate) async fn trim_age(
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
pub(crate) async fn trim_count(
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
pub(crate) const WAL_RESTART_FRAMES: i64 = 8192;

/// Copies what the WAL holds into the database file without waiting for (or blocking) the
/// committer (PASSIVE); returns the frames the WAL holds.
pub(crate) async fn checkpoint(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
    Ok(frames)
}

/// Makes the WAL start over. Under a steady write load PASSIVE checkpoints alone never do:
/// SQLite starts the WAL file over only when a writer finds every frame copied, and the
/// committer has always appended a few more by then, so the WAL (and with it the commits'
/// latency) would grow for as long as the load lasts. A RESTART checkpoint copies the frames
/// left and makes the next transaction start the file over. It runs on the committer's connection,
/// between two batches, so it never waits for a writer; it waits at most `RESTART_WAIT` for
/// readers (a resume reading history) and is tried again at the next checkpoint if it gives up.
pub(crate) async fn rewind_wal(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
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
