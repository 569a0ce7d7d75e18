//! Test harness: runs the real `activity-gateway` binary on an ephemeral loopback port and
//! talks to it with real WebSocket and HTTP clients.
#![allow(dead_code)]

pub mod backend;
pub mod exactly_once;
pub mod proxy;
pub mod wallet;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADDR_A: &str = "0xd14b2b8d5e5f1c3c1a4d6b7c9e0f1a2b3c4d5e6f";
pub const ADDR_B: &str = "0x7b07aa000000000000000000000000000000bb02";
pub const SOL: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
pub const SOL_MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";

/// A running gateway process, killed on drop.
pub struct TestGateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub secret: String,
    pub publisher_key: String,
    pub admin_key: String,
    pub http: reqwest::Client,
    /// Holds the SQLite history file for the life of the gateway.
    pub data_dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_activity-gateway")
}

impl TestGateway {
    /// Starts with the defaults below, overridden by `env`.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        // Values given in `env` win, so several nodes can share keys.
        let given = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let secret = given("GATEWAY__AUTH__HS256_SECRET")
            .unwrap_or_else(|| format!("secret-{}", uuid::Uuid::new_v4()));
        let publisher_key = given("GATEWAY__PUBLISH__API_KEYS")
            .unwrap_or_else(|| format!("pub-{}", uuid::Uuid::new_v4()));
        let admin_key = given("GATEWAY__ADMIN__API_KEYS")
            .unwrap_or_else(|| format!("adm-{}", uuid::Uuid::new_v4()));
        let data_dir = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}/gateway.db", data_dir.path().display());
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__AUTH__HS256_SECRET", &secret)
            .env("GATEWAY__PUBLISH__API_KEYS", &publisher_key)
            .env("GATEWAY__ADMIN__API_KEYS", &admin_key)
            .env("GATEWAY__STORAGE__URL", &db)
            .env(
                "GATEWAY__CHAINS__KNOWN",
                format!("eip155:1,eip155:8453,eip155:137,{SOL_MAINNET}"),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, addr) = spawn_and_wait(cmd);
        Self {
            child,
            addr,
            secret,
            publisher_key,
            admin_key,
            http: reqwest::Client::new(),
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, sub: &str, ttl_secs: i64) -> String {
        let now = chrono_now();
        sign(
            &self.secret,
            &json!({"sub": sub, "iat": now, "exp": now + ttl_secs}),
        )
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/v1?token={token}", self.addr)
    }

    /// Connects with a fresh valid token for a subject of its own (as a distinct wallet
    /// would, so per-subject limits never bind) and reads `session-created`.
    pub async fn client(&self) -> WsClient {
        let sub = format!("wallet-{}", uuid::Uuid::new_v4());
        self.client_at(&self.ws_url(&self.token(&sub, 3600))).await
    }

    pub async fn client_at(&self, url: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut c = WsClient { ws };
        let hello = c.recv().await;
        assert_eq!(hello["event"], "session-created", "{hello}");
        assert!(hello["data"]["sessionId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        c
    }

    pub async fn publish(&self, body: Value) -> (u16, Value) {
        self.post("/v1/publish", &self.publisher_key.clone(), body)
            .await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn heartbeat(&self, chain: &str) {
        let (s, b) = self
            .post(
                &format!("/v1/chains/{chain}/heartbeat"),
                &self.publisher_key.clone(),
                Value::Null,
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    pub async fn set_status(&self, chain: &str, status: &str) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(&format!("/v1/chains/{chain}/status")))
            .bearer_auth(&self.admin_key)
            .json(&json!({"status": status}))
            .send()
            .await
            .expect("http");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Any request with an optional bearer key and a raw body; the response body as JSON
    /// (`Null` when it is not JSON).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let r = req.send().await.expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the metric series has exactly `want`.
    pub async fn wait_metric(&self, series: &str, want: f64, within: Duration) {
        wait_until(within, &format!("{series} == {want}"), || async {
            self.metric(series).await == want
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.expect("http");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    }

    /// The value of a metric line (name with labels exactly as rendered), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the command with piped stdout and waits for `listening on ADDR`.
pub fn spawn_and_wait(cmd: Command) -> (Child, SocketAddr) {
    let (child, addr, _) = spawn_capture(cmd);
    (child, addr)
}

/// Like [`spawn_and_wait`], also returning every stdout line printed before `listening on`
/// (the dev-mode banner).
pub fn spawn_capture(mut cmd: Command) -> (Child, SocketAddr, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn gateway");
    let rx = watch_listening(child.stdout.take().expect("stdout"));
    let (addr, lines) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("gateway did not print `listening on` within 20 s");
    (child, addr.parse().expect("addr"), lines)
}

/// Reads the gateway's stdout on a thread (to its end, so the pipe never fills) and sends the
/// address of its `listening on ADDR` line, with every line printed before it.
pub fn watch_listening(
    stdout: std::process::ChildStdout,
) -> std::sync::mpsc::Receiver<(String, Vec<String>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut before = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send((addr.trim().to_owned(), std::mem::take(&mut before)));
                }
            } else if tx.is_some() {
                before.push(line);
            }
        }
    });
    rx
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the exact shape of an `error` reply: `{"event":"error","timestamp":…,"data":{
/// "requestId"?, "code", "message"}}`, and that it carries no `channel` anywhere.
pub fn assert_error(m: &Value, code: &str, request_id: Option<&str>) {
    assert_eq!(m["event"], "error", "{m}");
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["data", "event", "timestamp"], "{m}");
    assert!(
        m["timestamp"]
            .as_i64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "{m}"
    );
    assert_eq!(m["data"]["code"], code, "{m}");
    assert!(
        m["data"]["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{m}"
    );
    let mut want = vec!["code", "message"];
    match request_id {
        Some(id) => {
            assert_eq!(m["data"]["requestId"], id, "{m}");
            want.push("requestId");
        }
        None => assert!(m["data"].get("requestId").is_none(), "{m}"),
    }
    let mut keys: Vec<&str> = m["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, want, "{m}");
}

/// `{"event":"system-notification","channel":"system-notifications.v1.<ns>","data":{…}}`
/// with its timestamp removed, for exact comparison.
pub fn status_msg(ns: &str, chains: &[&str], status: &str) -> Value {
    json!({"event": "system-notification", "channel": format!("system-notifications.v1.{ns}"),
           "data": {"chainIds": chains, "status": status}})
}

/// Removes (and checks) the `timestamp` of a server message.
pub fn without_ts(mut m: Value) -> Value {
    let ts = m.as_object_mut().and_then(|o| o.remove("timestamp"));
    assert!(
        ts.and_then(|t| t.as_i64())
            .is_some_and(|t| t > 1_700_000_000_000),
        "no timestamp: {m}"
    );
    m
}

/// Runs cleanup from a `Drop` (which cannot await): on a thread of its own with a small
/// runtime, waiting for it to finish. Best effort.
pub fn block_on_detached<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A plain WebSocket client.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What ended a connection.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Close(u16, String),
    Dropped,
}

impl WsClient {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned().into()))
            .await
            .expect("send");
    }

    /// Next text frame as JSON (5 s timeout).
    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("no message within 5 s")
    }

    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("json")),
                Ok(Message::Close(f)) => panic!("closed while waiting for a message: {f:?}"),
                Ok(_) => continue,
                Err(e) => panic!("error while waiting for a message: {e}"),
            }
        }
    }

    /// Asserts that no text frame arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("unexpected message: {t}");
        }
    }

    /// Asserts that no push (`event: data`) arrives within `d`; system notifications are skipped.
    pub async fn expect_no_push(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("json");
                assert_eq!(v["event"], "system-notification", "unexpected message: {t}");
            }
        }
    }

    /// Reads until the connection ends; returns the close code, skipping data frames.
    pub async fn closed(&mut self, within: Duration) -> Ended {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(f)))) => {
                    return match f {
                        Some(CloseFrame { code, reason }) => {
                            Ended::Close(code.into(), reason.to_string())
                        }
                        None => Ended::Close(1005, String::new()),
                    }
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next system notification, without its timestamp (5 s timeout). Panics on any
    /// other message.
    pub async fn next_status(&mut self) -> Value {
        let m = self.recv().await;
        assert_eq!(
            m["event"], "system-notification",
            "expected a system notification: {m}"
        );
        without_ts(m)
    }

    /// Sends a subscribe with `request_id` and returns the reply.
    pub async fn subscribe_as(&mut self, request_id: &str, channels: &[&str]) -> Value {
        self.send(
            json!({"event": "subscribe", "data": {"requestId": request_id, "channels": channels}}),
        )
        .await;
        self.reply_to(request_id).await
    }

    /// Subscribes and returns the `subscribed` reply (skipping system notifications).
    pub async fn subscribe(&mut self, channels: &[&str]) -> Value {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.send(
            json!({"event": "subscribe", "data": {"requestId": request_id, "channels": channels}}),
        )
        .await;
        self.reply_to(&request_id).await
    }

    /// The next message answering `request_id`, skipping system notifications.
    pub async fn reply_to(&mut self, request_id: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["data"]["requestId"] == request_id {
                return m;
            }
            assert_eq!(
                m["event"], "system-notification",
                "unexpected before reply: {m}"
            );
        }
    }

    /// The next push (`event: data`), skipping system notifications.
    pub async fn next_push(&mut self) -> Value {
        loop {
            let m = self.recv().await;
            if m["event"] == "data" {
                return m;
            }
            assert_eq!(m["event"], "system-notification", "unexpected: {m}");
        }
    }
}

