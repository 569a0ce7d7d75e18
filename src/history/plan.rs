//! Offset assignment and idempotency for one batch, as a pure function of what the store
//! holds: both backends run it inside their transaction, after locking the batch's streams,
//! so the numbers it hands out are the store's. (SQLite's committer takes the rows it wrote
//! itself from memory: it is their only writer, see `store::sqlite::SqliteWriter`.)

use std::collections::HashMap;
use std::sync::Arc;

use super::{Committed, HistoryError, NewPublication, Position};

/// Offsets stay below 2^53 so that JavaScript clients hold them exactly.
pub(crate) const MAX_OFFSET: u64 = (1 << 53) - 1;

/// A stream's row as read under its lock.
#[derive(Debug, Clone)]
pub(crate) struct StreamState {
    /// The stream's current epoch.
    pub epoch: String,
    /// Highest offset handed out in that epoch (0 for a row just created).
    pub last_offset: u64,
}

/// A publication already stored under an idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct Existing {
    /// Its offset, in the stream's current epoch.
    pub offset: u64,
    /// Its commit time, milliseconds since the Unix epoch.
    pub published_at_ms: i64,
    /// Its channel.
    pub channel: String,
    /// Its JSON payload.
    pub payload: String,
}

/// What the transaction must write, and what the appenders get back.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One per input publication, in input order.
    pub results: Vec<Committed>,
    /// Indices into `results` of the publications to insert (not duplicates), in input order.
    pub fresh: Vec<usize>,
    /// New last offset of every stream that grew.
    pub tops: Vec<(String, u64)>,
}

/// Numbers the batch: per stream, offsets continue from `last_offset` in input order; a key
/// already stored, or seen earlier in the batch, yields the original position as a duplicate.
pub(crate) fn plan(
    pubs: &[NewPublication],
    streams: &HashMap<String, StreamState>,
    existing: &HashMap<(String, String), Existing>,
    now_ms: i64,
) -> Result<Plan, HistoryError> {
    let mut next: HashMap<&str, u64> = HashMap::new();
    // Keys first seen in this batch, to answer in-batch retries with the first one's position.
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut results = Vec::with_capacity(pubs.len());
    let mut fresh = Vec::with_capacity(pubs.len());

    for (i, p) in pubs.iter().enumerate() {
        let state = streams.get(&p.stream).ok_or_else(|| {
            HistoryError::Unavailable(format!("stream {} was not locked by the batch", p.stream))
        })?;
        if let Some(key) = p.idempotency_key.as_deref() {
            if let Some(old) = existing.get(&(p.stream.clone(), key.to_owned())) {
                results.push(Committed {
                    stream: p.stream.clone(),
                    channel: old.channel.clone(),
                    payload: Arc::from(old.payload.as_str()),
                    position: Position {
                        epoch: state.epoch.clone(),
                        offset: old.offset,
                    },
                    published_at_ms: old.published_at_ms,
                    duplicate: true,
                });
                continue;
            }
            if let Some(&first) = seen.get(&(p.stream.as_str(), key)) {
                let mut dup = results[first].clone();
                dup.duplicate = true;
                results.push(dup);
                continue;
            }
            seen.insert((p.stream.as_str(), key), i);
        }
        let last = next.entry(p.stream.as_str()).or_insert(state.last_offset);
        if *last >= MAX_OFFSET {
            return Err(HistoryError::OffsetExhausted {
                stream: p.stream.clone(),
            });
        }
        *last += 1;
        results.push(Committed {
            stream: p.stream.clone(),
            channel: p.channel.clone(),
            payload: Arc::from(p.payload.as_str()),
            position: Position {
                epoch: state.epoch.clone(),
                offset: *last,
            },
            published_at_ms: now_ms,
            duplicate: false,
        });
        fresh.push(i);
    }
    let tops = next.into_iter().map(|(s, o)| (s.to_owned(), o)).collect();
    Ok(Plan {
        results,
        fresh,
        tops,
    })
}

/// The distinct streams of a batch, sorted: every node locks them in this order, so two
/// nodes committing overlapping batches cannot deadlock each other.
pub(crate) fn sorted_streams(pubs: &[NewPublication]) -> Vec<&str> {
    let mut v: Vec<&str> = pubs.iter().map(|p| p.stream.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The distinct (stream, key) pairs of a batch.
pub(crate) fn keyed(pubs: &[NewPublication]) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = pubs
        .iter()
        .filter_map(|p| Some((p.stream.as_str(), p.idempotency_key.as_deref()?)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A fresh random epoch (16 hex characters).
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publ(stream: &str, key: Option<&str>) -> NewPublication {
        NewPublication {
            stream: stream.to_owned(),
            channel: format!("ch.{stream}"),
            payload: "{}".to_owned(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    fn states(list: &[(&str, u64)]) -> HashMap<String, StreamState> {
        list.iter()
            .map(|(s, o)| {
                (
                    (*s).to_owned(),
                    StreamState {
                        epoch: "e".to_owned(),
                        last_offset: *o,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn offsets_continue_per_stream_in_input_order() {
        let pubs = vec![publ("a", None), publ("b", None), publ("a", None)];
        let p = plan(&pubs, &states(&[("a", 5), ("b", 0)]), &HashMap::new(), 1).unwrap();
        let offs: Vec<u64> = p.results.iter().map(|c| c.position.offset).collect();
        assert_eq!(offs, vec![6, 1, 7]);
        assert_eq!(p.fresh, vec![0, 1, 2]);
        let mut tops = p.tops;
        tops.sort();
        assert_eq!(tops, vec![("a".to_owned(), 7), ("b".to_owned(), 1)]);
    }

    #[test]
    fn stored_and_in_batch_duplicates_keep_the_original_position() {
        let mut existing = HashMap::new();
        existing.insert(
            ("a".to_owned(), "k1".to_owned()),
            Existing {
                offset: 3,
                published_at_ms: 9,
                channel: "old".to_owned(),
                payload: "{\"old\":1}".to_owned(),
            },
        );
        let pubs = vec![
            publ("a", Some("k1")),
            publ("a", Some("k2")),
            publ("a", Some("k2")),
            publ("b", Some("k2")),
        ];
        let p = plan(&pubs, &states(&[("a", 5), ("b", 0)]), &existing, 1).unwrap();
        let got: Vec<(u64, bool)> = p
            .results
            .iter()
            .map(|c| (c.position.offset, c.duplicate))
            .collect();
        assert_eq!(got, vec![(3, true), (6, false), (6, true), (1, false)]);
        assert_eq!(&*p.results[0].payload, "{\"old\":1}");
        assert_eq!(p.fresh, vec![1, 3]);
    }

    #[test]
    fn refuses_offsets_past_2_pow_53() {
        let pubs = vec![publ("a", None)];
        let err = plan(&pubs, &states(&[("a", MAX_OFFSET)]), &HashMap::new(), 1).unwrap_err();
        assert!(matches!(err, HistoryError::OffsetExhausted { .. }));
    }

    #[test]
    fn unlocked_stream_is_an_error_not_a_guess() {
        let pubs = vec![publ("zz", None)];
        assert!(plan(&pubs, &states(&[]), &HashMap::new(), 1).is_err());
    }

    #[test]
    fn epochs_are_16_hex_chars() {
        let e = new_epoch();
        assert_eq!(e.len(), 16);
        assert!(e.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(e, new_epoch());
    }
}
