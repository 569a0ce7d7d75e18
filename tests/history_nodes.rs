//! Several nodes writing one PostgreSQL (offsets and idempotency are the database's, not a
//! node's), two processes on one SQLite file, and a batch that would pass the 2^53 offset bound being refused as a whole.

mod history_support;

use std::collections::HashMap;

use activity_gateway::history::{HistoryError, StorageConfig};
use history_support::{open, publ, quiet_cfg, Backend, TestStore};
use sqlx::Connection;

both_backends!(batch_past_the_offset_bound_is_refused_whole);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_offsets_and_idempotency() {
    let store = TestStore::new(Backend::Postgres).await;
    let (a, _) = open(&store.storage, &quiet_cfg()).await;
    let (b, _) = open(&store.storage, &quiet_cfg()).await;
    const TASKS: usize = 4;
    const EACH: usize = 150;
    const STREAMS: usize = 7;

    // Every task appends batches of three to overlapping streams, through either node; the
    // same key is sent through both nodes, so one of the two must be a duplicate.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (mine, other) = if t % 2 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let key = format!("{t}-{i}");
                let batch: Vec<_> = (0..3)
                    .map(|j| {
                        let s = format!(
                            "account-activity.v1.eip155:0:0x{:02x}",
                            (t + i + j) % STREAMS
                        );
                        publ(&s, i, Some(&format!("{key}-{j}")))
                    })
                    .collect();
                let (x, y) = tokio::join!(mine.append(batch.clone()), other.append(batch));
                let (x, y) = (x.unwrap(), y.unwrap());
                for (cx, cy) in x.iter().zip(&y) {
                    assert_eq!(cx.position, cy.position, "both nodes answer one position");
                    assert!(cx.duplicate != cy.duplicate, "exactly one of them appended");
                    got.push(if cx.duplicate { cy.clone() } else { cx.clone() });
                }
            }
            got
        }));
    }
    let mut per_stream: HashMap<String, Vec<u64>> = HashMap::new();
    for task in tasks {
        for c in task.await.unwrap() {
            per_stream
                .entry(c.stream.clone())
                .or_default()
                .push(c.position.offset);
        }
    }
    let total: usize = per_stream.values().map(Vec::len).sum();
    assert_eq!(total, TASKS * EACH * 3);
    for (stream, mut offs) in per_stream {
        offs.sort_unstable();
        let want: Vec<u64> = (1..=offs.len() as u64).collect();
        assert_eq!(
            offs, want,
            "offsets of {stream} are 1..n without gap or reuse"
        );
    }
    a.close().await;
    b.close().await;
    store.cleanup().await;
}

/// Two processes on one SQLite file (a rolling deploy sharing a volume, say): each committer
/// remembers the streams it wrote, and the other's appends make that stale. The collision
/// must make it read again, never hand out an offset twice or fail the append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_sqlite_file_never_reuse_an_offset() {
    let store = TestStore::new(Backend::Sqlite).await;
    let (a, _) = open(&store.storage, &quiet_cfg()).await;
    let (b, _) = open(&store.storage, &quiet_cfg()).await;
    const S: &str = "account-activity.v1.eip155:0:0xcc";
    let mut got = Vec::new();
    for i in 0..10 {
        for node in [&a, &b] {
            let c = node
                .append(vec![publ(S, 2 * i, None), publ(S, 2 * i + 1, None)])
                .await
                .unwrap();
            got.extend(c.iter().map(|c| c.position.offset));
        }
    }
    assert_eq!(got, (1..=40).collect::<Vec<u64>>());
    assert!(a.is_available() && b.is_available());
    let tops = a.positions(&[S.to_owned()]).await.unwrap();
    assert_eq!(tops[0].offset, 40);
    a.close().await;
    b.close().await;
    store.cleanup().await;
}

async fn batch_past_the_offset_bound_is_refused_whole(backend: Backend) {
    let store = TestStore::new(backend).await;
    let (history, rec) = open(&store.storage, &quiet_cfg()).await;
    const S: &str = "account-activity.v1.eip155:0:0xaa";
    const T: &str = "account-activity.v1.eip155:0:0xbb";
    // Created behind the history's back, so the committer reads its row.
    set_last_offset(&store.storage, S, (1 << 53) - 2).await;

    // T alone would be fine; S's second publication would pass the bound: nothing is stored.
    let err = history
        .append(vec![
            publ(T, 1, Some("k")),
            publ(S, 2, None),
            publ(S, 3, None),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HistoryError::OffsetExhausted { stream } if stream == S),
        "{err:?}"
    );
    assert!(
        history.is_available(),
        "a refused batch is not a store failure"
    );
    let t = history.positions(&[T.to_owned()]).await.unwrap();
    assert_eq!(t[0].offset, 0, "the refused batch left nothing behind");

    let ok = history
        .append(vec![publ(T, 1, Some("k")), publ(S, 2, None)])
        .await
        .unwrap();
    assert_eq!(ok[0].position.offset, 1);
    assert!(!ok[0].duplicate);
    assert_eq!(ok[1].position.offset, (1 << 53) - 1);
    assert_eq!(rec.len(), 2);
    history.close().await;
    store.cleanup().await;
}

/// Creates a stream's row at `offset` behind the history's back.
async fn set_last_offset(storage: &StorageConfig, stream: &str, offset: i64) {
    let sql = "INSERT INTO streams (stream, epoch, last_offset, trim_floor, created_at_ms) \
               VALUES ($2, '00000000000000aa', $1, 0, 0)";
    if storage.url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let done = sqlx::query(sql)
            .bind(offset)
            .bind(stream)
            .execute(&mut c)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    } else {
        let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
        let done = sqlx::query(sql)
            .bind(offset)
            .bind(stream)
            .execute(&mut c)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
}
