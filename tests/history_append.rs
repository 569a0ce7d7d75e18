//! Appending: offsets per stream under concurrent appenders, idempotent retries, stream
//! positions, and durability across close and reopen. Every case runs on both backends.

mod history_support;

use std::collections::HashMap;

use activity_gateway::history::{Position, Recovery};
use history_support::{open, publ, quiet_cfg, stream_rows, Backend, TestStore};

both_backends!(
    concurrent_appenders_get_contiguous_offsets_in_order,
    idempotent_retry_returns_the_original_position,
    positions_write_nothing_and_resume_from_the_first_publication,
    data_and_epoch_survive_close_and_reopen,
    last_offsets_of_small_and_large_batches_survive_reopen,
    empty_and_invalid_appends,
);

async fn concurrent_appenders_get_contiguous_offsets_in_order(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (history, rec) = open(&store.storage, &quiet_cfg()).await;
    const TASKS: usize = 8;
    const EACH: usize = 500;
    const STREAMS: usize = 10;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let h = history.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let stream = format!("account-activity.v1.eip155:0:0x{:02x}", (t + i) % STREAMS);
                let out = h.append(vec![publ(&stream, i, None)]).await.unwrap();
                assert_eq!(out.len(), 1);
                assert!(!out[0].duplicate);
                assert_eq!(out[0].stream, stream);
                got.push(out[0].clone());
            }
            got
        }));
    }
    let mut per_stream: HashMap<String, Vec<u64>> = HashMap::new();
    let mut epochs: HashMap<String, String> = HashMap::new();
    for task in tasks {
        for c in task.await.unwrap() {
            per_stream
                .entry(c.stream.clone())
                .or_default()
                .push(c.position.offset);
            let e = epochs
                .entry(c.stream.clone())
                .or_insert(c.position.epoch.clone());
            assert_eq!(*e, c.position.epoch, "one epoch per stream");
        }
    }
    assert_eq!(per_stream.len(), STREAMS);
    for (stream, mut offs) in per_stream {
        offs.sort_unstable();
        let want: Vec<u64> = (1..=(TASKS * EACH / STREAMS) as u64).collect();
        assert_eq!(
            offs, want,
            "offsets of {stream} are 1..n without gap or reuse"
        );
    }

    // The listener saw every publication once, ascending per stream.
    let seen = rec.seen.lock().clone();
    assert_eq!(seen.len(), TASKS * EACH);
    let mut last: HashMap<&str, u64> = HashMap::new();
    for c in &seen {
        let prev = last.insert(&c.stream, c.position.offset).unwrap_or(0);
        assert_eq!(
            c.position.offset,
            prev + 1,
            "listener order on {}",
            c.stream
        );
    }
    history.close().await;
    store.cleanup().await;
}

async fn idempotent_retry_returns_the_original_position(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (history, rec) = open(&store.storage, &quiet_cfg()).await;
    let s = "account-activity.v1.eip155:0:0xaa";

    let first = history.append(vec![publ(s, 1, Some("k1"))]).await.unwrap();
    assert!(!first[0].duplicate);
    history.append(vec![publ(s, 2, None)]).await.unwrap();

    // A retry, even with another payload, answers with the original.
    let retry = history.append(vec![publ(s, 99, Some("k1"))]).await.unwrap();
    assert!(retry[0].duplicate);
    assert_eq!(retry[0].position, first[0].position);
    assert_eq!(&*retry[0].payload, "{\"n\":1}");

    // Duplicates inside one batch, and the same key on another stream (not a duplicate).
    let other = "account-activity.v1.eip155:0:0xbb";
    let out = history
        .append(vec![
            publ(s, 3, Some("k2")),
            publ(s, 4, Some("k2")),
            publ(other, 5, Some("k2")),
        ])
        .await
        .unwrap();
    let got: Vec<(u64, bool)> = out
        .iter()
        .map(|c| (c.position.offset, c.duplicate))
        .collect();
    assert_eq!(got, vec![(3, false), (3, true), (1, false)]);

    let seen: Vec<(String, u64)> = rec
        .seen
        .lock()
        .iter()
        .map(|c| (c.stream.clone(), c.position.offset))
        .collect();
    assert_eq!(
        seen,
        vec![
            (s.to_owned(), 1),
            (s.to_owned(), 2),
            (s.to_owned(), 3),
            (other.to_owned(), 1)
        ],
        "duplicates never reach the listener"
    );
    history.close().await;
    store.cleanup().await;
}

