//! Publish throughput into the history: `--concurrency` tasks each append one publication at
//! a time (as the publish API does) to `--streams` streams for `--seconds`, after a 1s
//! warm-up; prints sustained publications/s and the append latency percentiles.
//!
//! `cargo bench --bench history_append -- --backend sqlite|postgres --seconds 10 --concurrency 64`

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
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match a.as_str() {
            "--backend" => args.backend = val(),
            "--seconds" => args.seconds = val().parse().unwrap_or(10),
            "--concurrency" => args.concurrency = val().parse().unwrap_or(64),
            "--streams" => args.streams = val().parse().unwrap_or(1000),
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
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut n = 0u64;
            let mut i = t;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let p = NewPublication {
                    stream: format!("account-activity.v1.eip155:0:0x{:040x}", i % streams),
                    channel: format!("account-activity.v1.eip155:1:0x{:040x}", i % streams),
                    payload: format!(
                        "{{\"address\":\"0x{:040x}\",\"tx\":{{\"hash\":\"0x{:064x}\",\"status\":\"confirmed\"}},\"updates\":[]}}",
                        i % streams, i
                    ),
                    idempotency_key: Some(format!("{t}-{i}")),
                };
                i += args_stride();
                let res = h.append(vec![p]).await;
                let done = Instant::now();
                if res.is_err() {
                    eprintln!("append failed: {:?}", res.err());
                    continue;
                }
                if now >= measure_from {
                    let us = done.duration_since(now).as_micros() as u64;
                    let _ = hist.record(us.max(1));
                    n += 1;
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
        "backend={} concurrency={} streams={} seconds={} publications={} rate={:.0}/s \
         latency p50={:.2}ms p99={:.2}ms max={:.2}ms listener_saw={}",
        args.backend,
        args.concurrency,
        args.streams,
        args.seconds,
        total,
        total as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
        listener.0.load(Ordering::Relaxed),
    );
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
