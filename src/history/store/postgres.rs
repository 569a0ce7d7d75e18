//! The PostgreSQL backend, shared by several gateway nodes: a batch locks its streams' rows
//! (in sorted order, so nodes cannot deadlock each other) before reading their last offsets,
//! so offsets are assigned by the database, never by a node's memory. The batch is one call
//! of the `history_append` function (migrations/postgres), in autocommit: one round trip and
//! one transaction. Arrays keep every statement's text fixed whatever the batch size, so
//! each is prepared once per connection.

use std::collections::HashMap;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::sync::Arc;

use sqlx::{Connection, Row};

use super::{CommitError, BUSY_TIMEOUT};
use crate::history::plan;
use crate::history::{Committed, HistoryError, NewPublication, Position, StorageConfig};

/// Connects to the database at `cfg.url`.
pub(super) async fn connect(cfg: &StorageConfig) -> Result<PgPool, HistoryError> {
    let opts: PgConnectOptions = cfg.url.parse().map_err(|e| {
        HistoryError::Config(format!(
            "storage.url is not a valid PostgreSQL URL ({e}); use e.g. \
             postgres://user@host:5432/database"
        ))
    })?;
    PgPoolOptions::new()
        .max_connections(cfg.max_connections.max(2))
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|e| HistoryError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
}

/// Runs the embedded migrations (sqlx serialises concurrent nodes with an advisory lock).
pub(super) async fn migrate(pool: &PgPool) -> Result<(), HistoryError> {
    sqlx::migrate!("./migrations/postgres")
        .run(pool)
        .await
        .map_err(|e| HistoryError::Migration(e.to_string()))
}

/// Appends one batch in one transaction: one call of `history_append` (see the migration),
/// so one round trip, with the statement prepared once per connection.
pub(super) async fn commit(
    conn: &mut PgConnection,
    pubs: &[NewPublication],
    now_ms: i64,
) -> Result<Vec<Committed>, CommitError> {
    let streams = plan::sorted_streams(pubs);
    let epochs: Vec<String> = streams.iter().map(|_| plan::new_epoch()).collect();
    let index: HashMap<&str, i32> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i32::try_from(i + 1).unwrap_or(i32::MAX)))
        .collect();

    // In-batch retries are answered here: only the first publication of each (stream, key)
    // goes to the database, and the later ones repeat its answer as duplicates.
    let mut sent = Vec::with_capacity(pubs.len());
    let mut first_of: Vec<Option<usize>> = Vec::with_capacity(pubs.len());
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, p) in pubs.iter().enumerate() {
        if let Some(key) = p.idempotency_key.as_deref() {
            if let Some(&first) = seen.get(&(p.stream.as_str(), key)) {
                first_of.push(Some(first));
                continue;
            }
            seen.insert((p.stream.as_str(), key), i);
        }
        first_of.push(None);
        sent.push(i);
    }
    let mut sidx = Vec::with_capacity(sent.len());
    let mut channel = Vec::with_capacity(sent.len());
    let mut payload = Vec::with_capacity(sent.len());
    let mut key = Vec::with_capacity(sent.len());
    for &i in &sent {
        let p = &pubs[i];
        sidx.push(index.get(p.stream.as_str()).copied().unwrap_or(0));
        channel.push(p.channel.as_str());
        payload.push(p.payload.as_str());
        key.push(p.idempotency_key.as_deref());
    }

    let rows = sqlx::query(
        "SELECT ord, stream_offset, duplicate, published_at_ms, channel, payload, epoch \
         FROM history_append($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&streams)
    .bind(&epochs)
    .bind(now_ms)
    .bind(&sidx)
    .bind(&channel)
    .bind(&payload)
    .bind(&key)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| match offset_exhausted(&e) {
        Some(stream) => CommitError::Rejected(HistoryError::OffsetExhausted { stream }),
        None => CommitError::Store(e),
    })?;
    if rows.len() != sent.len() {
        return Err(CommitError::Store(sqlx::Error::Protocol(format!(
            "history_append answered {} rows for {} publications",
            rows.len(),
            sent.len()
        ))));
    }

    let mut answers = rows.into_iter().zip(&sent);
    let mut results: Vec<Committed> = Vec::with_capacity(pubs.len());
    for (i, p) in pubs.iter().enumerate() {
        if let Some(first) = first_of[i] {
            let mut dup = results[first].clone();
            dup.duplicate = true;
            results.push(dup);
            continue;
        }
        let Some((row, _)) = answers.next() else {
            return Err(CommitError::Store(sqlx::Error::RowNotFound));
        };
        let offset: i64 = row.try_get(1)?;
        let duplicate: bool = row.try_get(2)?;
        let (channel, payload) = if duplicate {
            (
                row.try_get::<String, _>(4)?,
                Arc::from(row.try_get::<String, _>(5)?),
            )
        } else {
            (p.channel.clone(), Arc::from(p.payload.as_str()))
        };
        results.push(Committed {
            stream: p.stream.clone(),
            channel,
            payload,
            position: Position {
                epoch: row.try_get(6)?,
                offset: u64::try_from(offset).unwrap_or(0),
            },
            published_at_ms: row.try_get(3)?,
            duplicate,
        });
    }
    Ok(results)
}

