//! One connection, bounded work: a hostile client with one valid token re-subscribes, resumes,
//! acks and floods; it gets the documented errors and close codes, and a well-behaved client on
//! the same gateway keeps getting its pushes meanwhile.
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A distinct EVM address.
fn addr(n: u64) -> String {
    format!("0xabcdef{n:034x}")
}

#[tokio::test]
async fn a_flood_of_unsubscribes_gets_rate_limited_errors_then_a_1008_close_frame() {
    let gw = TestGateway::start(&[("GATEWAY__LIMITS__REQUESTS_PER_SECOND", "0.1")]).await;
    let mut c = gw.client().await;
    // Each reply echoes the 64 channels (~6 KB): more than the client's socket takes while it
    // does not read, so replies are still on their way when the connection is closed.
    let channels: Vec<String> = (0..64).map(|n| aa("eip155:0", &addr(n))).collect();
    for n in 0..100 {
        c.send(json!({"event": "unsubscribe", "data": {"requestId": format!("u{n}"), "subscription": "nope", "channels": channels}}))
            .await;
    }
    // A script that sends everything before it reads anything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The burst (50) is answered, then ten errors fit the budget; the eleventh closes.
    for n in 0..50 {
        let m = c.recv().await;
        assert_eq!(
            (m["event"].clone(), m["data"]["requestId"].clone()),
            (json!("unsubscribed"), json!(format!("u{n}"))),
            "{m}"
        );
    }
    for n in 50..61 {
        assert_error(&c.recv().await, "rate_limited", Some(&format!("u{n}")));
    }
    assert_eq!(
        c.closed(Duration::from_secs(5)).await,
        Ended::Close(1008, "too many protocol errors".into())
    );
}

#[tokio::test]
async fn a_fragmented_message_over_max_message_bytes_is_closed_with_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    // 300 fragments of 1 KB: more than four times the default limit of 64 KB.
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    for n in 0..300 {
        if n == 100 {
            // The gateway has refused the message by now; the client is still sending it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let op = if n == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(vec![b' '; 1024], op, n == 199);
        c.ws.send(Message::Frame(frame))
            .await
            .unwrap_or_else(|e| panic!("fragment {n} refused: {e}"));
    }
    assert_eq!(
        c.closed(Duration::from_secs(5)).await,
        Ended::Close(1009, "message too big".into())
    );
}

/// A well-behaved wallet on the same gateway: subscribed to `ADDR_B`, it must get each of its
/// pushes within 1 s while the abuse goes on.
async fn good_wallet(gw: &TestGateway) -> (WsClient, Value) {
    let mut good = gw.client().await;
    let r = good.subscribe(&[&aa("eip155:0", ADDR_B)]).await;
    (good, r["data"]["subscriptionId"].clone())
}

async fn good_wallet_gets(gw: &TestGateway, good: &mut WsClient, sub: &Value, n: u64) {
    let (s, b) = gw
        .publish(json!({"channel": aa("eip155:1", ADDR_B), "data": {"good": n}}))
        .await;
    assert_eq!(s, 200, "{b}");
    let started = std::time::Instant::now();
    let p = loop {
        let m = good
            .recv_within(Duration::from_secs(1))
            .await
            .expect("the good wallet's push within 1 s");
        if m["event"] == "data" {
            break m;
        }
    };
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (p["subscriptionId"].clone(), p["data"].clone()),
        (sub.clone(), json!({"good": n}))
    );
}

