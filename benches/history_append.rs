//! Publish throughput into the history: `--concurrency` tasks each append `--batch`
//! publications at a time (1 by default; the publish API takes up to 1000 per request) to
//! `--streams` streams for `--seconds`, after a 1s warm-up; prints sustained publications/s
//! and the append latency percentiles.
//!
//! `cargo bench --bench history_append -- --backend sqlite|postgres --seconds 10 --concurrency 64 [--batch 10]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_gateway::history::{
    CommitListener, Committed, History, HistoryConfig, NewPublication, StorageConfig,
};
use hdrhistogram::Histogram;
use sqlx::Connection;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const WARMUP: Duration = Duration::from_secs(1);

struct Args {
    backend: String,
    seconds: u64,
    concurrency: usize,
    streams: usize,
    batch: usize,
}

/// Counts what the committer hands over, like a hub that only enqueues.
#[derive(Default)]
struct Counting(AtomicU64);

impl CommitListener for Counting {
    fn committed(&self, batch: &[Committed]) {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: "sqlite".to_owned(),
        seconds: 10,
        concurrency: 64,
        streams: 1000,
        batch: 1,
    };
    // `cargo test --all-targets` runs benches without `--bench`: a one-second smoke run then,
    // so the test command checks the bench still works without spending ten seconds on it.
    if !std::env::args().any(|a| a == "--bench") {
        args.seconds = 1;
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match a.as_str() {
            "--backend" => args.backend = val(),
            "--seconds" => args.seconds = val().parse().unwrap_or(10),
            "--concurrency" => args.concurrency = val().parse().unwrap_or(64),
            "--streams" => args.streams = val().parse().unwrap_or(1000),
            "--batch" => args.batch = val().parse().unwrap_or(1).max(1),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("gw_bench_{:016x}", rand::random::<u64>());
    let storage = match args.backend.as_str() {
        "postgres" => {
            let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
                .await
                .expect("postgres");
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut admin)
                .await
                .expect("create database");
            StorageConfig {
                url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
                max_connections: 8,
                ..StorageConfig::default()
            }
        }
        _ => StorageConfig {
            url: format!("sqlite://{}", dir.path().join("gateway.db").display()),
            ..StorageConfig::default()
        },
    };
    let listener = Arc::new(Counting::default());
    let history = History::open(&storage, &HistoryConfig::default(), listener.clone())
        .await
        .expect("open");

    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let h = history.clone();
        let streams = args.streams;
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut n = 0u64;
            let mut i = t;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut pubs = Vec::with_capacity(batch);
                for _ in 0..batch {
                    pubs.push(NewPublication {
                        stream: format!("account-activity.v1.eip155:0:0x{:040x}", i % streams),
                        channel: format!("account-activity.v1.eip155:1:0x{:040x}", i % streams),
                        payload: format!(
                            "{{\"address\":\"0x{:040x}\",\"tx\":{{\"hash\":\"0x{:064x}\",\"status\":\"confirmed\"}},\"updates\":[]}}",
                            i % streams, i
                        ),
                        idempotency_key: Some(format!("{t}-{i}")),
                    });
                    i += args_stride();
                }
                let res = h.append(pubs).await;
                let done = Instant::now();
                if res.is_err() {
                    eprintln!("append failed: {:?}", res.err());
                    continue;
                }
                if now >= measure_from {
                    let us = done.duration_since(now).as_micros() as u64;
                    let _ = hist.record(us.max(1));
                    n += batch as u64;
                }
            }
            (hist, n)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut total = 0;
    for t in tasks {
        let (h, n) = t.await.expect("task");
        all.add(h).expect("merge");
        total += n;
    }
    let secs = args.seconds as f64;
    println!(
        "backend={} concurrency={} batch={} streams={} seconds={} publications={} rate={:.0}/s \
         latency p50={:.2}ms p99={:.2}ms max={:.2}ms listener_saw={}",
        args.backend,
        args.concurrency,
        args.batch,
        args.streams,
        args.seconds,
        total,
        total as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
        listener.0.load(Ordering::Relaxed),
    );
    if args.backend != "postgres" {
        // The background checkpoints should keep the WAL from growing without bound.
        let wal = std::fs::metadata(dir.path().join("gateway.db-wal")).map_or(0, |m| m.len());
        println!("sqlite_wal_bytes={wal}");
    }
    history.close().await;
    if args.backend == "postgres" {
        if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Each task walks the streams with a prime stride so that batches mix streams.
fn args_stride() -> usize {
    7919
}
