//! The committer's side of SQLite: one batch in one transaction, with what the committer's
//! connection knows of the streams it wrote, so that a batch of known streams is one round
//! trip.

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::CHUNK;
use crate::history::plan::{self, Existing, StreamState};
use crate::history::store::CommitError;
use crate::history::{Committed, NewPublication};

/// The committer's connection, and the streams it has committed to.
pub(crate) struct SqliteWriter {
    /// Held between batches; dropped (never returned to the pool) after any store error.
    conn: PoolConnection<Sqlite>,
    /// What `conn` has committed to `streams`, valid while it is the table's only writer.
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

/// One stream as this connection last committed it.
struct Known {
    /// The row's id, the publications' `stream_id`.
    id: i64,
    /// Epoch and last offset committed.
    state: StreamState,
}

/// Streams remembered at most: ~150 bytes each. Past it the map starts over.
const KNOWN_STREAMS: usize = 100_000;

/// A commit of at most this many new publications and stream tops keeps its prepared
/// statement in the connection's statement cache. Its SQL text depends only on the two counts
/// (and whether the transaction is already open), so small commits, the common case below
/// the ceiling, reuse a handful of statements instead of compiling one each time; larger
/// ones are compiled once per commit, a cost shared by their many rows, and are not cached
/// so that they cannot crowd the cache.
const CACHED_UP_TO: usize = 4;

impl SqliteWriter {
    /// Wraps the committer's connection; nothing is known yet.
    pub(crate) fn new(conn: PoolConnection<Sqlite>) -> SqliteWriter {
        SqliteWriter {
            conn,
            known: KnownStreams::default(),
        }
    }

    /// The connection, for maintenance run between batches.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Takes the connection out of the pool, so that dropping it closes it.
    pub(crate) fn detach(self) -> SqliteConnection {
        self.conn.detach()
    }

    /// Forgets streams whose rows retention removed: their next publication creates a new row
    /// (a new id and epoch).
    pub(crate) fn forget_streams(&mut self, streams: &[String]) {
        for s in streams {
            self.known.0.remove(s);
        }
    }

    /// Forgets the known streams, after a collision. Every write of a batch is `OR ROLLBACK`,
    /// so the collision has ended the transaction already.
    pub(crate) fn forget(&mut self) {
        self.known.0.clear();
    }
}

/// True for a uniqueness violation: under the write lock, after the key lookup, only a stale
/// `KnownStreams` can cause one.
pub(crate) fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Appends one batch in one transaction: `BEGIN IMMEDIATE` (the write lock), reading the
/// streams not known yet and the stored idempotency keys, then the inserts, the new last
/// offsets and `COMMIT` sent together. A failure leaves the transaction to the connection's
/// end: the committer drops the connection after any store error.
pub(crate) async fn commit(
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
    if planned.tops.len() <= CACHED_UP_TO {
        // A few tops are a few single-row updates by primary key: `UPDATE … FROM` builds two
        // temporary tables for its FROM clause (a temporary B-tree opened and a zeroed page
        // each time), which costs more than a small commit's own writes.
        for (s, top) in &planned.tops {
            qb.push("UPDATE OR ROLLBACK streams SET last_offset = ")
                .push_bind(offset_i64(*top))
                .push(" WHERE id = ")
                .push_bind(ids.get(s).copied().unwrap_or(-1))
                .push("; ");
        }
    } else {
        push_tops(&mut qb, &planned.tops, &ids);
    }
    qb.push("COMMIT");
    let cached = planned.fresh.len() <= CACHED_UP_TO && planned.tops.len() <= CACHED_UP_TO;
    qb.build().persistent(cached).execute(&mut *w.conn).await?;

    w.known.remember(ids, states, &planned.tops);
    Ok(planned.results)
}

/// Sets the new last offsets of many streams, a chunk of rows per statement.
fn push_tops(
    qb: &mut QueryBuilder<'_, Sqlite>,
    tops: &[(String, u64)],
    ids: &HashMap<String, i64>,
) {
    for chunk in tops.chunks(CHUNK) {
        qb.push("WITH v(id, top) AS (");
        qb.push_values(chunk, |mut b, (s, top)| {
            b.push_bind(ids.get(s).copied().unwrap_or(-1))
                .push_bind(offset_i64(*top));
        });
        qb.push(
            ") UPDATE OR ROLLBACK streams SET last_offset = v.top FROM v WHERE streams.id = v.id; ",
        );
    }
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
        // index (`(stream_id, key) IN (VALUES ...)` would scan the whole index).
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