#[tokio::test]
async fn subscribing_again_to_a_held_channel_moves_it_to_the_newest_id() {
    let gw = TestGateway::start(&[
        ("GATEWAY__LIMITS__REQUESTS_PER_SECOND", "10000"),
        ("GATEWAY__LIMITS__REQUEST_BURST", "10000"),
    ])
    .await;
    let (mut good, good_sub) = good_wallet(&gw).await;
    let ch = aa("eip155:0", ADDR_A);
    let mut c = gw.client().await;
    let mut ids = Vec::new();
    for n in 0..300 {
        // Every other one spelled in upper case: the same channel.
        let sent = if n % 2 == 0 {
            ch.clone()
        } else {
            ch.replace("0xd14b", "0xD14B")
        };
        let r = c.subscribe_as(&format!("s{n}"), &[&sent]).await;
        assert_eq!(r["data"]["succeeded"], json!([sent]), "{r}");
        ids.push(r["data"]["subscriptionId"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        300,
        "every subscribe gets a new id"
    );
    good_wallet_gets(&gw, &mut good, &good_sub, 1).await;
    // One push per publication, carrying the newest id.
    for n in 0..3 {
        let (s, _) = gw
            .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": n}}))
            .await;
        assert_eq!(s, 200);
        let p = c.next_push().await;
        assert_eq!(
            (p["subscriptionId"].as_str(), p["data"].clone()),
            (Some(ids[299].as_str()), json!({"n": n}))
        );
    }
    c.expect_no_push(Duration::from_millis(300)).await;
    // Two subscriptions in all: the good wallet's and the abuser's newest.
    assert_eq!(gw.metric("gateway_subscriptions_active").await, 2.0);
    assert_eq!(gw.metric("gateway_channels_active").await, 2.0);
    // Unsubscribing an old id removes nothing; the newest id removes the channel.
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u0", "subscription": ids[0], "channels": []}}))
        .await;
    assert_eq!(c.reply_to("u0").await["data"]["succeeded"], json!([]));
    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 3}}))
        .await;
    assert_eq!(
        c.next_push().await["subscriptionId"].as_str(),
        Some(ids[299].as_str())
    );
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u1", "subscription": ids[299], "channels": []}}))
        .await;
    assert_eq!(
        c.reply_to("u1").await["data"]["succeeded"],
        json!([ch.replace("0xd14b", "0xD14B")])
    );
    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 4}}))
        .await;
    c.expect_no_push(Duration::from_millis(300)).await;
    good_wallet_gets(&gw, &mut good, &good_sub, 2).await;
    assert_eq!(gw.metric("gateway_subscriptions_active").await, 1.0);
}

#[tokio::test]
async fn acks_have_their_own_budget_and_a_bounded_size() {
    let gw = TestGateway::start(&[
        ("GATEWAY__LIMITS__ACKS_PER_SECOND", "0.1"),
        ("GATEWAY__LIMITS__ACK_BURST", "5"),
        ("GATEWAY__LIMITS__ERRORS_PER_MINUTE", "3"),
        ("GATEWAY__LIMITS__MAX_ACK_IDS", "100"),
    ])
    .await;
    let (mut good, good_sub) = good_wallet(&gw).await;
    let ack_url = format!("{}&ack=1", gw.ws_url(&gw.token("w", 3600)));
    let mut c = gw.client_at(&ack_url).await;
    // Over the size bound: refused whole, no requestId to echo.
    let ids: Vec<String> = (0..101).map(|n| format!("e-{n}")).collect();
    c.send(json!({"event": "ack", "data": {"messageIds": ids}}))
        .await;
    let e = c.recv().await;
    assert_error(&e, "too_many_message_ids", None);
    // At the bound: accepted silently (4 of the burst of 5 are left after the first frame).
    c.send(json!({"event": "ack", "data": {"messageIds": &ids[..100]}}))
        .await;
    c.expect_silence(Duration::from_millis(200)).await;
    for n in 0..3 {
        c.send(json!({"event": "ack", "data": {"messageIds": [format!("e-{n}")]}}))
            .await;
    }
    c.expect_silence(Duration::from_millis(200)).await;
    // The bucket is empty: each further ack frame is refused and charged to the error budget
    // (one error spent above): two more fit, the third closes.
    for _ in 0..10 {
        c.send(json!({"event": "ack", "data": {"messageIds": ["e-0"]}}))
            .await;
    }
    for _ in 0..3 {
        assert_error(&c.recv().await, "rate_limited", None);
    }
    assert_eq!(
        c.closed(Duration::from_secs(5)).await,
        Ended::Close(1008, "too many protocol errors".into())
    );
    good_wallet_gets(&gw, &mut good, &good_sub, 1).await;
}

/// Publishes `n` publications on `ADDR_A`'s stream (chain eip155:1); returns the stream epoch.
async fn fill_stream(gw: &TestGateway, address: &str, n: usize) -> String {
    let mut probe = gw
        .client_at(&format!("{}&ack=1", gw.ws_url(&gw.token("p", 3600))))
        .await;
    let ch = aa("eip155:0", address);
    let r = probe.subscribe(&[&ch]).await;
    let epoch = r["data"]["positions"][&ch]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let pubs: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"channel": aa("eip155:1", address), "data": {"n": i}}))
            .collect();
        let (s, b) = gw.publish(json!({"publications": pubs})).await;
        assert_eq!(s, 200, "{b}");
    }
    epoch
}

fn resume(request_id: &str, positions: Value) -> Value {
    let channels: Vec<String> = positions.as_object().unwrap().keys().cloned().collect();
    json!({"event": "subscribe", "data": {"requestId": request_id, "channels": channels, "positions": positions}})
}

