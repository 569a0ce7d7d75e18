//! Store outages: appends fail fast with `Unavailable`, nothing reaches the listener, the
//! store is probed and appends resume without a gap in the offsets; an append that outlives
//! its deadline is either committed and answered, or never committed.

mod history_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use activity_gateway::history::{CommitListener, Committed, History, HistoryError};
use history_support::{eventually, open, publ, quiet_cfg, Backend, Proxy, Recorder, TestStore};
use sqlx::{Connection, Executor};

const S: &str = "account-activity.v1.eip155:0:0xfa11";

/// The checks shared by both outages; `outage` is already in effect.
async fn fails_fast_then_recovers(
    h: &History,
    rec: &Recorder,
    last_offset: u64,
    end_outage: impl std::future::Future<Output = ()>,
) {
    let seen_before = rec.len();
    let started = Instant::now();
    let err = h.append(vec![publ(S, 100, None)]).await.unwrap_err();
    assert!(matches!(err, HistoryError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered within the timeout, took {:?}",
        started.elapsed()
    );
    assert!(!h.is_available());

    // While down, appends are refused at once.
    let started = Instant::now();
    let err = h.append(vec![publ(S, 101, None)]).await.unwrap_err();
    assert!(matches!(err, HistoryError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        rec.len(),
        seen_before,
        "nothing of a failed batch reaches the listener"
    );

    end_outage.await;
    assert!(
        eventually(10, || h.is_available()).await,
        "the probe restores availability"
    );
    let out = h.append(vec![publ(S, 102, None)]).await.unwrap();
    assert_eq!(
        out[0].position.offset,
        last_offset + 1,
        "no offset lost to the outage"
    );
    assert_eq!(rec.len(), seen_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_writer() {
    let store = TestStore::new(history_support::Backend::Sqlite).await;
    let (h, rec) = open(&store.storage, &quiet_cfg()).await;
    h.append(vec![publ(S, 1, None)]).await.unwrap();

    let mut locker = sqlx::SqliteConnection::connect(&store.storage.url)
        .await
        .unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let release = async {
        locker.execute("ROLLBACK").await.unwrap();
    };
    fails_fast_then_recovers(&h, &rec, 1, release).await;
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_cut() {
    let store = TestStore::new(history_support::Backend::Postgres).await;
    let proxy = Proxy::start().await;
    let (h, rec) = open(&store.via(&proxy), &quiet_cfg()).await;
    h.append(vec![publ(S, 1, None)]).await.unwrap();
    h.append(vec![publ(S, 2, None)]).await.unwrap();

    proxy.cut();
    fails_fast_then_recovers(&h, &rec, 2, async { proxy.restore() }).await;
    h.close().await;
    drop(proxy);
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fails_cleanly_when_the_store_is_unreachable() {
    let proxy = Proxy::start().await;
    proxy.cut();
    let storage = activity_gateway::history::StorageConfig {
        url: format!("postgres://gw:s3cret@{}/nope", proxy.addr),
        max_connections: 2,
        ..activity_gateway::history::StorageConfig::default()
    };
    let err = History::open(
        &storage,
        &quiet_cfg(),
        std::sync::Arc::new(Recorder::default()),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, HistoryError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let bad = activity_gateway::history::StorageConfig {
        url: "mysql://x/y".to_owned(),
        max_connections: 2,
        ..activity_gateway::history::StorageConfig::default()
    };
    let err = History::open(&bad, &quiet_cfg(), std::sync::Arc::new(Recorder::default()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, HistoryError::Config(_)), "{err}");
}

/// Holds the committer up, inside its first batch, for longer than an append may wait.
#[derive(Default)]
struct SlowFirstBatch {
    held: AtomicBool,
    batches: Mutex<Vec<Vec<u64>>>,
}

impl CommitListener for SlowFirstBatch {
    fn committed(&self, batch: &[Committed]) {
        if !self.held.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2600));
        }
        let offsets = batch.iter().map(|c| c.position.offset).collect();
        self.batches.lock().unwrap().push(offsets);
    }
}

/// An append's 2 s bound must not tell a publisher "nothing was published" about publications
/// that were committed (and delivered): one already in a batch gets that batch's outcome, late;
/// one still queued at its deadline is answered "unavailable" and never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_past_its_deadline_is_either_committed_and_answered_or_never_committed() {
    let store = TestStore::new(Backend::Sqlite).await;
    let listener = Arc::new(SlowFirstBatch::default());
    let history = History::open(&store.storage, &quiet_cfg(), listener.clone())
        .await
        .unwrap();
    const HELD: &str = "account-activity.v1.eip155:0:0xaa";
    const QUEUED: &str = "account-activity.v1.eip155:0:0xbb";

    let first = tokio::spawn({
        let h = history.clone();
        async move { h.append(vec![publ(HELD, 0, None)]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Queued behind the held batch until after its own deadline.
    let queued = history.append(vec![publ(QUEUED, 1, None)]).await;
    assert!(
        matches!(&queued, Err(HistoryError::Unavailable(m)) if m.contains("no commit within")),
        "{queued:?}"
    );

    let first = first
        .await
        .unwrap()
        .expect("committed, so answered with its position");
    assert_eq!(first[0].position.offset, 1);
    assert!(history.is_available());
    // Give the committer the chance it must not take.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tops = history
        .positions(&[HELD.to_owned(), QUEUED.to_owned()])
        .await
        .unwrap();
    assert_eq!((tops[0].offset, tops[1].offset), (1, 0));
    assert_eq!(*listener.batches.lock().unwrap(), vec![vec![1]]);
    history.close().await;
    store.cleanup().await;
}

/// A PostgreSQL database that answers but cannot write (here: read-only) is a steady outage:
/// the probe commits a real write, so a server that only answers reads does not bring the
/// store back while every batch would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_cannot_write_stays_unavailable() {
    let store = TestStore::new(Backend::Postgres).await;
    let (h, _rec) = open(&store.storage, &quiet_cfg()).await;
    h.append(vec![publ(S, 1, None)]).await.unwrap();
    let db = store.storage.url.rsplit('/').next().unwrap().to_owned();
    let set_read_only = |on: bool| {
        let db = db.clone();
        async move {
            let mut admin = sqlx::PgConnection::connect(history_support::PG_ADMIN)
                .await
                .unwrap();
            let alter = if on {
                format!("ALTER DATABASE {db} SET default_transaction_read_only = on")
            } else {
                format!("ALTER DATABASE {db} RESET default_transaction_read_only")
            };
            admin.execute(alter.as_str()).await.unwrap();
            // Connections take the default when they start: end the gateway's.
            let kill = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            );
            admin.execute(kill.as_str()).await.unwrap();
            admin.close().await.unwrap();
        }
    };
    set_read_only(true).await;
    // The first append may meet a terminated connection; both outcomes mark the store down.
    for n in 2..4 {
        let _ = h.append(vec![publ(S, n, None)]).await;
    }
    assert!(!h.is_available());
    // Four probes' worth: it never comes back while writes cannot commit.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            !h.is_available(),
            "a read-only database was taken for writable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_read_only(false).await;
    assert!(
        eventually(10, || h.is_available()).await,
        "the probe restores availability"
    );
    let out = h.append(vec![publ(S, 9, None)]).await.unwrap();
    assert_eq!(out[0].position.offset, 2);
    h.close().await;
    store.cleanup().await;
}
