//! Resume: `read_after` when caught up, cut by the limit, from another epoch, past the end,
//! and after retention removed what follows the position. Every case runs on both backends.

mod history_support;

use std::time::Duration;

use activity_gateway::history::{History, HistoryConfig, Position, Recovery, RecoveryFailure};
use history_support::{open, publ, quiet_cfg, Backend, TestStore};

both_backends!(
    read_after_caught_up_partial_and_failures,
    trimmed_by_count_retention,
    trimmed_by_age_retention,
    removing_streams_never_races_an_append,
);

const S: &str = "account-activity.v1.eip155:0:0xd14b";

fn at(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.to_owned(),
        offset,
    }
}

fn offsets(r: &Recovery) -> (Vec<u64>, bool) {
    match r {
        Recovery::Recovered { publications, more } => (
            publications.iter().map(|p| p.position.offset).collect(),
            *more,
        ),
        Recovery::Failed(f) => panic!("recovery failed: {}", f.as_str()),
    }
}

fn failure(r: &Recovery) -> Option<RecoveryFailure> {
    match r {
        Recovery::Failed(f) => Some(*f),
        Recovery::Recovered { .. } => None,
    }
}

async fn append_n(h: &History, n: usize) -> String {
    let mut epoch = String::new();
    for i in 0..n {
        epoch = h.append(vec![publ(S, i + 1, None)]).await.unwrap()[0]
            .position
            .epoch
            .clone();
    }
    epoch
}

async fn read_after_caught_up_partial_and_failures(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (h, _rec) = open(&store.storage, &quiet_cfg()).await;
    let e = append_n(&h, 5).await;

    let r = h.read_after(S, &at(&e, 5), 10).await.unwrap();
    assert_eq!(offsets(&r), (vec![], false), "caught up");

    let r = h.read_after(S, &at(&e, 1), 2).await.unwrap();
    assert_eq!(offsets(&r), (vec![2, 3], true), "cut by the limit");
    if let Recovery::Recovered { publications, .. } = &r {
        assert_eq!(&*publications[0].payload, "{\"n\":2}");
        assert_eq!(publications[0].channel, format!("{S}.ch"));
        assert_eq!(publications[0].position.epoch, e);
        assert!(publications[0].published_at_ms > 0);
    }
    let r = h.read_after(S, &at(&e, 3), 2).await.unwrap();
    assert_eq!(offsets(&r), (vec![4, 5], false), "exactly the limit left");
    let r = h.read_after(S, &at(&e, 0), 100).await.unwrap();
    assert_eq!(offsets(&r), (vec![1, 2, 3, 4, 5], false), "from the start");

    let r = h
        .read_after(S, &at("0123456789abcdef", 2), 10)
        .await
        .unwrap();
    assert_eq!(failure(&r), Some(RecoveryFailure::EpochChanged));
    let r = h
        .read_after("no-such-stream", &at(&e, 0), 10)
        .await
        .unwrap();
    assert_eq!(failure(&r), Some(RecoveryFailure::EpochChanged));
    let r = h.read_after(S, &at(&e, 6), 10).await.unwrap();
    assert_eq!(failure(&r), Some(RecoveryFailure::BeyondEnd));
    let r = h.read_after(S, &at(&e, u64::MAX), 10).await.unwrap();
    assert_eq!(failure(&r), Some(RecoveryFailure::BeyondEnd));
    h.close().await;
    store.cleanup().await;
}