async fn positions_write_nothing_and_resume_from_the_first_publication(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (history, _rec) = open(&store.storage, &quiet_cfg()).await;
    let s = "account-activity.v1.eip155:0:0xcc".to_owned();
    let t = "account-activity.v1.eip155:0:0xdd".to_owned();

    let p1 = history.positions(&[s.clone(), t.clone()]).await.unwrap();
    assert_eq!(p1.len(), 2);
    for p in &p1 {
        assert_eq!(p.offset, 0);
        assert!(p.epoch.starts_with("none."), "an unborn position: {p:?}");
    }
    assert_eq!(
        stream_rows(&store.storage).await,
        0,
        "reading a position writes nothing"
    );

    // The first appends create the stream in an epoch of its own; a resume from the unborn
    // position replays all of them, in that epoch.
    let out = history
        .append(vec![publ(&s, 1, None), publ(&s, 2, None)])
        .await
        .unwrap();
    let epoch = out[0].position.epoch.clone();
    assert_eq!(epoch.len(), 16);
    assert_eq!(out[0].position.offset, 1);
    match history.read_after(&s, &p1[0], 100).await.unwrap() {
        Recovery::Recovered { publications, more } => {
            let got: Vec<Position> = publications.into_iter().map(|p| p.position).collect();
            let want: Vec<Position> = (1..=2)
                .map(|offset| Position {
                    epoch: epoch.clone(),
                    offset,
                })
                .collect();
            assert_eq!(got, want);
            assert!(!more);
        }
        Recovery::Failed(f) => panic!("recovery failed: {}", f.as_str()),
    }
    // Still nothing published on `t`: recovered, nothing to replay.
    match history.read_after(&t, &p1[1], 100).await.unwrap() {
        Recovery::Recovered { publications, more } => {
            assert!(publications.is_empty() && !more)
        }
        Recovery::Failed(f) => panic!("recovery failed: {}", f.as_str()),
    }
    let p2 = history.positions(&[t, s]).await.unwrap();
    assert!(
        p2[0].epoch.starts_with("none."),
        "result order = input order"
    );
    assert_eq!(p2[1], Position { epoch, offset: 2 });
    assert_eq!(stream_rows(&store.storage).await, 1);
    history.close().await;
    store.cleanup().await;
}

async fn data_and_epoch_survive_close_and_reopen(backend: Backend) {
    let store = TestStore::new(backend).await;
    let s = "account-activity.v1.eip155:0:0xee";
    let (history, _rec) = open(&store.storage, &quiet_cfg()).await;
    let mut last = None;
    for i in 0..3 {
        last = Some(
            history
                .append(vec![publ(s, i, Some(&format!("k{i}")))])
                .await
                .unwrap(),
        );
    }
    let before = last.unwrap()[0].position.clone();
    history.close().await;
    assert!(matches!(
        history.append(vec![publ(s, 9, None)]).await,
        Err(activity_gateway::history::HistoryError::Closed)
    ));

    let (history, rec) = open(&store.storage, &quiet_cfg()).await;
    let pos = history.positions(&[s.to_owned()]).await.unwrap();
    assert_eq!(pos[0], before, "same epoch and offset after reopen");
    // Idempotency keys survive too.
    let retry = history.append(vec![publ(s, 0, Some("k0"))]).await.unwrap();
    assert!(retry[0].duplicate);
    assert_eq!(retry[0].position.offset, 1);
    let next = history.append(vec![publ(s, 3, None)]).await.unwrap();
    assert_eq!(next[0].position.epoch, before.epoch);
    assert_eq!(next[0].position.offset, 4);
    assert_eq!(rec.len(), 1);
    history.close().await;
    store.cleanup().await;
}

/// A batch's new last offsets are written with it whatever the number of streams it touches
/// (a few, or many at once), for streams new and already written: a reopened history hands
/// out the next offsets, not ones already taken.
async fn last_offsets_of_small_and_large_batches_survive_reopen(backend: Backend) {
    let store = TestStore::new(backend).await;
    let streams: Vec<String> = (0..9)
        .map(|i| format!("account-activity.v1.eip155:0:0x{i:02}"))
        .collect();
    let (small, large) = streams.split_at(2);
    let (history, _rec) = open(&store.storage, &quiet_cfg()).await;
    for round in 0..3 {
        for batch in [small, large] {
            // Two publications per stream in each batch.
            let pubs = batch
                .iter()
                .chain(batch)
                .map(|s| publ(s, round, None))
                .collect();
            history.append(pubs).await.unwrap();
        }
    }
    history.close().await;

    let (history, _rec) = open(&store.storage, &quiet_cfg()).await;
    let positions = history.positions(&streams).await.unwrap();
    assert!(positions.iter().all(|p| p.offset == 6), "{positions:?}");
    let next = history
        .append(streams.iter().map(|s| publ(s, 9, None)).collect())
        .await
        .unwrap();
    let offsets: Vec<u64> = next.iter().map(|c| c.position.offset).collect();
    assert_eq!(offsets, vec![7; streams.len()]);
    history.close().await;
    store.cleanup().await;
}

async fn empty_and_invalid_appends(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (history, rec) = open(&store.storage, &quiet_cfg()).await;
    assert!(history.append(Vec::new()).await.unwrap().is_empty());
    let mut bad = publ("s", 1, None);
    bad.payload = "{\"a\":\"\0\"}".to_owned();
    assert!(matches!(
        history.append(vec![publ("s", 0, None), bad]).await,
        Err(activity_gateway::history::HistoryError::Invalid(_))
    ));
    assert_eq!(rec.len(), 0, "an invalid batch is refused whole");
    assert!(
        history.is_available(),
        "a bad publication is not a store failure"
    );
    history.close().await;
    store.cleanup().await;
}
