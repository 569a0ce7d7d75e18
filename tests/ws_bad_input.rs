//! Bad input on the WebSocket: error replies with exact codes, close codes for frames the
//! gateway refuses, per-connection limits, the rate limiter, the error budget and pings.
mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// A distinct EVM address with letters in it (for case-insensitivity checks).
fn addr(n: u64) -> String {
    format!("0xabcdef{n:034x}")
}

/// Subscribes to ADDR_A on every EVM chain and proves the connection still works end to end:
/// the push arrives, and so does the `up` that the publication causes (eip155:1 must be down
/// before).
async fn still_works(gw: &TestGateway, c: &mut WsClient) {
    let reply = c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    assert_eq!(reply["event"], "subscribed", "{reply}");
    let sub = reply["data"]["subscriptionId"].clone();
    let (s, b) = gw
        .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (mut push, mut up) = (None, None);
    while push.is_none() || up.is_none() {
        let m = c.recv().await;
        if m["event"] == "data" && push.is_none() {
            push = Some(m);
        } else if up.is_none() {
            up = Some(without_ts(m));
        } else {
            panic!("unexpected: {m}");
        }
    }
    let p = push.unwrap();
    assert_eq!(
        (p["subscriptionId"].clone(), p["data"].clone()),
        (sub, json!({"n": 1}))
    );
    assert_eq!(
        up.unwrap(),
        status_msg("account-activity.v1", &["eip155:1"], "up")
    );
}

#[tokio::test]
async fn unreadable_messages_get_error_replies_and_the_connection_stays_open() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;

    c.send_text("this is not json").await;
    assert_error(&c.recv().await, "invalid_json", None);

    c.send(json!({"data": {"requestId": "r1"}})).await;
    assert_error(&c.recv().await, "invalid_message", Some("r1"));

    c.send_text("[1,2]").await;
    assert_error(&c.recv().await, "invalid_message", None);

    c.send(json!({"event": "subscribe", "data": {"channels": [aa("eip155:0", ADDR_A)]}}))
        .await;
    assert_error(&c.recv().await, "invalid_message", None);

    c.send(json!({"event": "subscribe", "data": {"requestId": "r2", "channels": [1, 2]}}))
        .await;
    assert_error(&c.recv().await, "invalid_message", Some("r2"));

    c.send(json!({"event": "bogus", "data": {"requestId": "r3"}}))
        .await;
    assert_error(&c.recv().await, "unknown_event", Some("r3"));

    c.expect_silence(Duration::from_millis(100)).await;
    still_works(&gw, &mut c).await;
    assert_eq!(
        gw.metric(r#"gateway_protocol_errors_total{code="invalid_message"}"#)
            .await,
        4.0
    );
}

#[tokio::test]
async fn a_binary_frame_is_closed_with_1003() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.ws.send(Message::Binary(br#"{"event":"subscribe"}"#.to_vec().into()))
        .await
        .unwrap();
    assert!(matches!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(1003, _)
    ));
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_closed_with_1009() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__MAX_MESSAGE_BYTES", "1024")]).await;
    // Just under the limit is fine.
    let mut ok = gw.client().await;
    let channels: Vec<String> = (0..10).map(|n| aa("eip155:0", &addr(n))).collect();
    let msg =
        json!({"event": "subscribe", "data": {"requestId": "r", "channels": channels}}).to_string();
    assert!(msg.len() < 1024 && msg.len() > 600, "{}", msg.len());
    ok.send_text(&msg).await;
    assert_eq!(ok.reply_to("r").await["event"], "subscribed");

    let mut c = gw.client().await;
    let channels: Vec<String> = (0..20).map(|n| aa("eip155:0", &addr(n))).collect();
    let msg =
        json!({"event": "subscribe", "data": {"requestId": "r", "channels": channels}}).to_string();
    assert!(msg.len() > 1024);
    c.send_text(&msg).await;
    assert!(matches!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(1009, _)
    ));
}