/// The stream named by `history_append`'s offset-exhaustion error, if that is the error.
fn offset_exhausted(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("GH001") => {
            Some(db.message().to_owned())
        }
        _ => None,
    }
}

/// Deletes up to `limit` publications older than `cutoff_ms`, then the rows of the streams
/// this left without publications; returns how many publications, and how many streams.
pub(super) async fn trim_age(
    conn: &mut PgConnection,
    cutoff_ms: i64,
    limit: i64,
) -> Result<(u64, usize), sqlx::Error> {
    let mut touched: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM publications WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM publications WHERE published_at_ms < $1 LIMIT $2)) \
         RETURNING stream_id",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let deleted = touched.len() as u64;
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        return Ok((deleted, 0));
    }
    // Only a stream that just lost publications can have been left empty (count retention
    // always keeps at least one). Its row is locked first, in the committers' order: an append
    // to it then either committed before (its publications are seen, the row stays) or waits
    // and, finding the row gone, creates a new one with a new epoch.
    let mut tx = conn.begin().await?;
    sqlx::query(
        "SELECT 1 FROM streams WHERE id = ANY($1) ORDER BY stream COLLATE \"C\" FOR UPDATE",
    )
    .bind(&touched)
    .execute(&mut *tx)
    .await?;
    let removed = sqlx::query(
        "DELETE FROM streams s WHERE s.id = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM publications p WHERE p.stream_id = s.id)",
    )
    .bind(&touched)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((deleted, usize::try_from(removed).unwrap_or(usize::MAX)))
}

/// Deletes, per stream, the publications at or below `upto` and records the new floor.
pub(super) async fn trim_count(
    conn: &mut PgConnection,
    streams: &[(i64, i64)],
) -> Result<u64, sqlx::Error> {
    let (ss, uu): (Vec<i64>, Vec<i64>) = streams.iter().copied().unzip();
    // Without the stream locks: appends only add higher offsets, so this cannot race them.
    let deleted = sqlx::query(
        "DELETE FROM publications p USING UNNEST($1::bigint[], $2::bigint[]) AS t(s, upto) \
         WHERE p.stream_id = t.s AND p.stream_offset <= t.upto",
    )
    .bind(&ss)
    .bind(&uu)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // The floor is a hint for the next run; lock the rows in the committers' order first.
    let mut tx = conn.begin().await?;
    sqlx::query(
        "SELECT 1 FROM streams WHERE id = ANY($1) ORDER BY stream COLLATE \"C\" FOR UPDATE",
    )
    .bind(&ss)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE streams SET trim_floor = t.upto \
         FROM UNNEST($1::bigint[], $2::bigint[]) AS t(s, upto) \
         WHERE streams.id = t.s AND streams.trim_floor < t.upto",
    )
    .bind(&ss)
    .bind(&uu)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// Succeeds if the database commits a real write: a `SELECT 1` passes on a server that cannot
/// write (a full disk, a read-only standby), and readiness would flap while every batch fails.
pub(super) async fn probe(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO store_probe (id, at_ms) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET at_ms = EXCLUDED.at_ms",
    )
    .bind(crate::protocol::now_ms())
    .execute(pool)
    .await
    .map(|_| ())
}

/// True for the errors that a retry of the same transaction resolves.
pub(super) fn is_retryable(err: &sqlx::Error) -> bool {
    // 40P01 deadlock_detected, 40001 serialization_failure.
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}
