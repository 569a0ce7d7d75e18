//! The polling signal across restarts and nodes, against the real binary: an operator's
//! override survives a restart, a chain healthy just before a restart shorter than
//! `stale_after` is `up` at once after it, and two nodes fed only by JetStream (heartbeats and
//! publications, through one shared durable consumer) agree on every chain.
mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::backend::Store;
use common::wallet::Wallet;
use common::*;
use serde_json::{json, Value};

const CHAIN: &str = "eip155:1";

async fn view(gw: &TestGateway, chain: &str) -> Value {
    let (s, body) = gw.get(&format!("/v1/chains/{chain}")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `env` plus the keys of `first`, so a restarted node accepts the same tokens and keys.
fn same_keys<'a>(first: &'a TestGateway, env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = env.to_vec();
    env.push(("GATEWAY__AUTH__HS256_SECRET", &first.secret));
    env.push(("GATEWAY__PUBLISH__API_KEYS", &first.publisher_key));
    env.push(("GATEWAY__ADMIN__API_KEYS", &first.admin_key));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_override_survives_a_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    override_survives_a_restart(&format!("sqlite://{}/gateway.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_override_survives_a_restart_postgres() {
    let store = Store::postgres().await;
    override_survives_a_restart(&store.url).await;
}

async fn override_survives_a_restart(db: &str) {
    let env = [("GATEWAY__STORAGE__URL", db)];
    let first = TestGateway::start(&env).await;
    let (s, v) = first.set_status(CHAIN, "down").await;
    assert_eq!((s, v["mode"].as_str()), (200, Some("down")), "{v}");
    first.heartbeat(CHAIN).await;

    let second = TestGateway::start(&same_keys(&first, &env)).await;
    drop(first);
    // From its first answer on, the new process honours the stored override.
    assert_eq!(second.get("/readyz").await.0, 200);
    let v = view(&second, CHAIN).await;
    assert_eq!(
        (
            v["mode"].as_str(),
            v["status"].as_str(),
            v["reason"].as_str()
        ),
        (
            Some("down"),
            Some("down"),
            Some("forced down by an operator")
        ),
        "{v}"
    );
    let mut w = Wallet::connect(&second, &aa(CHAIN, ADDR_A)).await;
    second.heartbeat(CHAIN).await;
    w.no_up_for(CHAIN, Duration::from_millis(1500)).await;

    // Lifting it brings the chain back, and delivery was never affected.
    let (s, v) = second.set_status(CHAIN, "auto").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("up")), "{v}");
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(5)).await,
        Some(true)
    );
    let p = json!({"channel": aa(CHAIN, ADDR_A), "data": {"seq": 0}});
    assert_eq!(second.publish(p).await.0, 200);
    assert_eq!(w.seqs(1, Duration::from_secs(5)).await, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shorter_than_stale_after_keeps_healthy_chains_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/gateway.db", dir.path().display());
    // Signs of life are written every stale_after / 4 = 2.5 s.
    let env = [
        ("GATEWAY__STORAGE__URL", db.as_str()),
        ("GATEWAY__CHAINS__STALE_AFTER", "10s"),
    ];
    let first = TestGateway::start(&env).await;
    first.heartbeat(CHAIN).await;
    // Past the next write, with room for a loaded machine.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let keys = [
        first.secret.clone(),
        first.publisher_key.clone(),
        first.admin_key.clone(),
    ];
    let killed = std::time::Instant::now();
    drop(first); // SIGKILL: nothing is flushed on the way out.

    let mut env2 = env.to_vec();
    env2.push(("GATEWAY__AUTH__HS256_SECRET", &keys[0]));
    env2.push(("GATEWAY__PUBLISH__API_KEYS", &keys[1]));
    env2.push(("GATEWAY__ADMIN__API_KEYS", &keys[2]));
    let second = TestGateway::start(&env2).await;
    let mut w = Wallet::connect(&second, &aa("eip155:0", ADDR_A)).await;
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(2)).await,
        Some(true),
        "the chain seen alive just before the restart is up right after it"
    );
    let v = view(&second, CHAIN).await;
    assert_eq!(v["status"], "up", "{v}");
    assert!(
        v["lastSeenMsAgo"].as_u64().is_some_and(|ms| ms >= 3000),
        "{v}"
    );
    // Never seen: still down.
    assert_eq!(view(&second, "eip155:137").await["status"], "down");
    // Without further heartbeats it goes down when its last one (before the restart) is
    // stale_after old, not stale_after after the restart.
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(12)).await,
        Some(false)
    );
    assert!(
        killed.elapsed() < Duration::from_secs(11),
        "{:?}",
        killed.elapsed()
    );
}