#[tokio::test]
async fn an_invalid_utf8_text_frame_is_closed_with_1007() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let frame = Frame::message(
        vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'],
        OpCode::Data(Data::Text),
        true,
    );
    c.ws.send(Message::Frame(frame)).await.unwrap();
    assert!(matches!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(1007, _)
    ));
}

#[tokio::test]
async fn invalid_channels_fail_alone_and_valid_ones_are_subscribed() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    let good = aa("eip155:0", ADDR_A);
    let bad = [
        "nope".to_owned(),
        "account-activity.v1.eip155:1:0xzz".to_owned(),
        "system-notifications.v1.account-activity.v1".to_owned(),
        "market-data.v1.eip155:1/slip44:60".to_owned(),
    ];
    let mut channels = vec![good.as_str()];
    channels.extend(bad.iter().map(String::as_str));
    let r = c.subscribe_as("r1", &channels).await;
    assert_eq!(r["event"], "subscribed", "{r}");
    assert_eq!(r["data"]["succeeded"], json!([good]));
    assert_eq!(r["data"]["failed"], json!(bad));
    let errors = r["data"]["errors"].as_object().expect("errors object");
    assert_eq!(errors.len(), bad.len(), "{r}");
    for ch in &bad {
        assert_eq!(errors[ch]["code"], "invalid_channel", "{r}");
        assert!(errors[ch]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert!(r.get("channel").is_none() && r["data"].get("channel").is_none());
    let sub = r["data"]["subscriptionId"]
        .as_str()
        .expect("subscriptionId")
        .to_owned();
    assert!(!sub.is_empty() && sub != "0");

    gw.publish(json!({"channel": aa("eip155:137", ADDR_A), "data": {"n": 7}}))
        .await;
    let p = c.next_push().await;
    assert_eq!(
        (p["subscriptionId"].as_str(), p["data"].clone()),
        (Some(sub.as_str()), json!({"n": 7}))
    );
}

#[tokio::test]
async fn more_than_max_channels_per_request_is_refused_whole() {
    let gw = TestGateway::start(&[("GATEWAY__LIMITS__MAX_CHANNELS_PER_REQUEST", "3")]).await;
    let mut c = gw.client().await;
    let four: Vec<String> = (1..=4).map(|n| aa("eip155:0", &addr(n))).collect();
    let refs: Vec<&str> = four.iter().map(String::as_str).collect();
    c.send(json!({"event": "subscribe", "data": {"requestId": "big", "channels": refs}}))
        .await;
    assert_error(&c.recv().await, "too_many_channels", Some("big"));

    for n in 1..=4 {
        let (s, _) = gw
            .publish(json!({"channel": aa("eip155:1", &addr(n)), "data": {"n": n}}))
            .await;
        assert_eq!(s, 200);
    }
    c.expect_silence(Duration::from_millis(300)).await;

    // Exactly the limit is fine.
    let r = c.subscribe_as("ok", &refs[..3]).await;
    assert_eq!(
        (r["event"].clone(), r["data"]["succeeded"].clone()),
        (json!("subscribed"), json!(refs[..3]))
    );
}

#[tokio::test]
async fn over_max_subscriptions_counts_distinct_channels_and_applies_nothing() {
    let gw =
        TestGateway::start(&[("GATEWAY__LIMITS__MAX_SUBSCRIPTIONS_PER_CONNECTION", "3")]).await;
    let mut c = gw.client().await;
    let (a1, a2, a3, a4, a5) = (addr(1), addr(2), addr(3), addr(4), addr(5));
    // The same channel twice in one request, and again (other case) in a later one: one channel.
    let r = c
        .subscribe_as(
            "s1",
            &[
                &aa("eip155:0", &a1),
                &aa("eip155:0", &a1),
                &aa("eip155:0", &a2),
            ],
        )
        .await;
    assert_eq!(r["event"], "subscribed", "{r}");
    let a1_upper = format!("0x{}", a1[2..].to_uppercase());
    let r = c
        .subscribe_as("s2", &[&aa("eip155:0", &a1_upper), &aa("eip155:0", &a3)])
        .await;
    assert_eq!(
        r["event"], "subscribed",
        "3 distinct channels are within the limit: {r}"
    );

    c.send(json!({"event": "subscribe", "data": {"requestId": "s3", "channels": [aa("eip155:0", &a4), aa("eip155:0", &a5)]}}))
        .await;
    assert_error(&c.recv().await, "too_many_subscriptions", Some("s3"));
    c.send(json!({"event": "subscribe", "data": {"requestId": "s4", "channels": [aa("eip155:0", &a4)]}})).await;
    assert_error(&c.recv().await, "too_many_subscriptions", Some("s4"));

    // Nothing of the refused requests was applied.
    for a in [&a4, &a5] {
        gw.publish(json!({"channel": aa("eip155:1", a), "data": {}}))
            .await;
    }
    c.expect_no_push(Duration::from_millis(300)).await;
    // What was subscribed still is.
    gw.publish(json!({"channel": aa("eip155:1", &a3), "data": {"n": 3}}))
        .await;
    assert_eq!(c.next_push().await["data"], json!({"n": 3}));
}

#[tokio::test]
async fn a_flood_gets_rate_limited_then_closed_with_1008() {
    let gw = TestGateway::start(&[
        ("GATEWAY__LIMITS__REQUESTS_PER_SECOND", "0.1"),
        ("GATEWAY__LIMITS__REQUEST_BURST", "3"),
        ("GATEWAY__LIMITS__ERRORS_PER_MINUTE", "5"),
    ])
    .await;
    let mut c = gw.client().await;
    for n in 0..20u64 {
        c.send(json!({"event": "subscribe", "data": {"requestId": format!("f{n}"), "channels": [aa("eip155:0", &addr(n))]}}))
            .await;
    }
    for n in 0..3 {
        let m = c.recv().await;
        assert_eq!(
            (m["event"].clone(), m["data"]["requestId"].clone()),
            (json!("subscribed"), json!(format!("f{n}"))),
            "{m}"
        );
    }
    // Five errors are within the budget; the sixth is sent, then the connection is closed.
    for n in 3..9 {
        assert_error(&c.recv().await, "rate_limited", Some(&format!("f{n}")));
    }
    assert!(matches!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(1008, _)
    ));
    assert_eq!(
        gw.metric(r#"gateway_protocol_errors_total{code="rate_limited"}"#)
            .await,
        6.0
    );
}

#[tokio::test]
async fn more_than_errors_per_minute_is_closed_with_1008_but_invalid_channels_do_not_count() {
    let gw = TestGateway::start(&[("GATEWAY__LIMITS__ERRORS_PER_MINUTE", "3")]).await;
    let mut c = gw.client().await;
    for n in 0..5 {
        let r = c
            .subscribe_as(
                &format!("ok{n}"),
                &[&aa("eip155:0", &addr(n)), "bad-channel"],
            )
            .await;
        assert_eq!(
            (r["event"].clone(), r["data"]["failed"].clone()),
            (json!("subscribed"), json!(["bad-channel"]))
        );
    }
    for _ in 0..3 {
        c.send_text("{oops").await;
        assert_error(&c.recv().await, "invalid_json", None);
    }
    // Still open after exactly the budget.
    still_works(&gw, &mut c).await;
    c.send_text("{oops").await;
    assert_error(&c.recv().await, "invalid_json", None);
    assert_eq!(
        c.closed(Duration::from_secs(3)).await,
        Ended::Close(1008, "too many protocol errors".into())
    );
}

#[tokio::test]
async fn acks_are_not_rate_limited() {
    let gw = TestGateway::start(&[
        ("GATEWAY__LIMITS__REQUESTS_PER_SECOND", "0.1"),
        ("GATEWAY__LIMITS__REQUEST_BURST", "1"),
    ])
    .await;
    let mut c = gw.client().await;
    for n in 0..50 {
        c.send(json!({"event": "ack", "data": {"messageIds": [format!("m{n}")]}}))
            .await;
    }
    c.expect_silence(Duration::from_millis(200)).await;
    let r = c.subscribe_as("r1", &[&aa("eip155:0", ADDR_A)]).await;
    assert_eq!(
        r["event"], "subscribed",
        "the one token was not spent by acks: {r}"
    );
    c.send(json!({"event": "subscribe", "data": {"requestId": "r2", "channels": [aa("eip155:0", ADDR_B)]}})).await;
    assert_error(&c.recv().await, "rate_limited", Some("r2"));
}

#[tokio::test]
async fn the_server_answers_a_client_ping() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.ws.send(Message::Ping(b"are-you-there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("no pong within 3 s");
    assert_eq!(&pong[..], b"are-you-there");
}

/// Connections made together (a reconnect storm) ping at their own phases, not all at once.
#[tokio::test]
async fn connections_made_together_are_pinged_at_different_times() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__PING_INTERVAL", "2s")]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(gw.client().await);
    }
    let started = tokio::time::Instant::now();
    let mut firsts = Vec::new();
    for mut c in clients {
        firsts.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await {
                    Ok(Some(Ok(Message::Ping(_)))) => return started.elapsed(),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("no ping within 5 s: {other:?}"),
                }
            }
        }));
    }
    let mut at = Vec::new();
    for f in firsts {
        at.push(f.await.unwrap());
    }
    at.sort();
    // First pings fall anywhere from 0.2 s to 2 s after connecting; twenty connections made
    // within milliseconds of each other would all be pinged within one tick if they shared
    // the phase.
    let spread = at[at.len() - 1] - at[0];
    assert!(
        spread > Duration::from_millis(500),
        "first pings within {spread:?} of each other: {at:?}"
    );
    assert!(at[at.len() - 1] < Duration::from_millis(2500), "{at:?}");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__PING_INTERVAL", "300ms")]).await;
    let token = gw.token("wallet", 3600);
    // A raw client answers nothing: not even the pings.
    let mut silent = RawWs::connect(gw.addr, &format!("/v1?token={token}")).await;
    let mut alive = gw.client().await;
    let started = tokio::time::Instant::now();

    // `alive` keeps reading (tungstenite answers pings while reading) and stays open.
    let mut pings = 0;
    while pings < 7 {
        match tokio::time::timeout(Duration::from_secs(2), alive.ws.next())
            .await
            .expect("no ping within 2 s")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(t))) => {
                assert!(t.contains("session-created") || pings > 0, "{t}")
            }
            Some(Ok(_)) => {}
            other => panic!("the reading client was closed: {other:?}"),
        }
    }

    // `silent` gets the greeting, a few pings, then close 4002, then the TCP connection ends.
    let mut frames = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = silent.read_frame().await {
            frames.push(f);
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the silent connection is still open after 5 s: {frames:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
    let close = frames.pop().expect("frames");
    assert_eq!(
        close.close_code(),
        Some((4002, "ping timeout: no pong received".to_owned())),
        "{frames:?}"
    );
    assert_eq!(frames[0].opcode, 0x1, "session-created first");
    assert!(
        frames[1..].iter().all(|f| f.opcode == 0x9),
        "only pings between: {frames:?}"
    );
    assert!(
        (2..=4).contains(&(frames.len() - 1)),
        "{} pings before the close",
        frames.len() - 1
    );
    assert_eq!(
        gw.metric(r#"gateway_disconnects_total{reason="ping_timeout"}"#)
            .await,
        1.0
    );
    still_works(&gw, &mut alive).await;
}
