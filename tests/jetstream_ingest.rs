//! JetStream ingest against the real nats-server (127.0.0.1:4222) and PostgreSQL: the gateway
//! killed and restarted while 10,000 messages stream in, a crash between the history commit
//! and the ack, malformed messages, and heartbeats.
//!
//! Each test uses its own stream, durable and subject prefix, and deletes its stream at the end.
mod common;

use common::exactly_once::ExactlyOnce;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use activity_gateway::client::{Client, ClientConfig, Event};
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use common::backend::Store;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NATS: &str = "nats://127.0.0.1:4222";
const DURABLE: &str = "gw";
const ACCOUNTS: usize = 100;
const MESSAGES: usize = 10_000;

fn account(i: usize) -> String {
    format!("0x{i:040x}")
}

/// One test's stream on the shared nats-server, deleted on drop.
struct Js {
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl Js {
    async fn new() -> Js {
        let client = async_nats::connect(NATS)
            .await
            .expect("nats-server with JetStream on 127.0.0.1:4222");
        let id = uuid::Uuid::new_v4().simple().to_string();
        Js {
            js: jetstream::new(client),
            stream: format!("T{id}"),
            prefix: format!("t{id}"),
        }
    }

    /// The gateway's environment for this stream, on `storage`, acks awaited 2 s.
    fn env(&self, storage: &str) -> Vec<(String, String)> {
        [
            ("GATEWAY__STORAGE__URL", storage),
            ("GATEWAY__INGEST__JETSTREAM__URL", NATS),
            ("GATEWAY__INGEST__JETSTREAM__STREAM", &self.stream),
            ("GATEWAY__INGEST__JETSTREAM__SUBJECT_PREFIX", &self.prefix),
            ("GATEWAY__INGEST__JETSTREAM__DURABLE", DURABLE),
            ("GATEWAY__INGEST__JETSTREAM__ACK_WAIT", "2s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn activity_subject(&self, chain: &str, address: &str) -> String {
        format!("{}.activity.{chain}.{address}", self.prefix)
    }

    /// Publishes and waits for JetStream's ack.
    async fn publish(&self, subject: String, id: Option<&str>, body: impl Into<bytes::Bytes>) {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("stored by JetStream");
    }

    /// The gateway created the stream and its durable consumer.
    async fn wait_for_consumer(&self) {
        wait_until(Duration::from_secs(20), "stream and consumer", || async {
            self.consumer().await.is_some()
        })
        .await;
    }

    async fn consumer(&self) -> Option<consumer::Info> {
        let stream = self.js.get_stream(&self.stream).await.ok()?;
        stream.consumer_info(DURABLE).await.ok()
    }

    /// Waits until the consumer has nothing undelivered and nothing unacknowledged.
    async fn wait_drained(&self) -> consumer::Info {
        wait_until(Duration::from_secs(30), "consumer drained", || async {
            self.consumer()
                .await
                .is_some_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
        })
        .await;
        self.consumer().await.unwrap()
    }
}

impl Drop for Js {
    fn drop(&mut self) {
        let (js, stream) = (self.js.clone(), self.stream.clone());
        block_on_detached(async move {
            let _ = js.delete_stream(&stream).await;
        });
    }
}

async fn start(env: &[(String, String)]) -> TestGateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestGateway::start(&env).await
}

fn with(mut env: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    env.push((k.into(), v.into()));
    env
}

fn ingest_series(result: &str) -> String {
    format!(r#"gateway_ingest_messages_total{{result="{result}"}}"#)
}

/// 10,000 messages published to the stream while the node is killed with SIGKILL and
/// restarted on the same store: the acking client gets every one once, in per-account order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_delivers_every_message_once_in_order() {
    let store = Store::postgres().await;
    let js = Js::new().await;
    // Batches larger than what is in flight at once: the restarted node can fetch newer
    // messages while the killed node's are still unacknowledged, and must hold them back.
    let env = with(
        js.env(&store.url),
        "GATEWAY__INGEST__JETSTREAM__BATCH",
        "1000",
    );
    // Longer than a restart takes: the killed node's messages are still pending then.
    let env = with(env, "GATEWAY__INGEST__JETSTREAM__ACK_WAIT", "5s");
    let mut gw = start(&env).await;
    js.wait_for_consumer().await;
    let port = gw.addr.port();
    let mut client = Client::connect(ClientConfig::new(
        format!("ws://127.0.0.1:{port}/v1"),
        gw.token("w", 3600),
    ))
    .await
    .unwrap();
    let channels: Vec<String> = (0..ACCOUNTS).map(|i| aa("eip155:0", &account(i))).collect();
    for chunk in channels.chunks(50) {
        client.subscribe(chunk).await.expect("subscribe");
    }

    // Paced at about the ingest rate, so that the node is busy when it is killed and the
    // restart happens mid-stream.
    let publisher = {
        let (ctx, prefix) = (js.js.clone(), js.prefix.clone());
        tokio::spawn(async move {
            for chunk in 0..MESSAGES / 100 {
                let mut acks = Vec::with_capacity(100);
                for j in 0..100 {
                    let n = chunk * 100 + j;
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        format!("m-{n}").as_str(),
                    );
                    let subject =
                        format!("{prefix}.activity.eip155:8453.{}", account(n % ACCOUNTS));
                    let body = json!({"n": n, "seq": n / ACCOUNTS}).to_string();
                    acks.push(
                        ctx.publish_with_headers(subject, headers, body.into())
                            .await
                            .unwrap(),
                    );
                }
                for ack in acks {
                    ack.await.expect("stored by JetStream");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut seen_n = HashSet::new();
    let mut tally = ExactlyOnce::default();
    let mut restarted = None;
    while seen_n.len() < MESSAGES {
        if restarted.is_none() && seen_n.len() >= 2_000 {
            // Kill while a batch is fetched and not yet acknowledged.
            wait_until(Duration::from_secs(10), "a batch in flight", || async {
                js.consumer().await.is_some_and(|i| i.num_ack_pending > 0)
            })
            .await;
            gw.child.kill().unwrap();
            gw.child.wait().unwrap();
            let env = with(
                js.env(&store.url),
                "GATEWAY__INGEST__JETSTREAM__BATCH",
                "1000",
            );
            let env = with(env, "GATEWAY__INGEST__JETSTREAM__ACK_WAIT", "5s");
            let listen = format!("127.0.0.1:{port}");
            let env = with(env, "GATEWAY__SERVER__LISTEN", &listen);
            let env = with(env, "GATEWAY__AUTH__HS256_SECRET", &gw.secret);
            restarted = Some(start(&env).await);
        }
        let event = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {MESSAGES}", seen_n.len()))
            .expect("client");
        if let Event::Notification(n) = event {
            tally.record(&n);
            let number = n.data["n"].as_u64().unwrap();
            assert!(seen_n.insert(number), "message n={number} ingested twice");
        }
    }
    publisher.await.unwrap();
    assert!(
        client.reconnects >= 1,
        "the client must have lived through the kill"
    );
    let gw2 = restarted.expect("the node was killed and restarted");
    let info = js.wait_drained().await;
    assert_eq!(info.ack_floor.stream_sequence, MESSAGES as u64);
    // No notification more arrives: every message was delivered exactly once. (A chain status
    // notification may still come: it is not a publication.)
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(event) = tokio::time::timeout_at(quiet_until, client.next_event()).await {
        let event = event.expect("client");
        assert!(
            !matches!(event, Event::Notification(_)),
            "a notification after all {MESSAGES} were delivered: {event:?}"
        );
    }
    assert_eq!(gw2.metric(&ingest_series("malformed")).await, 0.0);
    // The killed node's batch came back to the restarted one.
    let redelivered = gw2.metric("gateway_ingest_redeliveries_total").await;
    eprintln!(
        "restarted node: accepted {}, duplicate {}, redelivered {redelivered}",
        gw2.metric(&ingest_series("accepted")).await,
        gw2.metric(&ingest_series("duplicate")).await,
    );
    assert!(redelivered > 0.0, "the kill must catch a batch in flight");
}

/// A TCP proxy to PostgreSQL that, once armed, lets the next append through and then holds
/// every reply: the batch is committed, but the gateway never learns it.
struct CommitTrap {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
    sprung: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitTrap {
    async fn start(target: &str) -> CommitTrap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let sprung = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let (a, s) = (armed.clone(), sprung.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (a, s, s2) = (a.clone(), s.clone(), s.clone());
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                tokio::spawn(async move {
                    // The append is one autocommitted call of `history_append`: the first time
                    // a connection runs it, sqlx sends its Parse (with the text) and, after
                    // the describe round trip, a Bind + Execute. The trap springs on that
                    // Execute: it reaches PostgreSQL (and commits), its reply does not.
                    let mut parsed = false;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = ri.read(&mut buf).await {
                        if n == 0 || wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let chunk = &buf[..n];
                        if a.load(Ordering::SeqCst) {
                            if chunk.windows(14).any(|w| w == b"history_append") {
                                parsed = true;
                            } else if parsed && chunk.first() == Some(&b'B') {
                                s.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = ro.read(&mut buf).await {
                        if n == 0 || s2.load(Ordering::SeqCst) {
                            break;
                        }
                        if wi.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Hold the connection open, answering nothing.
                    std::future::pending::<()>().await;
                });
            }
        });
        CommitTrap {
            addr,
            armed,
            sprung,
            task,
        }
    }
}

impl Drop for CommitTrap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real crash this guards against: the history commit succeeded, the node died before
/// acknowledging to JetStream. A proxy in front of PostgreSQL lets the COMMIT through and
/// swallows its reply, the node is then killed with SIGKILL; JetStream redelivers the message
/// to the restarted node, which finds its id already stored: no second push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_crash_between_commit_and_ack_is_not_delivered_twice() {
    let store = Store::postgres().await;
    let js = Js::new().await;
    let trap = CommitTrap::start("127.0.0.1:5432").await;
    let trapped = store.url_via(trap.addr);
    let mut gw = start(&js.env(&trapped)).await;
    js.wait_for_consumer().await;

    trap.armed.store(true, Ordering::SeqCst);
    let subject = js.activity_subject("eip155:8453", ADDR_A);
    js.publish(
        subject.clone(),
        Some("crash-1"),
        json!({"n": 1}).to_string(),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the append went through",
        || async { trap.sprung.load(Ordering::SeqCst) },
    )
    .await;
    let pool = sqlx::PgPool::connect(&store.url).await.unwrap();
    wait_until(Duration::from_secs(5), "the publication committed", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM publications WHERE idempotency_key = 'crash-1'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await;
    pool.close().await;
    let info = js.consumer().await.unwrap();
    assert_eq!(
        (info.num_ack_pending, info.ack_floor.stream_sequence),
        (1, 0),
        "committed but not acknowledged"
    );
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    drop(trap);

    let gw2 = start(&js.env(&store.url)).await;
    let ch = aa("eip155:0", ADDR_A);
    let mut c = gw2
        .client_at(&format!("{}&ack=1", gw2.ws_url(&gw2.token("w", 3600))))
        .await;
    let reply = c.subscribe(&[&ch]).await;
    assert_eq!(
        reply["data"]["positions"][&ch]["offset"], 1,
        "the publication was committed before the crash: {reply}"
    );
    gw2.wait_metric(&ingest_series("duplicate"), 1.0, Duration::from_secs(15))
        .await;
    c.expect_no_push(Duration::from_millis(500)).await;
    js.wait_drained().await;
    assert_eq!(gw2.metric(&ingest_series("accepted")).await, 0.0);

    // The stream goes on: the next message is the next offset, delivered once.
    js.publish(subject, Some("crash-2"), json!({"n": 2}).to_string())
        .await;
    let p = c.next_push().await;
    assert_eq!(
        (p["data"]["n"].clone(), p["position"]["offset"].clone()),
        (json!(2), json!(2))
    );
    c.expect_no_push(Duration::from_millis(300)).await;
}

/// Bad subjects, bodies that are not JSON and publications the validator refuses are counted,
/// terminated (not redelivered), and do not hold back the valid message behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_terminated_and_do_not_block() {
    let store = Store::postgres().await;
    let js = Js::new().await;
    let gw = start(&js.env(&store.url)).await;
    js.wait_for_consumer().await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;

    let p = &js.prefix;
    let good = js.activity_subject("eip155:8453", ADDR_A);
    let other = "0x0000000000000000000000000000000000000001";
    let bad: Vec<(String, Vec<u8>)> = vec![
        (format!("{p}.activity.eip155:8453"), b"{}".to_vec()),
        (
            format!("{p}.activity.eip155:8453.{ADDR_A}.x"),
            b"{}".to_vec(),
        ),
        (format!("{p}.chains.eip155:1.beat"), Vec::new()),
        (good.clone(), b"not json".to_vec()),
        (
            good.clone(),
            json!({"address": other}).to_string().into_bytes(),
        ),
        (good.clone(), b"[1,2]".to_vec()),
        (js.activity_subject("eip155:0", ADDR_A), b"{}".to_vec()),
    ];
    for (subject, body) in &bad {
        js.publish(subject.clone(), None, body.clone()).await;
    }
    js.publish(good, None, json!({"n": 1}).to_string()).await;

    let push = c.next_push().await;
    assert_eq!(push["data"], json!({"n": 1}));
    assert_eq!(push["channel"], aa("eip155:8453", ADDR_A), "{push}");
    gw.wait_metric(
        &ingest_series("malformed"),
        bad.len() as f64,
        Duration::from_secs(10),
    )
    .await;
    // Counted once its ack is sent, which may be after the push reached the client.
    gw.wait_metric(&ingest_series("accepted"), 1.0, Duration::from_secs(10))
        .await;
    let info = js.wait_drained().await;
    assert_eq!(info.ack_floor.stream_sequence, bad.len() as u64 + 1);
    assert_eq!(info.num_redelivered, 0, "terminated, not redelivered");
    c.expect_no_push(Duration::from_millis(300)).await;
}

/// A `Nats-Msg-Id` the store cannot hold (a NUL, or longer than the publish API's 128 bytes) is
/// counted and terminated like any malformed message, instead of being nak'd forever and
/// stalling the consumer: the message behind it is delivered. So is a body too large for a
/// subscriber's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_msg_ids_and_oversized_bodies_are_terminated_and_do_not_stall_the_consumer() {
    let store = Store::sqlite().await;
    let js = Js::new().await;
    let gw = start(&js.env(&store.url)).await;
    js.wait_for_consumer().await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;

    let good = js.activity_subject("eip155:8453", ADDR_A);
    let long = "x".repeat(129);
    for id in ["bad\u{0}id", long.as_str()] {
        js.publish(good.clone(), Some(id), json!({"n": 0}).to_string())
            .await;
    }
    // A body larger than publish.max_publication_bytes (256 KiB) is malformed too.
    let huge = json!({"pad": "x".repeat(300 * 1024)}).to_string();
    js.publish(good.clone(), Some("huge-1"), huge).await;
    js.publish(good, Some("fine-1"), json!({"n": 1}).to_string())
        .await;

    let push = c.next_push().await;
    assert_eq!(push["data"], json!({"n": 1}), "{push}");
    gw.wait_metric(&ingest_series("malformed"), 3.0, Duration::from_secs(10))
        .await;
    let info = js.wait_drained().await;
    assert_eq!(info.ack_floor.stream_sequence, 4);
    assert_eq!(info.num_redelivered, 0, "terminated, not redelivered");
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, 200);
}

/// `chains.<chainId>.heartbeat` is a sign of life: the chain comes up for its subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_subject_brings_a_chain_up() {
    let store = Store::sqlite().await;
    let js = Js::new().await;
    let gw = start(&js.env(&store.url)).await;
    js.wait_for_consumer().await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    c.expect_silence(Duration::from_millis(200)).await;

    js.publish(
        format!("{}.chains.eip155:137.heartbeat", js.prefix),
        None,
        Vec::<u8>::new(),
    )
    .await;
    assert_eq!(
        c.next_status().await,
        status_msg("account-activity.v1", &["eip155:137"], "up")
    );
    let (_, view) = gw.get("/v1/chains/eip155:137").await;
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["status"], "up", "{view}");
    gw.wait_metric(&ingest_series("accepted"), 1.0, Duration::from_secs(5))
        .await;
    js.wait_drained().await;
}