#[tokio::test]
async fn a_stream_is_replayed_once_per_connection_page_by_page() {
    let gw = TestGateway::start(&[]).await;
    let (mut good, good_sub) = good_wallet(&gw).await;
    let epoch = fill_stream(&gw, ADDR_A, 1000).await;
    let ch = aa("eip155:0", ADDR_A);
    let mut c = gw
        .client_at(&format!("{}&ack=1", gw.ws_url(&gw.token("w", 3600))))
        .await;
    let from = json!({ch.clone(): {"epoch": epoch, "offset": 0}});
    c.send(resume("r0", from.clone())).await;
    let r = c.reply_to("r0").await;
    assert_eq!(
        r["data"]["recovery"][&ch],
        json!({"recovered": true, "replayed": 1000})
    );
    // The same resume again, four times: the stream is already being received.
    for n in 1..5 {
        c.send(resume(&format!("r{n}"), from.clone())).await;
    }
    let mut offsets = Vec::new();
    let mut replies = 0;
    let mut last_id = None;
    while offsets.len() < 1000 || replies < 4 {
        let m = c.recv().await;
        match m["event"].as_str() {
            Some("data") => {
                offsets.push(m["position"]["offset"].as_u64().unwrap());
                c.send(json!({"event": "ack", "data": {"messageIds": [m["messageId"]]}}))
                    .await;
                if offsets.len() == 500 {
                    good_wallet_gets(&gw, &mut good, &good_sub, 1).await;
                }
            }
            Some("subscribed") => {
                replies += 1;
                assert_eq!(
                    m["data"]["recovery"][&ch],
                    json!({"recovered": false, "replayed": 0, "reason": "already_subscribed"}),
                    "{m}"
                );
                last_id = Some(m["data"]["subscriptionId"].clone());
            }
            _ => {}
        }
    }
    assert_eq!(
        offsets,
        (1..=1000).collect::<Vec<u64>>(),
        "each once, in order"
    );
    c.expect_no_push(Duration::from_millis(500)).await;
    // Live pushes follow, once, on the newest subscription id.
    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"live": 1}}))
        .await;
    let p = c.next_push().await;
    assert_eq!(
        (p["subscriptionId"].clone(), p["position"]["offset"].clone()),
        (last_id.unwrap(), json!(1001))
    );
    c.expect_no_push(Duration::from_millis(300)).await;
    good_wallet_gets(&gw, &mut good, &good_sub, 2).await;
}