/// Two nodes sharing PostgreSQL, NATS and one JetStream durable consumer: each message is
/// consumed by one node only, yet both wallets hear the chain `up` and get the publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fed_only_by_jetstream_agree() {
    let store = Store::postgres().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("T{id}"), format!("t{id}"));
    let env = [
        ("GATEWAY__STORAGE__URL", store.url.as_str()),
        ("GATEWAY__BROKER__URL", "nats://127.0.0.1:4222"),
        ("GATEWAY__BROKER__SUBJECT_PREFIX", prefix.as_str()),
        ("GATEWAY__INGEST__JETSTREAM__URL", "nats://127.0.0.1:4222"),
        ("GATEWAY__INGEST__JETSTREAM__STREAM", stream.as_str()),
        (
            "GATEWAY__INGEST__JETSTREAM__SUBJECT_PREFIX",
            prefix.as_str(),
        ),
        ("GATEWAY__INGEST__JETSTREAM__DURABLE", "gw"),
        ("GATEWAY__INGEST__JETSTREAM__ACK_WAIT", "2s"),
    ];
    let a = TestGateway::start(&env).await;
    let b = TestGateway::start(&same_keys(&a, &env)).await;
    let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    let _cleanup = DeleteStream(js.clone(), stream.clone());
    wait_until(Duration::from_secs(20), "stream and consumer", || async {
        match js.get_stream(&stream).await {
            Ok(s) => s.consumer_info("gw").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    for gw in [&a, &b] {
        wait_until(Duration::from_secs(10), "node ready", || async {
            gw.get("/readyz").await.0 == 200
        })
        .await;
    }
    let mut wa = Wallet::connect(&a, &aa(CHAIN, ADDR_A)).await;
    let mut wb = Wallet::connect(&b, &aa(CHAIN, ADDR_A)).await;

    // One heartbeat: consumed by one node, heard on both.
    js.publish(format!("{prefix}.chains.{CHAIN}.heartbeat"), "".into())
        .await
        .unwrap()
        .await
        .unwrap();
    for w in [&mut wa, &mut wb] {
        assert_eq!(
            w.status_within(CHAIN, Duration::from_secs(5)).await,
            Some(true)
        );
    }
    for gw in [&a, &b] {
        assert_eq!(view(gw, CHAIN).await["inputs"]["freshSignOfLife"], true);
    }

    // One publication: committed by one node, delivered on both.
    js.publish(
        format!("{prefix}.activity.{CHAIN}.{ADDR_A}"),
        json!({"seq": 0}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    for w in [&mut wa, &mut wb] {
        assert_eq!(w.seqs(1, Duration::from_secs(10)).await, vec![0]);
    }
}

/// Deletes a test's JetStream stream when the test ends, however it ends.
struct DeleteStream(jetstream::Context, String);

impl Drop for DeleteStream {
    fn drop(&mut self) {
        let (js, stream) = (self.0.clone(), self.1.clone());
        block_on_detached(async move {
            let _ = js.delete_stream(&stream).await;
        });
    }
}

/// A node that joins a cluster learns the chains the others saw alive before it started (here
/// each node has its own store, so only the running node can tell it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_learns_the_others_view() {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("GATEWAY__BROKER__URL", "nats://127.0.0.1:4222"),
        ("GATEWAY__BROKER__SUBJECT_PREFIX", prefix.as_str()),
    ];
    let a = TestGateway::start(&env).await;
    wait_until(Duration::from_secs(10), "node ready", || async {
        a.get("/readyz").await.0 == 200
    })
    .await;
    a.heartbeat(CHAIN).await;

    let b = TestGateway::start(&same_keys(&a, &env)).await;
    let mut w = Wallet::connect(&b, &aa(CHAIN, ADDR_A)).await;
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(2)).await,
        Some(true),
        "up on the joining node without a new sign of life"
    );
    assert_eq!(view(&b, "eip155:137").await["status"], "down");
}
