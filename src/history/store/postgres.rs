//! The PostgreSQL backend, shared by several gateway nodes: a batch locks its streams' rows
//! (in sorted order, so nodes cannot deadlock each other) before reading their last offsets,
//! so offsets are assigned by the database, never by a node's memory. Arrays bound to
//! `UNNEST` keep every statement's text fixed whatever the batch size, so each is prepared
//! once per connection.

use std::collections::HashMap;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

use super::{CommitError, BUSY_TIMEOUT};
use crate::history::plan::{self, Existing, StreamState};
use crate::history::{Committed, HistoryError, NewPublication, StorageConfig};

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

/// Appends one batch in one transaction.
pub(super) async fn commit(
    conn: &mut PgConnection,
    pubs: &[NewPublication],
    now_ms: i64,
) -> Result<Vec<Committed>, CommitError> {
    let mut tx = conn.begin().await?;
    let streams = plan::sorted_streams(pubs);
    let epochs: Vec<String> = streams.iter().map(|_| plan::new_epoch()).collect();

    // Creates missing streams and locks all of them: ON CONFLICT DO UPDATE takes the row
    // lock of an existing row, so this is the "UPDATE ... RETURNING" of the batch's streams.
    let rows = sqlx::query(
        "INSERT INTO streams (stream, epoch, last_offset, trim_floor, created_at_ms) \
         SELECT s, e, 0, 0, $3 FROM UNNEST($1::text[], $2::text[]) AS t(s, e) ORDER BY s \
         ON CONFLICT (stream) DO UPDATE SET last_offset = streams.last_offset \
         RETURNING stream, epoch, last_offset",
    )
    .bind(&streams)
    .bind(&epochs)
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
        let last: i64 = row.try_get(2)?;
        states.insert(
            row.try_get::<String, _>(0)?,
            StreamState {
                epoch: row.try_get(1)?,
                last_offset: u64::try_from(last).unwrap_or(0),
            },
        );
    }

    // Read under the stream locks: a retry committed by another node is visible here.
    let keyed = plan::keyed(pubs);
    let mut existing = HashMap::new();
    if !keyed.is_empty() {
        let (ks, kk): (Vec<&str>, Vec<&str>) = keyed.into_iter().unzip();
        let rows = sqlx::query(
            "SELECT p.stream, p.idempotency_key, p.stream_offset, p.published_at_ms, p.channel, \
             p.payload FROM publications p \
             JOIN UNNEST($1::text[], $2::text[]) AS k(s, key) \
             ON p.stream = k.s AND p.idempotency_key = k.key \
             WHERE p.idempotency_key IS NOT NULL",
        )
        .bind(&ks)
        .bind(&kk)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let offset: i64 = row.try_get(2)?;
            existing.insert(
                (row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?),
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

    if !planned.fresh.is_empty() {
        let n = planned.fresh.len();
        let mut stream = Vec::with_capacity(n);
        let mut offset = Vec::with_capacity(n);
        let mut channel = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut key = Vec::with_capacity(n);
        for &i in &planned.fresh {
            let c = &planned.results[i];
            stream.push(c.stream.as_str());
            offset.push(offset_i64(c.position.offset));
            channel.push(c.channel.as_str());
            payload.push(&*c.payload);
            key.push(pubs[i].idempotency_key.as_deref());
        }
        sqlx::query(
            "INSERT INTO publications \
             (stream, stream_offset, channel, payload, idempotency_key, published_at_ms) \
             SELECT s, o, c, p, k, $6 \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
             AS t(s, o, c, p, k)",
        )
        .bind(&stream)
        .bind(&offset)
        .bind(&channel)
        .bind(&payload)
        .bind(&key)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;

        let (ts, tt): (Vec<&str>, Vec<i64>) = planned
            .tops
            .iter()
            .map(|(s, o)| (s.as_str(), offset_i64(*o)))
            .unzip();
        sqlx::query(
            "UPDATE streams SET last_offset = t.top \
             FROM UNNEST($1::text[], $2::bigint[]) AS t(s, top) WHERE streams.stream = t.s",
        )
        .bind(&ts)
        .bind(&tt)
        .execute(&mut *tx)
        .await?;
    }

    tx.commit().await?;
    Ok(planned.results)
}

/// Deletes up to `limit` publications older than `cutoff_ms`; returns how many.
pub(super) async fn trim_age(
    pool: &PgPool,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM publications WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM publications WHERE published_at_ms < $1 LIMIT $2))",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes, per stream, the publications at or below `upto` and records the new floor.
pub(super) async fn trim_count(
    pool: &PgPool,
    streams: &[(String, i64)],
) -> Result<u64, sqlx::Error> {
    let (ss, uu): (Vec<&str>, Vec<i64>) = streams.iter().map(|(s, u)| (s.as_str(), *u)).unzip();
    // Without the stream locks: appends only add higher offsets, so this cannot race them.
    let deleted = sqlx::query(
        "DELETE FROM publications p USING UNNEST($1::text[], $2::bigint[]) AS t(s, upto) \
         WHERE p.stream = t.s AND p.stream_offset <= t.upto",
    )
    .bind(&ss)
    .bind(&uu)
    .execute(pool)
    .await?
    .rows_affected();
    // The floor is a hint for the next run; lock the rows in the committers' order first.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM streams WHERE stream = ANY($1) ORDER BY stream FOR UPDATE")
        .bind(&ss)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE streams SET trim_floor = t.upto FROM UNNEST($1::text[], $2::bigint[]) AS t(s, upto) \
         WHERE streams.stream = t.s AND streams.trim_floor < t.upto",
    )
    .bind(&ss)
    .bind(&uu)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// Succeeds if the server answers.
pub(super) async fn probe(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// True for the errors that a retry of the same transaction resolves.
pub(super) fn is_retryable(err: &sqlx::Error) -> bool {
    // 40P01 deadlock_detected, 40001 serialization_failure.
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// Offsets are below 2^53, so they always fit.
fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
