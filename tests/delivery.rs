//! Acknowledged delivery and lossless resume, on SQLite and on PostgreSQL: connections cut
//! at random, the gateway killed with SIGKILL, a client that never acks, failed recoveries,
//! and the store going down.
mod common;

use std::time::Duration;

use activity_gateway::client::{Client, ClientConfig, Event};
use common::backend::Store;
use common::exactly_once::ExactlyOnce;
use common::proxy::Proxy;
use common::*;
use rand::Rng;
use serde_json::{json, Value};

const ACCOUNTS: usize = 100;
const PUBLICATIONS: usize = 10_000;

fn account(i: usize) -> String {
    format!("0x{i:040x}")
}

fn wildcard(i: usize) -> String {
    aa("eip155:0", &account(i))
}

/// Publishes `PUBLICATIONS` in batches of 100, round-robin over the accounts, each with an
/// idempotency id so that a retry after an error is never delivered twice.
async fn publish_all(gw_url: impl Fn() -> String, key: &str) {
    let http = reqwest::Client::new();
    for batch in 0..PUBLICATIONS / 100 {
        let pubs: Vec<Value> = (0..100)
            .map(|j| {
                let n = batch * 100 + j;
                let a = n % ACCOUNTS;
                json!({"channel": aa("eip155:8453", &account(a)), "id": format!("p-{n}"), "data": {"n": n, "seq": n / ACCOUNTS}})
            })
            .collect();
        let body = json!({"publications": pubs});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = http
                .post(format!("{}/v1/publish", gw_url()))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status() == 200) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not recover: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Receives until every publication arrived once; asserts per-account order and no duplicate.
async fn receive_all(client: &mut Client) -> usize {
    let mut tally = ExactlyOnce::default();
    let mut resumes = 0;
    while tally.count() < PUBLICATIONS {
        let event = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {PUBLICATIONS}", tally.count()))
            .expect("client");
        match event {
            Event::Notification(n) => tally.record(&n),
            Event::Resumed { recovered } => {
                resumes += 1;
                assert!(
                    recovered.values().all(|r| *r),
                    "a recovery failed: {recovered:?}"
                );
            }
            Event::System { .. } => {}
        }
    }
    resumes
}

async fn subscribe_accounts(client: &mut Client) {
    let channels: Vec<String> = (0..ACCOUNTS).map(wildcard).collect();
    for chunk in channels.chunks(50) {
        client.subscribe(chunk).await.expect("subscribe");
    }
}

async fn cut_connections_at_random(store: Store) {
    let gw = TestGateway::start(&[("GATEWAY__STORAGE__URL", &store.url)]).await;
    let proxy = Proxy::start(gw.addr).await;
    let mut client = Client::connect(ClientConfig::new(
        format!("ws://{}/v1", proxy.addr),
        gw.token("w", 3600),
    ))
    .await
    .unwrap();
    subscribe_accounts(&mut client).await;
    let cutter = tokio::spawn({
        let proxy_cut = std::sync::Arc::new(proxy);
        async move {
            let mut cuts = 0;
            for _ in 0..40 {
                let pause = rand::thread_rng().gen_range(50..250);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                proxy_cut.cut();
                cuts += 1;
            }
            (cuts, proxy_cut)
        }
    });
    let url = gw.url("");
    let key = gw.publisher_key.clone();
    let publisher = tokio::spawn(async move { publish_all(move || url.clone(), &key).await });
    let resumes = receive_all(&mut client).await;
    publisher.await.unwrap();
    let (cuts, _proxy) = cutter.await.unwrap();
    assert!(
        cuts > 0 && resumes > 0,
        "the test must actually cut connections ({cuts} cuts, {resumes} resumes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_lose_nothing_sqlite() {
    cut_connections_at_random(Store::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_lose_nothing_postgres() {
    cut_connections_at_random(Store::postgres().await).await;
}

async fn kill_and_restart(store: Store) {
    let env = [("GATEWAY__STORAGE__URL", store.url.as_str())];
    let mut gw = TestGateway::start(&env).await;
    let port = gw.addr.port();
    let mut client = Client::connect(ClientConfig::new(
        format!("ws://127.0.0.1:{port}/v1"),
        gw.token("w", 3600),
    ))
    .await
    .unwrap();
    subscribe_accounts(&mut client).await;
    let key = gw.publisher_key.clone();
    let base = gw.url("");
    let publisher = tokio::spawn(async move { publish_all(move || base.clone(), &key).await });
    // Receive a while, kill -9 mid-stream, restart on the same store and port.
    let mut received = Vec::new();
    while received.len() < 2_000 {
        if let Ok(Event::Notification(n)) = client.next_event().await {
            received.push(n);
        }
    }
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let restart = [
        ("GATEWAY__STORAGE__URL", store.url.as_str()),
        ("GATEWAY__SERVER__LISTEN", listen.as_str()),
        ("GATEWAY__AUTH__HS256_SECRET", gw.secret.as_str()),
        ("GATEWAY__PUBLISH__API_KEYS", gw.publisher_key.as_str()),
    ];
    let _gw2 = TestGateway::start(&restart).await;
    // The client de-duplicates by position, so the total it hands out must be exactly all.
    let mut tally = ExactlyOnce::default();
    for n in &received {
        tally.record(n);
    }
    while tally.count() < PUBLICATIONS {
        let event = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {PUBLICATIONS}", tally.count()))
            .unwrap();
        if let Event::Notification(n) = event {
            tally.record(&n);
        }
    }
    publisher.await.unwrap();
    assert!(client.reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing_sqlite() {
    kill_and_restart(Store::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing_postgres() {
    kill_and_restart(Store::postgres().await).await;
}

async fn never_acking_client_is_closed_with_4010(store: Store) {
    let gw = TestGateway::start(&[
        ("GATEWAY__STORAGE__URL", &store.url),
        ("GATEWAY__DELIVERY__ACK_TIMEOUT", "300ms"),
        ("GATEWAY__DELIVERY__MAX_RETRIES", "3"),
    ])
    .await;
    let mut c = gw
        .client_at(&format!("{}&ack=1", gw.ws_url(&gw.token("w", 3600))))
        .await;
    let reply = c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let start = &reply["data"]["positions"][aa("eip155:0", ADDR_A)];
    assert_eq!(start["offset"], 0, "{reply}");
    assert!(
        start["epoch"].as_str().unwrap().starts_with("none."),
        "a stream without publications has an unborn position: {reply}"
    );
    let (_, published) = gw
        .publish(json!({"channel": aa("eip155:8453", ADDR_A), "data": {"n": 1}}))
        .await;
    let first = c.next_push().await;
    let id = first["messageId"].as_str().unwrap().to_owned();
    assert_eq!(first["position"], published["publications"][0]["position"]);
    assert_eq!(first["position"]["offset"], 1);
    assert!(first.get("redelivered").is_none());
    for _ in 0..3 {
        let again = c.next_push().await;
        assert_eq!(
            (again["messageId"].as_str(), again["redelivered"].clone()),
            (Some(id.as_str()), json!(true))
        );
        assert_eq!(again["data"], first["data"]);
    }
    assert_eq!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(4010, "ack timeout".into())
    );
    assert_eq!(gw.metric("gateway_redeliveries_total").await, 3.0);
}

#[tokio::test]
async fn never_acking_client_sqlite() {
    never_acking_client_is_closed_with_4010(Store::sqlite().await).await;
}

#[tokio::test]
async fn never_acking_client_postgres() {
    never_acking_client_is_closed_with_4010(Store::postgres().await).await;
}

async fn failed_recoveries_are_reported(store: Store) {
    let gw = TestGateway::start(&[
        ("GATEWAY__STORAGE__URL", &store.url),
        ("GATEWAY__HISTORY__RETENTION_COUNT", "5"),
        ("GATEWAY__HISTORY__TRIM_INTERVAL", "100ms"),
    ])
    .await;
    let ch = aa("eip155:0", ADDR_A);
    let ack_url = format!("{}&ack=1", gw.ws_url(&gw.token("w", 3600)));
    let mut c = gw.client_at(&ack_url).await;
    c.subscribe(&[&ch]).await;
    let pubs: Vec<Value> = (0..20)
        .map(|n| json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": n}}))
        .collect();
    let (status, published) = gw.publish(json!({"publications": pubs})).await;
    assert_eq!(status, 200);
    let epoch = published["publications"][0]["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    let resume = |positions: Value| {
        let request_id = uuid::Uuid::new_v4().to_string();
        (
            request_id.clone(),
            json!({"event": "subscribe", "data": {"requestId": request_id, "channels": [ch], "positions": positions}}),
        )
    };
    let mut fresh = gw.client_at(&ack_url).await;
    // Stale epoch.
    let (rid, msg) = resume(json!({ch.clone(): {"epoch": "0123456789abcdef", "offset": 3}}));
    fresh.send(msg).await;
    let r = fresh.reply_to(&rid).await;
    assert_eq!(
        r["data"]["recovery"][&ch],
        json!({"recovered": false, "replayed": 0, "reason": "epoch_changed"})
    );
    assert_eq!(
        r["data"]["positions"][&ch],
        json!({"epoch": epoch, "offset": 20})
    );
    // Beyond the end (each resume on its own connection: a connection that already receives
    // a stream gets `already_subscribed`).
    let mut fresh = gw.client_at(&ack_url).await;
    let (rid, msg) = resume(json!({ch.clone(): {"epoch": epoch, "offset": 99}}));
    fresh.send(msg).await;
    assert_eq!(
        fresh.reply_to(&rid).await["data"]["recovery"][&ch]["reason"],
        "beyond_end"
    );
    // Trimmed: retention keeps the last 5, so offset 2 cannot be resumed from.
    gw.wait_metric(
        "gateway_history_trimmed_total",
        15.0,
        Duration::from_secs(10),
    )
    .await;
    let mut fresh = gw.client_at(&ack_url).await;
    let (rid, msg) = resume(json!({ch.clone(): {"epoch": epoch, "offset": 2}}));
    fresh.send(msg).await;
    let r = fresh.reply_to(&rid).await;
    assert_eq!(
        r["data"]["recovery"][&ch],
        json!({"recovered": false, "replayed": 0, "reason": "trimmed"})
    );
    // A good position replays exactly what follows it, in order, then goes live.
    let mut again = gw.client_at(&ack_url).await;
    let (rid, msg) = resume(json!({ch.clone(): {"epoch": epoch, "offset": 17}}));
    again.send(msg).await;
    let r = again.reply_to(&rid).await;
    assert_eq!(
        r["data"]["recovery"][&ch],
        json!({"recovered": true, "replayed": 3})
    );
    for n in 17..20 {
        let p = again.next_push().await;
        assert_eq!(
            (p["data"]["n"].clone(), p["position"]["offset"].clone()),
            (json!(n), json!(n + 1))
        );
    }
}

#[tokio::test]
async fn failed_recoveries_sqlite() {
    failed_recoveries_are_reported(Store::sqlite().await).await;
}

#[tokio::test]
async fn failed_recoveries_postgres() {
    failed_recoveries_are_reported(Store::postgres().await).await;
}

#[tokio::test]
async fn a_client_without_ack_mode_sees_no_extension_fields() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let ch = aa("eip155:0", ADDR_A);
    let r = c.subscribe(&[&ch]).await;
    assert!(
        r["data"].get("positions").is_none() && r["data"].get("recovery").is_none(),
        "{r}"
    );
    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}}))
        .await;
    let p = c.next_push().await;
    assert!(
        p.get("messageId").is_none() && p.get("position").is_none(),
        "{p}"
    );
}

/// While the store is down: 503 with Retry-After, nothing delivered, readyz false; then it
/// recovers by itself.
async fn store_down_then_up(
    gw: &TestGateway,
    down: impl std::future::Future<Output = ()>,
    up: impl std::future::Future<Output = ()>,
) {
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    down.await;
    let body = json!({"publications": [
        {"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}},
        {"channel": "market-data.v1.eip155:1/slip44:60.1m.usd", "data": {"close": 1}}]});
    let r = gw
        .http
        .post(gw.url("/v1/publish"))
        .bearer_auth(&gw.publisher_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "store_unavailable", "{v}");
    assert_eq!(gw.get("/readyz").await.0, 503);
    c.expect_no_push(Duration::from_millis(300)).await;
    up.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = gw
            .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 2}}))
            .await;
        if s == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = c.next_push().await;
    assert_eq!(
        p["data"],
        json!({"n": 2}),
        "the refused publication must never arrive"
    );
    assert_eq!(gw.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_during_publish_sqlite() {
    use sqlx::Connection;
    let store = Store::sqlite().await;
    let gw = TestGateway::start(&[("GATEWAY__STORAGE__URL", &store.url)]).await;
    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(None));
    let (l1, l2) = (lock.clone(), lock.clone());
    let url = store.url.clone();
    store_down_then_up(
        &gw,
        async move {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            *l1.lock().await = Some(conn);
        },
        async move {
            let mut conn = l2.lock().await.take().unwrap();
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_during_publish_postgres() {
    let store = Store::postgres().await;
    let proxy = std::sync::Arc::new(Proxy::start("127.0.0.1:5432".parse().unwrap()).await);
    let url = store.url_via(proxy.addr);
    let gw = TestGateway::start(&[("GATEWAY__STORAGE__URL", &url)]).await;
    let (p1, p2) = (proxy.clone(), proxy.clone());
    store_down_then_up(&gw, async move { p1.down() }, async move { p2.up() }).await;
}