/// A realistic ~600-byte account-activity payload for `address` on `chain`.
pub fn activity(address: &str, chain: &str, n: u64) -> Value {
    json!({
        "address": address,
        "tx": {"id": format!("0x{n:064x}"), "chain": chain, "status": "confirmed",
               "timestamp": 1760099871 + n, "from": "0x7b07000000000000000000000000000000000001", "to": address},
        "updates": [{
            "asset": {"fungible": true, "type": format!("{chain}/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"), "unit": "USDC", "decimals": 6},
            "postBalance": {"amount": format!("0x{:x}", 50000 + n)},
            "transfers": [{"from": "0x7b07000000000000000000000000000000000001", "to": address, "amount": "0x2710"}]
        }]
    })
}

pub fn aa(chain: &str, address: &str) -> String {
    format!("account-activity.v1.{chain}:{address}")
}

/// A minimal WebSocket client over a raw TCP stream: it answers nothing by itself (no
/// automatic pongs, no close reply), so a test controls every byte the server sees.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// `(code, reason)` of a close frame.
    pub fn close_code(&self) -> Option<(u16, String)> {
        (self.opcode == 0x8 && self.payload.len() >= 2).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                String::from_utf8_lossy(&self.payload[2..]).into_owned(),
            )
        })
    }
}

impl RawWs {
    /// Connects, upgrades `path` and returns the client (the `101` head is consumed).
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head = ws.read_until_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        ws
    }

    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn read_until_head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 4);
                return head;
            }
            assert!(self.fill().await, "connection closed during the handshake");
        }
    }

    /// The next frame, or `None` when the TCP connection has ended.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&out).await.expect("raw send");
    }
}

fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((
        RawFrame {
            fin,
            opcode,
            payload,
        },
        at,
    ))
}

/// Attempts an upgrade; returns the refusal's status and JSON body.
pub async fn refused(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(body).expect("JSON body"),
            )
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
