//! The calibration peer of BENCHMARKS.md: a bare tokio-tungstenite broadcast server, speaking
//! just enough of the gateway's protocol for `gateway-bench` to drive it (`session-created`,
//! a `subscribed` reply, `POST /v1/publish`), with none of the gateway's features: no auth
//! check, no history, no routing (every publication goes to every connection), no limits.
//! It is the issue's "bare tokio-tungstenite" peer built and measured on this machine with
//! the same generator, so that S2 figures can be read against what the library alone does.
//!
//!     cargo build --release --example peer_broadcast
//!     taskset -c 0 target/release/examples/peer_broadcast 127.0.0.1:9100 &
//!     taskset -c 1 target/release/gateway-bench s2 --addr 127.0.0.1:9100 --secret x \
//!         --publisher-key x --server-pid $!
//!
//! Each connection task owns its socket and a `tokio::sync::broadcast` receiver; a
//! publication is serialised once and its bytes shared (`Utf8Bytes` clones a refcount).

use std::net::SocketAddr;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::broadcast;

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    publications: Vec<Publication<'a>>,
}

#[derive(serde::Deserialize)]
struct Publication<'a> {
    channel: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".to_owned())
        .parse()
        .map_err(|e| std::io::Error::other(format!("usage: peer_broadcast ADDR ({e})")))?;
    // Large enough that a burst of publications never lags a reader at the rates of S2.
    let (tx, _) = broadcast::channel::<Utf8Bytes>(4096);
    let app = Router::new()
        .route("/v1", get(upgrade))
        .route("/v1/publish", post(publish))
        .with_state(tx);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    println!("peer_broadcast listening on {addr}");
    axum::serve(listener, app).await
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(tx): State<broadcast::Sender<Utf8Bytes>>,
) -> impl IntoResponse {
    ws.read_buffer_size(4096)
        .on_upgrade(move |socket| connection(socket, tx.subscribe()))
}

async fn connection(socket: WebSocket, mut rx: broadcast::Receiver<Utf8Bytes>) {
    let (mut sink, mut stream) = socket.split();
    if sink
        .send(Message::Text(
            r#"{"event":"session-created","data":{}}"#.into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(bytes) => {
                    if sink.send(Message::Text(bytes)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    // Answers any request with `subscribed`, echoing its requestId.
                    let id = request_id(t.as_str()).unwrap_or("");
                    let reply = format!(
                        r#"{{"event":"subscribed","data":{{"requestId":"{id}","subscriptionId":"s","succeeded":[],"failed":[]}}}}"#
                    );
                    if sink.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
}

async fn publish(
    State(tx): State<broadcast::Sender<Utf8Bytes>>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let Ok(batch) = serde_json::from_slice::<Batch<'_>>(&body) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"accepted": 0})),
        );
    };
    let n = batch.publications.len();
    for p in batch.publications {
        let frame = format!(
            r#"{{"event":"data","subscriptionId":"s","channel":"{}","data":{}}}"#,
            p.channel,
            p.data.get()
        );
        let _ = tx.send(frame.into());
    }
    (
        axum::http::StatusCode::OK,
        Json(serde_json::json!({"accepted": n})),
    )
}

fn request_id(text: &str) -> Option<&str> {
    let at = text.find(r#""requestId":""#)? + r#""requestId":""#.len();
    let rest = &text[at..];
    Some(&rest[..rest.find('"')?])
}
