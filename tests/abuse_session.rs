//! One connection, bounded work: a hostile client with one valid token re-subscribes, resumes,
//! acks and floods; it gets the documented errors and close codes, and a well-behaved client on
//! the same gateway keeps getting its pushes meanwhile.
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

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