async fn trimmed_by_count_retention(backend: Backend) {
    let store = TestStore::new(backend).await;
    let cfg = HistoryConfig {
        retention_count: 3,
        trim_interval: Duration::from_millis(100),
        ..HistoryConfig::default()
    };
    let (h, _rec) = open(&store.storage, &cfg).await;
    let e = append_n(&h, 10).await;

    // The appends arrive one by one, so a pass may run between two of them and trim to an
    // earlier count: wait for the pass that trims to the last append's.
    let mut trimmed = false;
    for _ in 0..100 {
        let r = h.read_after(S, &at(&e, 6), 100).await.unwrap();
        if failure(&r) == Some(RecoveryFailure::Trimmed) {
            trimmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(trimmed, "count retention trimmed offset 7 within 5s");
    let r = h.read_after(S, &at(&e, 0), 100).await.unwrap();
    assert_eq!(
        failure(&r),
        Some(RecoveryFailure::Trimmed),
        "offset 1 is gone"
    );
    let r = h.read_after(S, &at(&e, 7), 100).await.unwrap();
    assert_eq!(offsets(&r), (vec![8, 9, 10], false), "the last 3 are kept");
    let r = h.read_after(S, &at(&e, 10), 100).await.unwrap();
    assert_eq!(offsets(&r), (vec![], false), "caught up is not trimmed");

    // Trimming never makes offsets restart.
    let next = h.append(vec![publ(S, 11, None)]).await.unwrap();
    assert_eq!(next[0].position, at(&e, 11));
    h.close().await;
    store.cleanup().await;
}

async fn trimmed_by_age_retention(backend: Backend) {
    let store = TestStore::new(backend).await;
    let cfg = HistoryConfig {
        retention_age: Duration::from_millis(1),
        trim_interval: Duration::from_millis(100),
        ..HistoryConfig::default()
    };
    let (h, _rec) = open(&store.storage, &cfg).await;
    let e = append_n(&h, 3).await;
    let mut trimmed = false;
    for _ in 0..100 {
        let r = h.read_after(S, &at(&e, 2), 100).await.unwrap();
        // Trimmed, or already gone with its row.
        if matches!(
            failure(&r),
            Some(RecoveryFailure::Trimmed | RecoveryFailure::EpochChanged)
        ) {
            trimmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(trimmed, "age retention trimmed the stream within 5s");
    // The emptied stream's row is removed (with it, the stream's epoch): a position read now is
    // unborn, and the next publication starts a new epoch at offset 1.
    let mut rows = -1;
    for _ in 0..100 {
        rows = history_support::stream_rows(&store.storage).await;
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows, 0, "the emptied stream's row is removed");
    let pos = h.positions(&[S.to_owned()]).await.unwrap();
    assert!(pos[0].epoch.starts_with("none."), "{pos:?}");
    assert_eq!(pos[0].offset, 0);
    assert_eq!(
        failure(&h.read_after(S, &at(&e, 3), 100).await.unwrap()),
        Some(RecoveryFailure::EpochChanged),
        "the old epoch is gone with its row"
    );
    let again = h.append(vec![publ(S, 9, None)]).await.unwrap();
    assert_ne!(again[0].position.epoch, e);
    assert_eq!(again[0].position.offset, 1);
    h.close().await;
    store.cleanup().await;
}

/// Appends keep arriving on streams that age retention keeps emptying and removing: no
/// publication is ever left without its stream's row, and every append lands either in the
/// row it was numbered in or in a new epoch starting at 1.
async fn removing_streams_never_races_an_append(backend: Backend) {
    let store = TestStore::new(backend).await;
    let cfg = HistoryConfig {
        retention_age: Duration::from_millis(1),
        trim_interval: Duration::from_millis(10),
        ..HistoryConfig::default()
    };
    let (h, _rec) = open(&store.storage, &cfg).await;
    let streams: Vec<String> = (0..4)
        .map(|i| format!("account-activity.v1.eip155:0:0x{i:040x}"))
        .collect();
    let mut tasks = Vec::new();
    for s in streams.clone() {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut last: Option<Position> = None;
            let mut epochs = 0;
            // Appends until retention has removed this stream at least once (a second epoch),
            // however fast the machine: the race needs removals to happen at all.
            for n in 0..5_000 {
                if epochs >= 2 && n >= 150 {
                    break;
                }
                let got = h.append(vec![publ(&s, n, None)]).await.unwrap();
                let p = got[0].position.clone();
                match &last {
                    Some(l) if l.epoch == p.epoch => assert_eq!(p.offset, l.offset + 1),
                    _ => {
                        assert_eq!(p.offset, 1, "a new epoch starts at 1: {p:?}");
                        epochs += 1;
                    }
                }
                last = Some(p);
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            epochs
        }));
    }
    let mut epochs = 0;
    for t in tasks {
        epochs += t.await.unwrap();
    }
    assert!(
        epochs > streams.len(),
        "retention removed no stream while appends went on ({epochs} epochs)"
    );
    h.close().await;
    let orphans = history_support::scalar(
        &store.storage,
        "SELECT COUNT(*) FROM publications p \
         WHERE NOT EXISTS (SELECT 1 FROM streams s WHERE s.id = p.stream_id)",
    )
    .await;
    assert_eq!(orphans, 0, "publications left without their stream's row");
    store.cleanup().await;
}
