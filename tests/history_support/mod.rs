//! Shared by the `history_*` integration tests: a throw-away store per test (a tempdir for
//! SQLite, a uniquely named database for PostgreSQL), a recording listener, a cuttable TCP
//! proxy, and `both_backends!` to run every case against both backends.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use activity_gateway::history::{
    CommitListener, Committed, History, HistoryConfig, NewPublication, StorageConfig,
};
use parking_lot::Mutex;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The server every PostgreSQL test talks to (trust auth).
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `<name>_sqlite` and `<name>_postgres` tests calling `<name>(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::history_support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::history_support::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A store that exists for one test.
pub struct TestStore {
    pub backend: Backend,
    pub storage: StorageConfig,
    /// PostgreSQL database to drop at the end.
    db: Option<String>,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> TestStore {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                // A subdirectory that does not exist yet: open must create it.
                let path = dir.path().join("data").join("gateway.db");
                TestStore {
                    backend,
                    storage: StorageConfig {
                        url: format!("sqlite://{}", path.display()),
                        max_connections: 4,
                        ..StorageConfig::default()
                    },
                    db: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let db = format!("gw_t_{:016x}", rand::random::<u64>());
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                TestStore {
                    backend,
                    storage: StorageConfig {
                        url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
                        max_connections: 4,
                        ..StorageConfig::default()
                    },
                    db: Some(db),
                    _dir: None,
                }
            }
        }
    }

    /// The same store reached through `proxy` (PostgreSQL only).
    pub fn via(&self, proxy: &Proxy) -> StorageConfig {
        let db = self.db.as_deref().unwrap();
        StorageConfig {
            url: format!("postgres://postgres@{}/{db}", proxy.addr),
            max_connections: 4,
            ..StorageConfig::default()
        }
    }

    /// Drops the PostgreSQL database; call at the end of the test.
    pub async fn cleanup(self) {
        if let Some(db) = &self.db {
            let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
    }
}

/// Rows of the `streams` table, read on a connection of the test's own.
pub async fn stream_rows(storage: &StorageConfig) -> i64 {
    scalar(storage, "SELECT COUNT(*) FROM streams").await
}

/// The one integer `sql` answers, read on a connection of the test's own.
pub async fn scalar(storage: &StorageConfig, sql: &str) -> i64 {
    if storage.url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }
}

/// Records what the committer passes to the listener.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Committed>>,
}

impl CommitListener for Recorder {
    fn committed(&self, batch: &[Committed]) {
        self.seen.lock().extend_from_slice(batch);
    }
}

impl Recorder {
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }
}

/// Small history settings for tests; no trimming unless a test asks for it.
pub fn quiet_cfg() -> HistoryConfig {
    HistoryConfig {
        trim_interval: Duration::from_secs(3600),
        ..HistoryConfig::default()
    }
}

pub async fn open(storage: &StorageConfig, cfg: &HistoryConfig) -> (History, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let h = History::open(storage, cfg, rec.clone()).await.unwrap();
    (h, rec)
}

pub fn publ(stream: &str, n: usize, key: Option<&str>) -> NewPublication {
    NewPublication {
        stream: stream.to_owned(),
        channel: format!("{stream}.ch"),
        payload: format!("{{\"n\":{n}}}"),
        idempotency_key: key.map(str::to_owned),
    }
}

/// Polls `cond` every 50ms for up to `secs`.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A TCP proxy to 127.0.0.1:5432 that can be cut (every connection dropped, new ones
/// refused) and restored, standing in for a database outage.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = up.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().push(task);
                }
            })
        };
        Proxy {
            addr,
            up,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.conns.lock().drain(..) {
            task.abort();
        }
    }
}
