//! Chain status and the polling-fallback signal: the chain API, heartbeats, staleness,
//! operator overrides, and the `system-notification`s each connection gets (only for the
//! chains its subscriptions concern).
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const AA: &str = "account-activity.v1";
const MD: &str = "market-data.v1";
const QUIET: Duration = Duration::from_millis(250);
const BASE_USDC: &str =
    "market-data.v1.eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913.1m.usd";

fn status_series(chain: &str) -> String {
    format!(r#"gateway_chain_status{{chain="{chain}"}}"#)
}

async fn view(gw: &TestGateway, chain: &str) -> Value {
    let (s, body) = gw.get(&format!("/v1/chains/{chain}")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Reads the reply to a subscribe, then asserts what follows: one `up` listing `up` (none
/// when empty), then nothing.
async fn subscribe_expecting(c: &mut WsClient, channels: &[&str], ns: &str, up: &[&str]) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    c.send(json!({"event": "subscribe", "data": {"requestId": id, "channels": channels}}))
        .await;
    let reply = c.recv().await;
    assert_eq!(
        (reply["event"].as_str(), reply["data"]["requestId"].as_str()),
        (Some("subscribed"), Some(id.as_str())),
        "{reply}"
    );
    if !up.is_empty() {
        assert_eq!(c.next_status().await, status_msg(ns, up, "up"));
    }
    c.expect_silence(QUIET).await;
    reply
}

#[tokio::test]
async fn configured_chains_are_listed_down_with_a_reason() {
    let gw = TestGateway::start(&[]).await;
    let (s, body) = gw.get("/v1/chains").await;
    assert_eq!(s, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    let down = |id: &str| {
        json!({"chainId": id, "status": "down", "mode": "auto", "reason": "no heartbeat or publication seen yet",
               "inputs": {"freshSignOfLife": false, "storeWritable": true, "brokerConnected": true},
               "staleAfterMs": 60000, "lastSeenMsAgo": null})
    };
    assert_eq!(
        body,
        json!({"chains": [down("eip155:1"), down("eip155:137"), down("eip155:8453"), down(SOL_MAINNET)]})
    );
    assert_eq!(gw.metric(&status_series("eip155:1")).await, 0.0);
    assert!(gw
        .get("/metrics")
        .await
        .1
        .contains(&format!("{} 0", status_series(SOL_MAINNET))));

    let (s, hb) = gw
        .post(
            "/v1/chains/eip155:137/heartbeat",
            &gw.publisher_key,
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            s,
            hb["chainId"].as_str(),
            hb["status"].as_str(),
            hb["mode"].as_str()
        ),
        (200, Some("eip155:137"), Some("up"), Some("auto")),
        "{hb}"
    );
    let v = view(&gw, "eip155:137").await;
    assert_eq!(v["status"], "up");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("last heartbeat or publication "),
        "{v}"
    );
    assert!(
        v["lastSeenMsAgo"].as_u64().is_some_and(|ms| ms < 5000),
        "{v}"
    );
    assert_eq!(gw.metric(&status_series("eip155:137")).await, 1.0);
    assert_eq!(gw.metric(&status_series("eip155:1")).await, 0.0);

    let (s, body) = gw.get("/v1/chains/eip155:10").await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "unknown_chain"
    );
}

#[tokio::test]
async fn heartbeats_notify_only_the_connections_they_concern() {
    let gw = TestGateway::start(&[]).await;
    let mut evm = gw.client().await;
    let mut sol = gw.client().await;
    let mut base = gw.client().await;
    let mut idle = gw.client().await;
    subscribe_expecting(&mut evm, &[&aa("eip155:0", ADDR_A)], AA, &[]).await;
    subscribe_expecting(&mut sol, &[&aa("solana:0", SOL)], AA, &[]).await;
    subscribe_expecting(&mut base, &[&aa("eip155:8453", ADDR_B)], AA, &[]).await;

    gw.heartbeat("eip155:1").await;
    assert_eq!(evm.next_status().await, status_msg(AA, &["eip155:1"], "up"));
    gw.heartbeat(SOL_MAINNET).await;
    assert_eq!(
        sol.next_status().await,
        status_msg(AA, &[SOL_MAINNET], "up")
    );
    gw.heartbeat("eip155:8453").await;
    assert_eq!(
        evm.next_status().await,
        status_msg(AA, &["eip155:8453"], "up")
    );
    assert_eq!(
        base.next_status().await,
        status_msg(AA, &["eip155:8453"], "up")
    );
    // No change, no notification.
    gw.heartbeat("eip155:1").await;
    gw.heartbeat("eip155:8453").await;
    for c in [&mut evm, &mut sol, &mut base, &mut idle] {
        c.expect_silence(QUIET).await;
    }
    assert_eq!(
        gw.metric(r#"gateway_system_notifications_total{status="up"}"#)
            .await,
        4.0
    );
}

#[tokio::test]
async fn each_subscribe_is_followed_by_one_up_for_the_relevant_up_chains() {
    let gw = TestGateway::start(&[]).await;
    let mut early = gw.client().await;
    // Nothing is up yet: no `up` at all.
    subscribe_expecting(&mut early, &[&aa("eip155:0", ADDR_A)], AA, &[]).await;

    for chain in ["eip155:1", "eip155:8453", SOL_MAINNET] {
        gw.heartbeat(chain).await;
    }
    let mut c = gw.client().await;
    subscribe_expecting(&mut c, &[&aa("eip155:137", ADDR_A)], AA, &[]).await;
    subscribe_expecting(
        &mut c,
        &[&aa("eip155:0", ADDR_A)],
        AA,
        &["eip155:1", "eip155:8453"],
    )
    .await;
    // Repeated for every subscribe, even when nothing changed.
    subscribe_expecting(
        &mut c,
        &[&aa("eip155:0", ADDR_B)],
        AA,
        &["eip155:1", "eip155:8453"],
    )
    .await;
    subscribe_expecting(
        &mut c,
        &[&aa("solana:0", SOL), &aa("eip155:8453", ADDR_B)],
        AA,
        &["eip155:8453", SOL_MAINNET],
    )
    .await;
    subscribe_expecting(&mut c, &[BASE_USDC], MD, &["eip155:8453"]).await;
    // A subscribe that fails entirely is no subscription: no `up`.
    subscribe_expecting(&mut c, &["bogus"], AA, &[]).await;
}

#[tokio::test]
async fn a_chain_without_heartbeats_goes_down_and_clients_are_told() {
    let gw = TestGateway::start(&[
        ("GATEWAY__CHAINS__STALE_AFTER", "500ms"),
        ("GATEWAY__CHAINS__CHECK_INTERVAL", "50ms"),
    ])
    .await;
    let mut c = gw.client().await;
    subscribe_expecting(&mut c, &[&aa("eip155:0", ADDR_A)], AA, &[]).await;
    gw.heartbeat("eip155:8453").await;
    assert_eq!(
        c.next_status().await,
        status_msg(AA, &["eip155:8453"], "up")
    );
    gw.heartbeat("eip155:1").await;
    let beat = tokio::time::Instant::now();
    assert_eq!(c.next_status().await, status_msg(AA, &["eip155:1"], "up"));

    // eip155:8453 keeps beating and stays up; eip155:1 goes quiet and goes down.
    let keep_alive = {
        let http = gw.http.clone();
        let url = gw.url("/v1/chains/eip155:8453/heartbeat");
        let key = gw.publisher_key.clone();
        tokio::spawn(async move {
            loop {
                let r = http.post(&url).bearer_auth(&key).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    assert_eq!(c.next_status().await, status_msg(AA, &["eip155:1"], "down"));
    let after = beat.elapsed();
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_millis(1500),
        "down after {after:?}"
    );
    c.expect_silence(Duration::from_millis(700)).await;
    keep_alive.abort();

    let v = view(&gw, "eip155:1").await;
    assert_eq!(
        (v["status"].as_str(), v["staleAfterMs"].as_u64()),
        (Some("down"), Some(500))
    );
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no heartbeat or publication for ")
            && reason.ends_with("(stale after 500ms)"),
        "{reason}"
    );
    assert_eq!(gw.metric(&status_series("eip155:1")).await, 0.0);
    assert_eq!(
        c.next_status().await,
        status_msg(AA, &["eip155:8453"], "down"),
        "8453 goes down once its heartbeats stop"
    );
}

#[tokio::test]
async fn admin_overrides_notify_and_auto_returns_to_signs_of_life() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    subscribe_expecting(&mut c, &[&aa("eip155:0", ADDR_A)], AA, &[]).await;
    let eth = "eip155:1";

    let (s, v) = gw.set_status(eth, "up").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"chainId": eth, "status": "up", "mode": "up", "reason": "forced up by an operator",
               "inputs": {"freshSignOfLife": false, "storeWritable": true, "brokerConnected": true},
               "staleAfterMs": 60000, "lastSeenMsAgo": null})
    );
    assert_eq!(c.next_status().await, status_msg(AA, &[eth], "up"));
    assert_eq!(gw.metric(&status_series(eth)).await, 1.0);

    // Back to auto: no sign of life yet, so down.
    let (s, v) = gw.set_status(eth, "auto").await;
    assert_eq!(
        (s, v["status"].as_str(), v["mode"].as_str()),
        (200, Some("down"), Some("auto"))
    );
    assert_eq!(c.next_status().await, status_msg(AA, &[eth], "down"));
    assert_eq!(gw.metric(&status_series(eth)).await, 0.0);

    gw.heartbeat(eth).await;
    assert_eq!(c.next_status().await, status_msg(AA, &[eth], "up"));

    let (s, v) = gw.set_status(eth, "down").await;
    assert_eq!(
        (s, v["status"].as_str(), v["reason"].as_str()),
        (200, Some("down"), Some("forced down by an operator"))
    );
    assert_eq!(c.next_status().await, status_msg(AA, &[eth], "down"));
    // Forced down ignores signs of life; publishing to it is still allowed and delivered.
    gw.heartbeat(eth).await;
    let (s, b) = gw
        .publish(json!({"channel": aa(eth, ADDR_A), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.recv().await["data"], json!({"n": 1}));
    c.expect_silence(QUIET).await;
    assert_eq!(view(&gw, eth).await["status"], "down");
    // Setting the same mode again changes nothing.
    assert_eq!(gw.set_status(eth, "down").await.0, 200);
    c.expect_silence(QUIET).await;

    // Auto again, with a recent sign of life: up.
    let (s, v) = gw.set_status(eth, "auto").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("up")));
    assert_eq!(c.next_status().await, status_msg(AA, &[eth], "up"));
    assert_eq!(gw.metric(&status_series(eth)).await, 1.0);
    assert_eq!(
        gw.metric(r#"gateway_system_notifications_total{status="down"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn the_admin_api_refuses_unknown_and_invalid_chains() {
    let gw = TestGateway::start(&[]).await;
    let (s, b) = gw.set_status("eip155:10", "up").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("unknown_chain")),
        "{b}"
    );
    for bad in ["bogus", "eip155:0", "eip155:", "EIP155:1"] {
        let (s, b) = gw.set_status(bad, "up").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {b}"
        );
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A heartbeat makes a chain known; then the admin API accepts it.
    gw.heartbeat("eip155:10").await;
    let (s, b) = gw.set_status("eip155:10", "down").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("down")), "{b}");
}

