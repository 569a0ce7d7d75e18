//! `metrics.listen`: `/metrics` on a listener of its own, and no longer on the public one.
mod common;

use common::*;

#[tokio::test]
async fn metrics_move_to_their_own_listener() {
    // A free port, released for the gateway to take.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let gw = TestGateway::start(&[("GATEWAY__METRICS__LISTEN", &listen)]).await;

    let (status, body) = gw.get("/metrics").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(gw.get("/healthz").await.0, 200);

    let metrics = gw
        .http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .expect("metrics listener");
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.expect("body");
    assert!(text.contains("gateway_store_available 1"), "{text}");
    // The metrics listener serves nothing else.
    let other = gw
        .http
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .expect("metrics listener");
    assert_eq!(other.status().as_u16(), 404);
}

#[tokio::test]
async fn without_a_metrics_listener_metrics_are_on_the_main_one() {
    let gw = TestGateway::start(&[]).await;
    let (status, text) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("gateway_store_available 1"), "{text}");
}
