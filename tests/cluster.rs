//! Cluster mode: several gateway processes sharing PostgreSQL and NATS (JetStream server on
//! 127.0.0.1:4222). Each test uses its own database and its own broker subject prefix.
mod common;

use std::time::Duration;

use activity_gateway::client::{Client, ClientConfig, Event};
use common::backend::Store;
use common::exactly_once::ExactlyOnce;
use common::proxy::Proxy;
use common::*;
use serde_json::{json, Value};

const NATS: &str = "127.0.0.1:4222";

/// Starts a node of the cluster named by `prefix`, sharing `first`'s keys when given.
async fn node(
    store: &Store,
    prefix: &str,
    nats: &str,
    first: Option<&TestGateway>,
    extra: &[(&str, &str)],
) -> TestGateway {
    let nats_url = format!("nats://{nats}");
    let mut env: Vec<(&str, &str)> = vec![
        ("GATEWAY__STORAGE__URL", &store.url),
        ("GATEWAY__BROKER__URL", &nats_url),
        ("GATEWAY__BROKER__SUBJECT_PREFIX", prefix),
    ];
    if let Some(f) = first {
        env.push(("GATEWAY__AUTH__HS256_SECRET", &f.secret));
        env.push(("GATEWAY__PUBLISH__API_KEYS", &f.publisher_key));
        env.push(("GATEWAY__ADMIN__API_KEYS", &f.admin_key));
    }
    env.extend_from_slice(extra);
    let gw = TestGateway::start(&env).await;
    // Ready once connected to NATS (a node may start before its broker answers).
    wait_until(Duration::from_secs(10), "node ready", || async {
        gw.get("/readyz").await.0 == 200
    })
    .await;
    gw
}

fn prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

