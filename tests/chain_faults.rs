//! The polling signal under faults, against the real binary: a wallet connected when the
//! history store or the broker fails hears `down` within 2 s of the fault, never `up` while it
//! lasts (not even on a fresh heartbeat), `up` after recovery, and every publication the
//! gateway accepted, in ack mode, once and in order.
mod common;

use std::time::{Duration, Instant};

use common::backend::Store;
use common::proxy::Proxy;
use common::wallet::Wallet;
use common::*;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

const CHAIN: &str = "eip155:1";
const NATS: &str = "127.0.0.1:4222";

fn publication(seq: i64) -> Value {
    json!({"channel": aa(CHAIN, ADDR_A), "data": {"seq": seq}})
}

/// Publishes on its own task, so the wallet is watched while the request waits.
fn publish_in_background(gw: &TestGateway, seq: i64) -> tokio::task::JoinHandle<(u16, Value)> {
    let (url, key, http) = (
        gw.url("/v1/publish"),
        gw.publisher_key.clone(),
        gw.http.clone(),
    );
    tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(key)
            .json(&publication(seq))
            .send()
            .await
            .expect("http");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    })
}

async fn view(gw: &TestGateway) -> Value {
    let (s, body) = gw.get(&format!("/v1/chains/{CHAIN}")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A chain kept alive by heartbeats, a wallet told `up`, publication 0 delivered.
async fn healthy(gw: &TestGateway) -> Wallet {
    gw.heartbeat(CHAIN).await;
    let mut w = Wallet::connect(gw, &aa(CHAIN, ADDR_A)).await;
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(5)).await,
        Some(true)
    );
    assert_eq!(gw.publish(publication(0)).await.0, 200);
    assert_eq!(w.seqs(1, Duration::from_secs(5)).await, vec![0]);
    w
}

