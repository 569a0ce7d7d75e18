//! The life of connections and of the process: graceful shutdown on SIGTERM, a slow consumer
//! that must not hurt anyone else, and the TCP-level idle and handshake timeouts.
mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;

const AA: &str = "account-activity.v1";
const MD: &str = "market-data.v1";
const BASE_USDC: &str =
    "market-data.v1.eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913.1m.usd";

/// Subscribes and consumes the reply and the `up` notifications that follow it (one per
/// namespace in `ups`).
async fn subscribe_up(c: &mut WsClient, channels: &[&str], ups: usize) {
    let r = c.subscribe_as("s", channels).await;
    assert_eq!(r["event"], "subscribed", "{r}");
    for _ in 0..ups {
        assert_eq!(c.next_status().await["data"]["status"], "up");
    }
}

/// Reads everything until the connection ends: the text messages (timestamps removed) and
/// how it ended, with when.
async fn read_to_end(mut c: WsClient, started: Instant) -> (Vec<Value>, Ended, Duration) {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut c.ws),
        )
        .await
        {
            Err(_) => panic!("still open 10 s after SIGTERM; got {got:?}"),
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                got.push(without_ts(serde_json::from_str(&t).unwrap()));
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                let ended = f.map_or(Ended::Close(1005, String::new()), |f| {
                    Ended::Close(f.code.into(), f.reason.to_string())
                });
                return (got, ended, started.elapsed());
            }
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => return (got, Ended::Dropped, started.elapsed()),
        }
    }
}

