//! The calibration peer of docs/benchmarks-log.md: a bare tokio-tungstenite server, speaking just
//! enough of the gateway's protocol for `gateway-bench` to drive it (`session-created`, a
//! `subscribed` reply, `POST /v1/publish`), with none of the gateway's features: no auth
//! check, no history, no limits, no channel grammar. It is the issue's "bare
//! tokio-tungstenite" peer built and measured on this machine with the same generator, so
//! that the S1 and S2 figures can be read against what the library alone does.
//!
//!     cargo build --release --example peer_broadcast
//!     taskset -c 0 target/release/examples/peer_broadcast 127.0.0.1:9100 &
//!     taskset -c 1 target/release/gateway-bench s2 --addr 127.0.0.1:9100 --secret x \
//!         --publisher-key x --server-pid $!
//!
//! Broadcast (the default, for S2): every publication goes to every connection. Each
//! connection task owns its socket and a `tokio::sync::broadcast` receiver; a publication is
//! serialised once and its bytes shared (`Utf8Bytes` clones a refcount).
//!
//! Unicast (`peer_broadcast ADDR unicast`, for S1): a connection's subscribe registers it
//! under the account its channel ends with (`…:0x…`), and a publication goes to the one
//! connection registered under its channel's account, through that connection's unbounded
//! channel: the least routing S1 needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};

/// Where publications go.
#[derive(Clone)]
struct Peer {
    /// Broadcast mode: every connection's feed.
    all: broadcast::Sender<Utf8Bytes>,
    /// Unicast mode: account → the feed of the connection subscribed to it.
    routes: Option<Arc<Routes>>,
}

type Routes = Mutex<HashMap<String, mpsc::UnboundedSender<Utf8Bytes>>>;

/// One connection's feed of frames.
enum Feed {
    All(broadcast::Receiver<Utf8Bytes>),
    One(mpsc::UnboundedReceiver<Utf8Bytes>),
}

impl Feed {
    async fn next(&mut self) -> Option<Utf8Bytes> {
        match self {
            Feed::All(rx) => loop {
                match rx.recv().await {
                    Ok(bytes) => return Some(bytes),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Feed::One(rx) => rx.recv().await,
        }
    }
}

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
    let unicast = std::env::args().nth(2).as_deref() == Some("unicast");
    // Large enough that a burst of publications never lags a reader at the rates of S2.
    let (all, _) = broadcast::channel::<Utf8Bytes>(4096);
    let peer = Peer {
        all,
        routes: unicast.then(Default::default),
    };
    let app = Router::new()
        .route("/v1", get(upgrade))
        .route("/v1/publish", post(publish))
        .with_state(peer);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    let mode = if unicast { "unicast" } else { "broadcast" };
    println!("peer_broadcast ({mode}) listening on {addr}");
    axum::serve(listener, app).await
}

async fn upgrade(ws: WebSocketUpgrade, State(peer): State<Peer>) -> impl IntoResponse {
    ws.read_buffer_size(4096)
        .on_upgrade(move |socket| connection(socket, peer))
}

async fn connection(socket: WebSocket, peer: Peer) {
    let (mut feed, mine) = match &peer.routes {
        None => (Feed::All(peer.all.subscribe()), None),
        Some(_) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Feed::One(rx), Some(tx))
        }
    };
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
            frame = feed.next() => match frame {
                Some(bytes) => {
                    if sink.send(Message::Text(bytes)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    // Answers any request with `subscribed`, echoing its requestId.
                    let id = request_id(t.as_str()).unwrap_or("");
                    if let (Some(routes), Some(tx)) = (&peer.routes, &mine) {
                        if let Some(account) = first_channel(t.as_str()).map(account_of) {
                            let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                            routes.insert(account.to_owned(), tx.clone());
                        }
                    }
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

async fn publish(State(peer): State<Peer>, body: axum::body::Bytes) -> impl IntoResponse {
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
        match &peer.routes {
            None => {
                let _ = peer.all.send(frame.into());
            }
            Some(routes) => {
                let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = routes.get(account_of(p.channel)) {
                    let _ = tx.send(frame.into());
                }
            }
        }
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

/// The first channel of a subscribe request.
fn first_channel(text: &str) -> Option<&str> {
    let at = text.find(r#""channels":[""#)? + r#""channels":[""#.len();
    let rest = &text[at..];
    Some(&rest[..rest.find('"')?])
}

/// The account a channel ends with (`account-activity.v1.eip155:0:0xabc…` → `0xabc…`).
fn account_of(channel: &str) -> &str {
    channel.rsplit(':').next().unwrap_or(channel)
}
