//! Routing and payloads over real WebSocket connections: exact frames, wildcard and concrete
//! subscriptions, privacy, ordering, unsubscribe.
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn subscribe_reply_and_push_have_the_exact_production_shape() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let ch = aa("eip155:0", ADDR_A);
    let reply = c.subscribe(&[&ch]).await;
    assert_eq!(reply["event"], "subscribed");
    let sub_id = reply["data"]["subscriptionId"].as_str().unwrap().to_owned();
    assert!(!sub_id.is_empty() && sub_id != "0");
    assert_eq!(reply["data"]["succeeded"], json!([ch]));
    assert_eq!(reply["data"]["failed"], json!([]));
    assert!(reply.get("channel").is_none() && reply["data"].get("channel").is_none());

    let data = activity(ADDR_A, "eip155:8453", 1);
    let (status, body) = gw
        .publish(json!({"channel": aa("eip155:8453", ADDR_A), "data": data}))
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let push = c.next_push().await;
    let keys: Vec<&str> = push
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["channel", "data", "event", "subscriptionId", "timestamp"]
    );
    assert_eq!(push["event"], "data");
    assert_eq!(push["subscriptionId"], sub_id.as_str());
    assert_eq!(
        push["channel"],
        aa("eip155:8453", ADDR_A),
        "wildcard subscribers get the concrete chain"
    );
    assert_eq!(push["data"], data);
    assert!(push["data"].get("requestId").is_none());
    assert!(push["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn concrete_and_wildcard_subscriptions_each_get_their_own_copy() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let wild = c.subscribe(&[&aa("eip155:0", ADDR_A)]).await["data"]["subscriptionId"].clone();
    let base = c
        .subscribe(&[&aa(
            "eip155:8453",
            &ADDR_A.to_uppercase().replace("0X", "0x"),
        )])
        .await["data"]["subscriptionId"]
        .clone();
    assert_ne!(wild, base);

    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": activity(ADDR_A, "eip155:1", 1)}))
        .await;
    let p = c.next_push().await;
    assert_eq!(
        (p["subscriptionId"].clone(), p["channel"].clone()),
        (wild.clone(), json!(aa("eip155:1", ADDR_A)))
    );

    gw.publish(
        json!({"channel": aa("eip155:8453", ADDR_A), "data": activity(ADDR_A, "eip155:8453", 2)}),
    )
    .await;
    let mut ids = vec![
        c.next_push().await["subscriptionId"].clone(),
        c.next_push().await["subscriptionId"].clone(),
    ];
    ids.sort_by_key(|v| v.to_string());
    let mut want = vec![wild, base];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(ids, want, "once per matching subscription");
    c.expect_no_push(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_connection_never_receives_an_account_it_did_not_subscribe() {
    let gw = TestGateway::start(&[]).await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;
    a.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    b.subscribe(&[&aa("eip155:0", ADDR_B)]).await;
    // A concrete subscription on another chain must not see this chain either.
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:137", ADDR_A)]).await;

    for n in 0..5 {
        gw.publish(json!({"channel": aa("eip155:8453", ADDR_B), "data": activity(ADDR_B, "eip155:8453", n)})).await;
    }
    gw.publish(
        json!({"channel": aa("eip155:8453", ADDR_A), "data": {"marker": true, "address": ADDR_A}}),
    )
    .await;
    let p = a.next_push().await;
    assert_eq!(p["data"]["marker"], true, "A saw B's activity first: {p}");
    for _ in 0..5 {
        assert_eq!(b.next_push().await["channel"], aa("eip155:8453", ADDR_B));
    }
    a.expect_no_push(Duration::from_millis(200)).await;
    c.expect_no_push(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn per_channel_order_is_publish_order() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let batch: Vec<Value> = (0..200)
        .map(|n| json!({"channel": aa("eip155:8453", ADDR_A), "data": {"n": n}}))
        .collect();
    for chunk in batch.chunks(50) {
        let (s, _) = gw.publish(json!({"publications": chunk})).await;
        assert_eq!(s, 200);
    }
    for n in 0..200 {
        assert_eq!(c.next_push().await["data"]["n"], n);
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_always_succeeds() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let ch = aa("eip155:0", ADDR_A);
    let sub = c.subscribe(&[&ch]).await["data"]["subscriptionId"]
        .as_str()
        .unwrap()
        .to_owned();
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u1", "subscription": sub, "channels": [ch]}})).await;
    let r = c.reply_to("u1").await;
    assert_eq!(r["event"], "unsubscribed");
    assert_eq!(
        (r["data"]["succeeded"].clone(), r["data"]["failed"].clone()),
        (json!([ch]), json!([]))
    );
    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {}}))
        .await;
    c.expect_no_push(Duration::from_millis(300)).await;

    // An id the server does not know: still `unsubscribed`, failed empty.
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u2", "subscription": "no-such-id", "channels": [ch]}})).await;
    let r = c.reply_to("u2").await;
    assert_eq!(
        (r["event"].clone(), r["data"]["failed"].clone()),
        (json!("unsubscribed"), json!([]))
    );
}

#[tokio::test]
async fn market_data_is_echoed_exactly_as_subscribed() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let mixed =
        "market-data.v1.eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913.1m.usd";
    let sub = c.subscribe(&[mixed]).await["data"]["subscriptionId"].clone();
    let bar = json!({"timestamp": 1760099820, "open": 1.0, "high": 1.2, "low": 0.9, "close": 1.1, "volume": 1000});
    let (s, b) = gw
        .publish(json!({"channel": mixed.to_lowercase(), "data": bar}))
        .await;
    assert_eq!(s, 200, "{b}");
    let p = c.next_push().await;
    assert_eq!(
        (
            p["channel"].as_str().unwrap(),
            p["subscriptionId"].clone(),
            p["data"].clone()
        ),
        (mixed, sub, bar)
    );
}

#[tokio::test]
async fn a_close_from_the_client_is_answered_and_the_socket_ends() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message;
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let frame = CloseFrame {
        code: CloseCode::from(4999),
        reason: "Internal: Manual disconnect".into(),
    };
    c.ws.send(Message::Close(Some(frame))).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("no close echo within 3 s");
    assert_eq!(
        echoed,
        Some(4999),
        "the close frame is echoed with the client's code"
    );
    let end = tokio::time::timeout(Duration::from_secs(3), c.ws.next())
        .await
        .expect("socket still open");
    assert!(end.is_none() || end.is_some_and(|r| r.is_err()));
}