#[tokio::test]
async fn sigterm_drains_gracefully() {
    let mut gw = TestGateway::start(&[("GATEWAY__SERVER__DRAIN_WINDOW", "2s")]).await;
    for chain in ["eip155:1", "eip155:8453", SOL_MAINNET] {
        gw.heartbeat(chain).await;
    }
    let mut evm = gw.client().await;
    subscribe_up(&mut evm, &[&aa("eip155:0", ADDR_A)], 1).await;
    let mut sol = gw.client().await;
    subscribe_up(&mut sol, &[&aa("solana:0", SOL)], 1).await;
    let mut polygon = gw.client().await; // eip155:137 is down: nothing to tell it
    subscribe_up(&mut polygon, &[&aa("eip155:137", ADDR_A)], 0).await;
    let mut mixed = gw.client().await;
    subscribe_up(&mut mixed, &[&aa("eip155:8453", ADDR_B)], 1).await;
    subscribe_up(&mut mixed, &[BASE_USDC], 1).await;
    let bare = gw.client().await;

    let started = Instant::now();
    let readers: Vec<_> = [evm, sol, polygon, mixed, bare]
        .into_iter()
        .map(|c| tokio::spawn(read_to_end(c, started)))
        .collect();
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();

    // Not ready any more, and new upgrades are refused.
    let ready = loop {
        let r = gw.get("/readyz").await;
        if r.0 == 503 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/readyz still {r:?} 1 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        serde_json::from_str::<Value>(&ready.1).unwrap(),
        json!({"ready": false, "reason": "draining"})
    );
    match tokio_tungstenite::connect_async(gw.ws_url(&gw.token("late", 3600))).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "draining", "{body}");
        }
        other => panic!(
            "a new upgrade during the drain was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    let mut results = Vec::new();
    for r in readers {
        results.push(r.await.unwrap());
    }
    let restart = Ended::Close(1012, "server restart: reconnect".into());
    let down = |ns, chains: &[&str]| status_msg(ns, chains, "down");
    assert_eq!(
        (&results[0].0, &results[0].1),
        (&vec![down(AA, &["eip155:1", "eip155:8453"])], &restart)
    );
    assert_eq!(
        (&results[1].0, &results[1].1),
        (&vec![down(AA, &[SOL_MAINNET])], &restart)
    );
    assert_eq!((&results[2].0, &results[2].1), (&vec![], &restart));
    let mut mixed = results[3].0.clone();
    mixed.sort_by_key(|m| m["channel"].to_string());
    assert_eq!(
        (mixed, &results[3].1),
        (
            vec![down(AA, &["eip155:8453"]), down(MD, &["eip155:8453"])],
            &restart
        )
    );
    assert_eq!((&results[4].0, &results[4].1), (&vec![], &restart));
    for (_, _, at) in &results {
        assert!(
            *at < Duration::from_millis(2000),
            "closed {at:?} after SIGTERM, beyond the drain window"
        );
    }

    let exit = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "still running 4 s after SIGTERM (drain window 2 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_slow_consumer_is_closed_without_hurting_anyone() {
    const BATCH: u64 = 40;
    const TOTAL_BYTES: usize = 20 * 1024 * 1024;
    let gw = TestGateway::start(&[
        ("GATEWAY__SERVER__MAX_QUEUE_BYTES", "65536"),
        ("GATEWAY__PUBLISH__MAX_PUBLICATION_BYTES", "16384"),
    ])
    .await;
    let channel = aa("eip155:0", ADDR_A);
    let mut slow = gw.client().await;
    slow.subscribe(&[&channel]).await;
    let mut normal = gw.client().await;
    let sub = normal.subscribe(&[&channel]).await["data"]["subscriptionId"].clone();

    let one =
        json!({"channel": aa("eip155:8453", ADDR_A), "data": activity(ADDR_A, "eip155:8453", 0)});
    let per_item = one.to_string().len();
    let total = (TOTAL_BYTES / per_item) as u64 / BATCH * BATCH;

    // The normal client reads everything and reports how far it got.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        for n in 0..total {
            let p = normal.next_push().await;
            assert_eq!(p["subscriptionId"], sub);
            assert_eq!(
                p["data"]["tx"]["timestamp"],
                1760099871 + n,
                "out of order or lost at {n}"
            );
            if (n + 1) % BATCH == 0 {
                let _ = progress_tx.send(n + 1);
            }
        }
        normal
    });

    // The publisher keeps at most one batch ahead of the normal client (so that it never
    // overflows a 64 KiB queue), and never waits for the slow one.
    let publisher = {
        let http = gw.http.clone();
        let url = gw.url("/v1/publish");
        let key = gw.publisher_key.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for start in (0..total).step_by(BATCH as usize) {
                let floor = start.saturating_sub(BATCH);
                tokio::time::timeout(
                    Duration::from_secs(10),
                    progress.wait_for(|&got| got >= floor),
                )
                .await
                .expect("the normal client stopped receiving")
                .unwrap();
                let items: Vec<Value> = (start..start + BATCH)
                    .map(|n| json!({"channel": aa("eip155:8453", ADDR_A), "data": activity(ADDR_A, "eip155:8453", n)}))
                    .collect();
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"publications": items}))
                    .send()
                    .await
                    .unwrap();
                slowest = slowest.max(t.elapsed());
                assert_eq!(r.status().as_u16(), 200);
            }
            slowest
        })
    };

    // As soon as the slow client has been cut, read it: the close frame is waiting behind the
    // data its socket buffers hold (it is sent within a 5 s grace).
    let series = "gateway_slow_consumer_disconnects_total";
    let mut peak_rss = 0;
    wait_until(
        Duration::from_secs(60),
        "the slow consumer to be cut",
        || {
            let gw = &gw;
            peak_rss = peak_rss.max(rss_kb(gw.pid()));
            async move { gw.metric(series).await == 1.0 }
        },
    )
    .await;
    let mut pushes_before_close = 0;
    let ended = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut slow.ws),
        )
        .await
        {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))) => {
                pushes_before_close += 1
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                let f = f.expect("close frame");
                break Ended::Close(f.code.into(), f.reason.to_string());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the slow client's connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(
        ended,
        Ended::Close(1013, "slow consumer: outbound queue overflowed".into())
    );
    assert!(
        pushes_before_close > 0 && (pushes_before_close as u64) < total,
        "{pushes_before_close}"
    );

    while !publisher.is_finished() {
        peak_rss = peak_rss.max(rss_kb(gw.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slowest = publisher.await.unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "a publish call took {slowest:?}"
    );
    let mut normal = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("normal client done")
        .unwrap();
    normal.expect_no_push(Duration::from_millis(200)).await;
    peak_rss = peak_rss.max(rss_kb(gw.pid()));
    assert!(peak_rss < 100 * 1024, "gateway RSS peaked at {peak_rss} kB");
    assert_eq!(gw.metric(series).await, 1.0, "only the slow client was cut");
    assert_eq!(
        gw.metric(r#"gateway_disconnects_total{reason="slow_consumer"}"#)
            .await,
        1.0
    );
    // The slow client never reads past the close frame, so it never answers it: its
    // connection is held until the close linger (2 s) runs out, then dropped.
    wait_until(
        Duration::from_secs(5),
        "the slow client's connection dropped after its close linger",
        || async { gw.metric("gateway_connections_open").await == 1.0 },
    )
    .await;
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__IDLE_TIMEOUT", "500ms")]).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("idle connection still open after 3 s")
        .unwrap_or(0);
    let at = started.elapsed();
    assert_eq!(n, 0, "got bytes: {:?}", &buf[..n]);
    assert!(
        at >= Duration::from_millis(400) && at < Duration::from_millis(1500),
        "closed after {at:?}"
    );

    // A connection that speaks within the timeout is served.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(3), tcp.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn a_request_head_trickling_in_is_cut_at_the_handshake_timeout() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__HANDSHAKE_TIMEOUT", "1s")]).await;
    let token = gw.token("slowloris", 3600);
    let head = format!(
        "GET /v1?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let started = Instant::now();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let closed = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        (
            started.elapsed(),
            String::from_utf8_lossy(&got).into_owned(),
        )
    });
    // One byte every 100 ms: the whole head would take far longer than the timeout.
    let mut sent = 0;
    for b in head.as_bytes() {
        if closed.is_finished() || wr.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (at, resp) = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("never cut")
        .unwrap();
    assert!(sent < head.len(), "the whole head went through");
    assert!(!resp.contains(" 101 "), "upgraded: {resp}");
    assert!(
        at >= Duration::from_millis(900) && at < Duration::from_millis(2500),
        "cut after {at:?}"
    );
}

#[tokio::test]
async fn metrics_tell_the_rust_heap_from_sqlites() {
    let gw = TestGateway::start(&[]).await;
    // Sampled at start and every 5 s; the first sample may predate the history's connections.
    wait_until(
        Duration::from_secs(8),
        "gateway_sqlite_memory_bytes > 0",
        || async { gw.metric("gateway_sqlite_memory_bytes").await > 0.0 },
    )
    .await;
    let allocated = gw.metric("gateway_allocator_allocated_bytes").await;
    let resident = gw.metric("gateway_allocator_resident_bytes").await;
    // A started gateway holds at least its router, registry and metrics: more than 100 KB.
    assert!(allocated > 100_000.0, "allocated {allocated}");
    assert!(
        resident >= allocated,
        "resident {resident} < allocated {allocated}"
    );
    let rss = rss_kb(gw.pid()) * 1024;
    assert!(
        resident < rss as f64,
        "jemalloc resident {resident} >= process RSS {rss}"
    );
}
