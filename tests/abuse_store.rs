//! The store is not the clients' to fill or break: black-box tests against the spawned
//! gateway for what a client or a publisher must not be able to do to the history store
//! (fill it with empty streams, take ingest down with failing reads, wedge subscribers with
//! an oversized publication, stall publishers with ids the store cannot hold, flap readiness
//! on a full disk).
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// An idempotency id with a NUL is a 400 `invalid_id` naming the item, not a 503 that the
/// publisher would retry forever; the gateway stays ready and keeps accepting publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_the_store_cannot_hold_is_a_400_not_a_503() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let channel = aa("eip155:1", ADDR_A);

    for id in ["bad\u{0}id", "tab\tid"] {
        let (status, body) = gw
            .publish(json!({"channel": channel, "data": {"n": 0}, "id": id}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_publication", "{body}");
        assert_eq!(body["errors"][0]["index"], 0, "{body}");
        assert_eq!(body["errors"][0]["code"], "invalid_id", "{body}");
    }
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, 200);
    let (status, body) = gw
        .publish(json!({"channel": channel, "data": {"n": 1}, "id": "ok-1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let push = c.next_push().await;
    assert_eq!(
        push["data"],
        json!({"n": 1}),
        "only the valid one is delivered"
    );
}