/// The fault is in force since `since`; an indexer keeps publishing (its publication is
/// refused) and sending heartbeats. A store fault shows at the first write, so the
/// publication goes out at once; a broker cut shows by itself, and a publication racing its
/// detection could be accepted, so it goes out once `down` was heard. Returns the chain's
/// view during the fault.
async fn during_fault(gw: &TestGateway, w: &mut Wallet, since: Instant, store: bool) -> Value {
    let mut refused = store.then(|| publish_in_background(gw, 1));
    let left = Duration::from_secs(2).saturating_sub(since.elapsed());
    assert_eq!(
        w.status_within(CHAIN, left).await,
        Some(false),
        "down within 2 s of the fault"
    );
    eprintln!("down {} ms after the fault", since.elapsed().as_millis());
    let refused = refused.get_or_insert_with(|| publish_in_background(gw, 1));
    let (s, body) = refused.await.unwrap();
    assert_eq!(
        (s, body["error"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    gw.heartbeat(CHAIN).await;
    w.no_up_for(CHAIN, Duration::from_millis(1500)).await;
    let v = view(gw).await;
    assert_eq!(v["status"], "down", "{v}");
    assert_eq!(v["inputs"]["freshSignOfLife"], true, "{v}");
    v
}

/// The fault is over: `up` again, the refused publication retried, nothing lost.
async fn recovered(gw: &TestGateway, w: &mut Wallet) {
    let recovered_at = Instant::now();
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(15)).await,
        Some(true),
        "up after recovery"
    );
    eprintln!(
        "up {} ms after the recovery",
        recovered_at.elapsed().as_millis()
    );
    let v = view(gw).await;
    assert_eq!(
        v["inputs"],
        json!({"freshSignOfLife": true, "storeWritable": true, "brokerConnected": true})
    );
    for seq in [1, 2] {
        let (s, body) = gw.publish(publication(seq)).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(w.seqs(3, Duration::from_secs(10)).await, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_locked() {
    let gw = TestGateway::start(&[]).await;
    let mut w = healthy(&gw).await;

    let db = format!("sqlite://{}/gateway.db", gw.data_dir.path().display());
    let mut locker = sqlx::SqliteConnection::connect(&db).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let v = during_fault(&gw, &mut w, Instant::now(), true).await;
    assert_eq!(v["inputs"]["storeWritable"], false, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("history store not writable")),
        "{v}"
    );

    locker.execute("ROLLBACK").await.unwrap();
    recovered(&gw, &mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut() {
    let store = Store::postgres().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = store.url_via(proxy.addr);
    let gw = TestGateway::start(&[("GATEWAY__STORAGE__URL", &url)]).await;
    let mut w = healthy(&gw).await;

    proxy.down();
    let v = during_fault(&gw, &mut w, Instant::now(), true).await;
    assert_eq!(v["inputs"]["storeWritable"], false, "{v}");

    proxy.up();
    recovered(&gw, &mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cut() {
    let store = Store::postgres().await;
    let proxy = Proxy::start(NATS.parse().unwrap()).await;
    let nats = format!("nats://{}", proxy.addr);
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let gw = TestGateway::start(&[
        ("GATEWAY__STORAGE__URL", &store.url),
        ("GATEWAY__BROKER__URL", &nats),
        ("GATEWAY__BROKER__SUBJECT_PREFIX", &prefix),
    ])
    .await;
    wait_until(Duration::from_secs(10), "node ready", || async {
        gw.get("/readyz").await.0 == 200
    })
    .await;
    let mut w = healthy(&gw).await;

    proxy.down();
    let v = during_fault(&gw, &mut w, Instant::now(), false).await;
    assert_eq!(v["inputs"]["brokerConnected"], false, "{v}");
    assert_eq!(v["reason"], "cluster broker unreachable", "{v}");

    proxy.up();
    recovered(&gw, &mut w).await;
}

/// After a broker cut a node says `up` only once it caught up: what another node accepted
/// meanwhile reaches the wallet before the `up` that lets it stop polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_cut_up_follows_the_catch_up() {
    let store = Store::postgres().await;
    let proxy = Proxy::start(NATS.parse().unwrap()).await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let via_proxy = format!("nats://{}", proxy.addr);
    let direct = format!("nats://{NATS}");
    let env = |nats: &str| {
        vec![
            ("GATEWAY__STORAGE__URL".to_owned(), store.url.clone()),
            ("GATEWAY__BROKER__URL".to_owned(), nats.to_owned()),
            ("GATEWAY__BROKER__SUBJECT_PREFIX".to_owned(), prefix.clone()),
        ]
    };
    let a_env = env(&via_proxy);
    let a = TestGateway::start(
        &a_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    let mut b_env = env(&direct);
    b_env.push(("GATEWAY__AUTH__HS256_SECRET".into(), a.secret.clone()));
    b_env.push(("GATEWAY__PUBLISH__API_KEYS".into(), a.publisher_key.clone()));
    let b = TestGateway::start(
        &b_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    for gw in [&a, &b] {
        wait_until(Duration::from_secs(10), "node ready", || async {
            gw.get("/readyz").await.0 == 200
        })
        .await;
    }
    b.heartbeat(CHAIN).await;
    wait_until(
        Duration::from_secs(5),
        "B's heartbeat heard on A",
        || async { view(&a).await["status"] == "up" },
    )
    .await;
    let mut w = Wallet::connect(&a, &aa(CHAIN, ADDR_A)).await;
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(5)).await,
        Some(true)
    );

    proxy.down();
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(2)).await,
        Some(false)
    );
    for seq in 0..20 {
        assert_eq!(b.publish(publication(seq)).await.0, 200);
    }
    proxy.up();
    assert_eq!(
        w.status_within(CHAIN, Duration::from_secs(15)).await,
        Some(true)
    );
    let before_up: Vec<i64> = w
        .pushes
        .iter()
        .map(|d| d["seq"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        before_up,
        (0..20).collect::<Vec<_>>(),
        "everything accepted meanwhile, before the up"
    );
}
