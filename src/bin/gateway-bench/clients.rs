//! The wallets: real WebSocket connections with real tokens, each subscribing like
//! AccountActivityService does (one request, `eip155:0:<address>`), then reading pushes and
//! recording their latency from the stamp. In ack mode each `messageId` is acked at once.
//! Against nginx + Nchan a wallet opens `/sub/<account>` and every text frame is a push.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::payload::{self, now_us};
use crate::stats::{new_histogram, Percentiles, Recorder};

/// Longest a connection may take from TCP connect to its `subscribed` reply.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Token lifetime: longer than any bounded run.
const TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);

type Ws = WebSocketStream<TcpStream>;

/// How every connection is made.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub addr: SocketAddr,
    pub secret: String,
    pub ack: bool,
    /// The server is nginx + Nchan: subscribe in the URL, no token, no handshake.
    pub nchan: bool,
    pub read_buffer: usize,
    pub in_flight: usize,
}

/// Every open connection; closing the fleet ends them all.
pub struct Fleet {
    config: FleetConfig,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    alive: Arc<AtomicUsize>,
    opened: usize,
}

/// How a batch of connections went.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Connections subscribed per second over the whole batch.
    pub per_second: f64,
    /// Per connection: TCP connect to `subscribed` reply.
    pub setup_latency: Percentiles,
}

/// Why one connection could not be set up.
#[derive(Debug, Clone, Copy)]
enum SetupError {
    Tcp,
    Upgrade,
    NoSessionCreated,
    SubscribeSend,
    SubscribeRefused,
    NoReply,
    Timeout,
}

// === Fleet ===

impl Fleet {
    pub fn new(config: FleetConfig, recorder: Arc<Recorder>) -> Self {
        Self {
            config,
            recorder,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            alive: Arc::new(AtomicUsize::new(0)),
            opened: 0,
        }
    }

    /// Connections still open.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    /// Opens one connection per entry of `accounts` (the account each subscribes to), at most
    /// `in_flight` being set up at once. Returns when each is subscribed or has failed.
    pub async fn connect(&mut self, accounts: &[u64]) -> ConnectReport {
        // Tokens are minted first: a real wallet arrives holding one.
        let tokens: Vec<String> = (self.opened..self.opened + accounts.len())
            .map(|i| {
                activity_gateway::auth::mint_hs256(
                    &self.config.secret,
                    &format!("bench-wallet-{i}"),
                    TOKEN_TTL,
                )
                .unwrap_or_default()
            })
            .collect();
        self.opened += accounts.len();
        let gate = Arc::new(Semaphore::new(self.config.in_flight.max(1)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<u64, SetupError>>();
        let started = Instant::now();
        for (&account, token) in accounts.iter().zip(tokens) {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let config = self.config.clone();
            let recorder = self.recorder.clone();
            let stop = self.stop.clone();
            let alive = self.alive.clone();
            let done = done_tx.clone();
            self.tasks.spawn(async move {
                let t0 = Instant::now();
                let opened = tokio::time::timeout(SETUP_TIMEOUT, open(&config, account, &token))
                    .await
                    .unwrap_or(Err(SetupError::Timeout));
                drop(permit);
                // `done` is dropped once sent, so the receiver below ends after the last result.
                match opened {
                    Ok(ws) => {
                        alive.fetch_add(1, Ordering::AcqRel);
                        let _ = done.send(Ok(t0.elapsed().as_micros() as u64));
                        drop(done);
                        read_pushes(ws, &config, &recorder, &stop).await;
                        alive.fetch_sub(1, Ordering::AcqRel);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            });
        }
        drop(done_tx);
        let mut latency = new_histogram();
        let mut failures = BTreeMap::new();
        let (mut connected, mut failed) = (0, 0);
        while let Some(r) = done_rx.recv().await {
            match r {
                Ok(us) => {
                    connected += 1;
                    latency.saturating_record(us.max(1));
                }
                Err(e) => {
                    failed += 1;
                    *failures.entry(format!("{e:?}")).or_insert(0) += 1;
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        ConnectReport {
            requested: accounts.len(),
            connected,
            failed,
            failures,
            seconds,
            per_second: if seconds > 0.0 {
                connected as f64 / seconds
            } else {
                0.0
            },
            setup_latency: Percentiles::of(&latency),
        }
    }

    /// Ends every connection (TCP close, as a wallet that goes away) and waits for the tasks.
    pub async fn close(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// TCP connect, upgrade with `?token=`, `session-created`, subscribe, `subscribed`; against
/// Nchan, TCP connect and the upgrade to `/sub/<account>`.
async fn open(config: &FleetConfig, account: u64, token: &str) -> Result<Ws, SetupError> {
    let tcp = TcpStream::connect(config.addr)
        .await
        .map_err(|_| SetupError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    let url = if config.nchan {
        format!(
            "ws://{}/sub/{}",
            config.addr,
            payload::nchan_channel(account)
        )
    } else {
        let ack = if config.ack { "&ack=1" } else { "" };
        format!("ws://{}/v1?token={token}{ack}", config.addr)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config))
        .await
        .map_err(|_| SetupError::Upgrade)?;
    if config.nchan {
        return Ok(ws);
    }
    let hello = next_text(&mut ws)
        .await
        .ok_or(SetupError::NoSessionCreated)?;
    if !hello.contains(r#""event":"session-created""#) {
        return Err(SetupError::NoSessionCreated);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let subscribe = format!(
        r#"{{"event":"subscribe","data":{{"requestId":"{request_id}","channels":["{}"]}}}}"#,
        payload::subscribe_channel(account)
    );
    ws.send(Message::Text(subscribe.into()))
        .await
        .map_err(|_| SetupError::SubscribeSend)?;
    loop {
        let text = next_text(&mut ws).await.ok_or(SetupError::NoReply)?;
        if !text.contains(&request_id) {
            continue; // a system notification
        }
        let ok = text.contains(r#""event":"subscribed""#) && text.contains(r#""failed":[]"#);
        return if ok {
            Ok(ws)
        } else {
            Err(SetupError::SubscribeRefused)
        };
    }
}

/// The next text frame, skipping control frames; `None` when the connection ends.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// Reads until `stop`; records every stamped push.
async fn read_pushes(
    mut ws: Ws,
    config: &FleetConfig,
    recorder: &Recorder,
    stop: &CancellationToken,
) {
    let (ack, nchan) = (config.ack, config.nchan);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stopped => return,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let frame = t.as_bytes();
                if !nchan && !frame.starts_with(br#"{"event":"data""#) {
                    recorder.other_frame();
                    continue;
                }
                match payload::parse_stamp(frame) {
                    Some(s) => recorder.delivered(s.step, now_us().saturating_sub(s.sent_us)),
                    None => recorder.unstamped(),
                }
                if ack {
                    if let Some(id) = payload::parse_message_id(frame) {
                        let reply =
                            format!(r#"{{"event":"ack","data":{{"messageIds":["{id}"]}}}}"#);
                        if ws.send(Message::Text(reply.into())).await.is_err() {
                            recorder.unexpected_close(0);
                            return;
                        }
                        recorder.ack_sent();
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                recorder.unexpected_close(frame.map_or(1005, |f| f.code.into()));
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                recorder.unexpected_close(0);
                return;
            }
        }
    }
}