#[tokio::test]
async fn what_one_connection_may_have_in_replay_is_capped() {
    let gw = TestGateway::start(&[("GATEWAY__DELIVERY__MAX_REPLAY", "250")]).await;
    let epoch_a = fill_stream(&gw, ADDR_A, 200).await;
    let epoch_b = fill_stream(&gw, ADDR_B, 100).await;
    let (a, b) = (aa("eip155:0", ADDR_A), aa("eip155:0", ADDR_B));
    let mut c = gw
        .client_at(&format!("{}&ack=1", gw.ws_url(&gw.token("w", 3600))))
        .await;
    let positions = json!({a.clone(): {"epoch": epoch_a, "offset": 0}, b.clone(): {"epoch": epoch_b, "offset": 0}});
    c.send(json!({"event": "subscribe", "data": {"requestId": "r", "channels": [a, b], "positions": positions}}))
        .await;
    let r = c.reply_to("r").await;
    // Channels are taken in request order: 200 fit under 250, 100 more do not.
    let rec = &r["data"]["recovery"];
    assert_eq!(
        (rec[&a].clone(), rec[&b].clone()),
        (
            json!({"recovered": true, "replayed": 200}),
            json!({"recovered": false, "replayed": 0, "reason": "replay_limit"})
        ),
        "{r}"
    );
    let mut n = 0;
    while n < 200 {
        let p = c.next_push().await;
        assert_eq!(p["channel"], aa("eip155:1", ADDR_A));
        n += 1;
    }
    c.expect_no_push(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_during_a_64_channel_subscribe_does_not_freeze_the_session() {
    let (nats, gw) = node_behind_a_nats_proxy().await;
    let (mut good, good_sub) = good_wallet(&gw).await;
    let mut c = gw.client().await;
    nats.down();
    wait_until(
        Duration::from_secs(10),
        "node sees the broker gone",
        || async { gw.get("/readyz").await.0 == 503 },
    )
    .await;
    let channels: Vec<String> = (0..64).map(|n| aa("eip155:0", &addr(n))).collect();
    let started = std::time::Instant::now();
    c.send(json!({"event": "subscribe", "data": {"requestId": "s", "channels": channels}}))
        .await;
    // While the broker is stalled the connection answers pings, and requests that follow
    // the subscribe wait for it, in order.
    c.send(json!({"event": "unsubscribe", "data": {"requestId": "u", "subscription": "x"}}))
        .await;
    pongs_while_the_subscribe_waits(&mut c).await;
    let r = c.reply_to("s").await;
    let elapsed = started.elapsed();
    // Within the limit (2 s), plus generous slack for a loaded machine.
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    assert_eq!(r["data"]["succeeded"], json!([]), "{r}");
    assert_eq!(r["data"]["failed"].as_array().unwrap().len(), 64);
    assert!(r["data"].get("subscriptionId").is_none(), "{r}");
    assert_eq!(r["data"]["errors"][&channels[0]]["code"], "broker_timeout");
    assert_eq!(c.reply_to("u").await["event"], "unsubscribed");
    nats.up();
    // Once the broker answers again, the same subscribe succeeds and delivers.
    wait_until(Duration::from_secs(10), "node ready", || async {
        gw.get("/readyz").await.0 == 200
    })
    .await;
    let r = c.subscribe_as("s2", &[&channels[0]]).await;
    assert_eq!(r["data"]["succeeded"], json!([channels[0]]), "{r}");
    let (s, _) = gw
        .publish(json!({"channel": aa("eip155:1", &addr(0)), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(c.next_push().await["data"], json!({"n": 1}));
    good_wallet_gets(&gw, &mut good, &good_sub, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_during_a_64_channel_subscribe_fails_the_channels_in_time() {
    let (nats, gw) = node_behind_a_nats_proxy().await;
    let mut c = gw.client().await;
    // The connection to NATS stays open but nothing passes: the server never sees the
    // subscriptions, so their interest must not count as placed.
    nats.stall();
    let channels: Vec<String> = (0..64).map(|n| aa("eip155:0", &addr(n))).collect();
    let started = std::time::Instant::now();
    c.send(json!({"event": "subscribe", "data": {"requestId": "s", "channels": channels}}))
        .await;
    pongs_while_the_subscribe_waits(&mut c).await;
    let r = c.reply_to("s").await;
    let elapsed = started.elapsed();
    // Within the limit (2 s), plus generous slack for a loaded machine.
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    assert_eq!(r["data"]["succeeded"], json!([]), "{r}");
    assert_eq!(r["data"]["failed"].as_array().unwrap().len(), 64);
    assert_eq!(r["data"]["errors"][&channels[0]]["code"], "broker_timeout");
    nats.resume();
    // Once the broker answers again, the same subscribe succeeds and delivers.
    let r = c.subscribe_as("s2", &[&channels[0]]).await;
    assert_eq!(r["data"]["succeeded"], json!([channels[0]]), "{r}");
    let (s, _) = gw
        .publish(json!({"channel": aa("eip155:1", &addr(0)), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(c.next_push().await["data"], json!({"n": 1}));
}

/// Three pings, 200 ms apart, each answered within 500 ms and before any reply: the session
/// loop runs while a subscribe waits for the broker.
async fn pongs_while_the_subscribe_waits(c: &mut WsClient) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for n in 0..3u8 {
        c.ws.send(Message::Ping(vec![n].into())).await.unwrap();
        let pong = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match c.ws.next().await {
                    Some(Ok(Message::Pong(p))) => break p,
                    Some(Ok(Message::Text(t))) => panic!("before the pong: {t}"),
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await
        .expect("a pong within 500 ms while the subscribe waits for the broker");
        assert_eq!(&pong[..], &[n]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ready cluster node whose NATS connection goes through a proxy the test can cut or
/// stall, with a 2 s subscribe timeout.
async fn node_behind_a_nats_proxy() -> (common::proxy::Proxy, TestGateway) {
    let nats = common::proxy::Proxy::start("127.0.0.1:4222".parse().unwrap()).await;
    let nats_url = format!("nats://{}", nats.addr);
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let gw = TestGateway::start(&[
        ("GATEWAY__BROKER__URL", &nats_url),
        ("GATEWAY__BROKER__SUBJECT_PREFIX", &prefix),
        ("GATEWAY__LIMITS__SUBSCRIBE_TIMEOUT", "2s"),
    ])
    .await;
    wait_until(Duration::from_secs(10), "node ready", || async {
        gw.get("/readyz").await.0 == 200
    })
    .await;
    (nats, gw)
}