fn account(i: usize) -> String {
    format!("0x{i:040x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_node_gets_what_is_published_on_another_once_in_order() {
    let store = Store::postgres().await;
    let p = prefix();
    let a = node(&store, &p, NATS, None, &[]).await;
    let b = node(&store, &p, NATS, Some(&a), &[]).await;
    let mut plain = a.client().await;
    plain.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let mut other = a.client().await;
    other.subscribe(&[&aa("eip155:0", ADDR_B)]).await;
    let mut acking = Client::connect(ClientConfig::new(
        format!("ws://{}/v1", a.addr),
        a.token("w", 3600),
    ))
    .await
    .unwrap();
    acking.subscribe(&[aa("eip155:0", ADDR_A)]).await.unwrap();

    for chunk in 0..10 {
        let pubs: Vec<Value> = (0..50)
            .map(|j| json!({"channel": aa("eip155:8453", ADDR_A), "data": {"n": chunk * 50 + j}}))
            .collect();
        let (s, body) = b.publish(json!({"publications": pubs})).await;
        assert_eq!(s, 200, "{body}");
    }
    for n in 0..500 {
        assert_eq!(plain.next_push().await["data"]["n"], n);
        loop {
            match acking.next_event().await.unwrap() {
                Event::Notification(x) => {
                    assert_eq!(x.data["n"], n);
                    break;
                }
                Event::System { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    plain.expect_no_push(Duration::from_millis(300)).await;
    other.expect_no_push(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_the_client_resumes_on_another_without_loss() {
    const N: usize = 3_000;
    const ACCOUNTS: usize = 20;
    let store = Store::postgres().await;
    let p = prefix();
    let mut a = node(&store, &p, NATS, None, &[]).await;
    let b = node(&store, &p, NATS, Some(&a), &[]).await;
    let lb = Proxy::start(a.addr).await;
    let mut client = Client::connect(ClientConfig::new(
        format!("ws://{}/v1", lb.addr),
        a.token("w", 3600),
    ))
    .await
    .unwrap();
    let channels: Vec<String> = (0..ACCOUNTS).map(|i| aa("eip155:0", &account(i))).collect();
    client.subscribe(&channels).await.unwrap();

    let key = b.publisher_key.clone();
    let url = b.url("/v1/publish");
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for batch in 0..N / 100 {
            let pubs: Vec<Value> = (0..100)
                .map(|j| {
                    let n = batch * 100 + j;
                    json!({"channel": aa("eip155:1", &account(n % ACCOUNTS)), "id": format!("k{n}"), "data": {"seq": n / ACCOUNTS}})
                })
                .collect();
            loop {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"publications": pubs}))
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status() == 200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut tally = ExactlyOnce::default();
    let mut killed = false;
    while tally.count() < N {
        let event = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("stalled at {} of {N}", tally.count()))
            .unwrap();
        if let Event::Notification(n) = event {
            tally.record(&n);
        }
        if !killed && tally.count() >= N / 3 {
            a.child.kill().unwrap();
            a.child.wait().unwrap();
            lb.retarget(b.addr);
            lb.cut();
            killed = true;
        }
    }
    publisher.await.unwrap();
    assert!(killed && client.reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_reports_down_refuses_publishes_and_recovers_without_loss() {
    let store = Store::postgres().await;
    let p = prefix();
    let nats_proxy = Proxy::start(NATS.parse().unwrap()).await;
    let a = node(&store, &p, &nats_proxy.addr.to_string(), None, &[]).await;
    let b = node(&store, &p, NATS, Some(&a), &[]).await;
    b.heartbeat("eip155:1").await;
    let mut c = a.client().await;
    let ch = aa("eip155:0", ADDR_A);
    c.subscribe(&[&ch]).await;
    // The heartbeat sent to B reached A through the broker.
    wait_until(Duration::from_secs(5), "eip155:1 up on A", || async {
        a.get("/v1/chains/eip155:1").await.1.contains("\"up\"")
    })
    .await;
    assert_eq!(a.metric("gateway_broker_connected").await, 1.0);

    nats_proxy.down();
    let down = loop {
        let s = next_status(&mut c).await;
        if s["data"]["status"] == "down" {
            break s;
        }
    };
    assert!(down["data"]["chainIds"]
        .as_array()
        .unwrap()
        .contains(&json!("eip155:1")));
    assert_eq!(a.get("/readyz").await.0, 503);
    let (s, body) = a
        .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 0}}))
        .await;
    assert_eq!(
        (s, body["error"].clone()),
        (503, json!("store_unavailable")),
        "{body}"
    );
    // Accepted elsewhere while A is cut off: must reach A's client after recovery.
    for n in 1..=3 {
        assert_eq!(
            b.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": n}}))
                .await
                .0,
            200
        );
    }

    nats_proxy.up();
    // A catches up from the history first, then says up.
    let mut caught_up = Vec::new();
    let up = loop {
        let m = c
            .recv_within(Duration::from_secs(15))
            .await
            .expect("no up within 15 s");
        match m["event"].as_str() {
            Some("data") => caught_up.push(m["data"]["n"].clone()),
            _ => break m,
        }
    };
    assert_eq!(up["data"]["status"], "up", "{up}");
    assert_eq!(caught_up, [json!(1), json!(2), json!(3)]);
    wait_until(Duration::from_secs(10), "A ready again", || async {
        a.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(
        b.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 4}}))
            .await
            .0,
        200
    );
    assert_eq!(c.next_push().await["data"]["n"], 4);
    assert_eq!(
        a.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 5}}))
            .await
            .0,
        200
    );
    assert_eq!(c.next_push().await["data"]["n"], 5);
}

/// The next system notification, skipping pushes.
async fn next_status(c: &mut WsClient) -> Value {
    loop {
        let m = c
            .recv_within(Duration::from_secs(15))
            .await
            .expect("no status within 15 s");
        if m["event"] == "system-notification" {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listens_only_to_keys_its_clients_hold() {
    let store = Store::postgres().await;
    let p = prefix();
    let a = node(&store, &p, NATS, None, &[]).await;
    let b = node(&store, &p, NATS, Some(&a), &[]).await;
    let mut c = a.client().await;
    let sub = c.subscribe(&[&aa("eip155:0", ADDR_A)]).await["data"]["subscriptionId"]
        .as_str()
        .unwrap()
        .to_owned();
    // B has no client: publishing for A's account through B reaches A only via A's interest.
    assert_eq!(
        b.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}}))
            .await
            .0,
        200
    );
    assert_eq!(c.next_push().await["data"]["n"], 1);
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u", "subscription": sub}}))
        .await;
    c.reply_to("u").await;
    assert_eq!(
        b.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 2}}))
            .await
            .0,
        200
    );
    c.expect_no_push(Duration::from_millis(300)).await;
}