#[tokio::test]
async fn a_publication_is_a_sign_of_life() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let sub = subscribe_expecting(&mut c, &[&aa("eip155:0", ADDR_A)], AA, &[]).await["data"]
        ["subscriptionId"]
        .clone();
    assert_eq!(gw.metric(&status_series("eip155:8453")).await, 0.0);
    let (s, b) = gw
        .publish(json!({"channel": aa("eip155:8453", ADDR_A), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200, "{b}");
    let mut got = vec![c.recv().await, c.recv().await];
    got.sort_by_key(|m| m["event"].to_string());
    assert_eq!(
        (got[0]["event"].as_str(), got[0]["subscriptionId"].clone()),
        (Some("data"), sub)
    );
    assert_eq!(
        without_ts(got.pop().unwrap()),
        status_msg(AA, &["eip155:8453"], "up")
    );
    assert_eq!(view(&gw, "eip155:8453").await["status"], "up");
    assert_eq!(gw.metric(&status_series("eip155:8453")).await, 1.0);
    // An unknown chain becomes known by its first publication (and concerns an eip155
    // wildcard subscriber, although the push itself is for another account).
    gw.publish(json!({"channel": aa("eip155:10", ADDR_B), "data": {}}))
        .await;
    assert_eq!(view(&gw, "eip155:10").await["status"], "up");
    assert_eq!(c.next_status().await, status_msg(AA, &["eip155:10"], "up"));
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn market_data_subscribers_are_told_about_their_assets_chain() {
    let gw = TestGateway::start(&[]).await;
    let mut md = gw.client().await;
    subscribe_expecting(&mut md, &[BASE_USDC], MD, &[]).await;
    let mut both = gw.client().await;
    subscribe_expecting(&mut both, &[BASE_USDC], MD, &[]).await;
    subscribe_expecting(&mut both, &[&aa("eip155:0", ADDR_A)], AA, &[]).await;

    gw.heartbeat("eip155:1").await;
    assert_eq!(
        both.next_status().await,
        status_msg(AA, &["eip155:1"], "up")
    );
    md.expect_silence(QUIET).await;

    gw.heartbeat("eip155:8453").await;
    assert_eq!(
        md.next_status().await,
        status_msg(MD, &["eip155:8453"], "up")
    );
    let mut two = vec![both.next_status().await, both.next_status().await];
    two.sort_by_key(|m| m["channel"].to_string());
    assert_eq!(
        two,
        [
            status_msg(AA, &["eip155:8453"], "up"),
            status_msg(MD, &["eip155:8453"], "up")
        ]
    );

    gw.set_status("eip155:8453", "down").await;
    assert_eq!(
        md.next_status().await,
        status_msg(MD, &["eip155:8453"], "down")
    );
    md.expect_silence(QUIET).await;
}

#[tokio::test]
async fn chains_past_max_chains_are_refused_and_counted() {
    // Four chains are configured by the harness: room for one more.
    let gw = TestGateway::start(&[("GATEWAY__CHAINS__MAX_CHAINS", "5")]).await;
    assert_eq!(gw.metric("gateway_chains_refused_total").await, 0.0);
    gw.heartbeat("eip155:10").await;
    let (s, body) = gw
        .post(
            "/v1/chains/eip155:42161/heartbeat",
            &gw.publisher_key,
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (422, Some("too_many_chains")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("chains.max_chains = 5")));

    // A publication on one more chain is still delivered; its chain is not tracked.
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:56", ADDR_A)]).await;
    let (s, body) = gw
        .publish(json!({"channel": aa("eip155:56", ADDR_A), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(c.next_push().await["data"]["n"], 1);
    assert_eq!(gw.get("/v1/chains/eip155:56").await.0, 404);

    let (_, list) = gw.get("/v1/chains").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["chains"].as_array().map(Vec::len), Some(5));
    assert_eq!(gw.metric("gateway_chains_refused_total").await, 2.0);
    assert!(!gw.get("/metrics").await.1.contains("chain=\"eip155:56\""));
}

/// Only a committed publication is a sign of life: one the store refused, or a retry of one
/// already stored, proves nothing a wallet could receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_new_committed_publication_is_a_sign_of_life() {
    use sqlx::{Connection, Executor};
    let gw = TestGateway::start(&[("GATEWAY__CHAINS__STALE_AFTER", "1s")]).await;
    let p = json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}, "id": "once"});

    let db = format!("sqlite://{}/gateway.db", gw.data_dir.path().display());
    let mut locker = sqlx::SqliteConnection::connect(&db).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let (s, body) = gw.publish(p.clone()).await;
    assert_eq!(s, 503, "{body}");
    locker.execute("ROLLBACK").await.unwrap();
    wait_until(Duration::from_secs(10), "store writable again", || async {
        gw.get("/readyz").await.0 == 200
    })
    .await;
    let v = view(&gw, "eip155:1").await;
    assert_eq!(
        (v["status"].as_str(), v["lastSeenMsAgo"].as_u64()),
        (Some("down"), None),
        "{v}"
    );

    // Committed: up. Stale: down. The same publication again is a duplicate: still down.
    let (s, body) = gw.publish(p.clone()).await;
    assert_eq!(
        (s, body["publications"][0]["duplicate"].as_bool()),
        (200, None),
        "{body}"
    );
    assert_eq!(view(&gw, "eip155:1").await["status"], "up");
    wait_until(Duration::from_secs(5), "stale", || async {
        view(&gw, "eip155:1").await["status"] == "down"
    })
    .await;
    let (s, body) = gw.publish(p).await;
    assert_eq!(
        (s, body["publications"][0]["duplicate"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(view(&gw, "eip155:1").await["status"], "down");
}
