//! A Rust client of the gateway that speaks the ack extension: it acknowledges every push,
//! drops duplicates by stream position, and on any disconnect reconnects and resubscribes
//! from its last acknowledged positions. Used by the tests, the load generator and
//! `activity-gateway tail`.
mod dedupe;

pub use dedupe::Watermarks;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::Position;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How to reach the gateway.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/v1`
    pub url: String,
    pub token: String,
    /// Opt in to acknowledged delivery and resume (`?ack=1`).
    pub ack: bool,
    /// Reconnect automatically after a disconnect.
    pub reconnect: bool,
    /// How long a request may wait for its reply.
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            ack: true,
            reconnect: true,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the client hands to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new (not duplicate) push.
    Notification(Notification),
    /// A `system-notification`.
    System {
        channel: String,
        chain_ids: Vec<String>,
        up: bool,
    },
    /// The client reconnected and resubscribed; per channel, whether history covered the gap.
    /// A `false` means: refresh that account from the HTTP source (poll).
    Resumed { recovered: HashMap<String, bool> },
}

/// One push, as delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The channel as this client subscribed it.
    pub subscribed: String,
    /// The push's concrete channel.
    pub channel: String,
    pub data: Value,
    pub message_id: Option<String>,
    pub position: Option<Position>,
    pub redelivered: bool,
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("the gateway refused the request: {0}")]
    Refused(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Lost(String),
}

/// A connected client.
pub struct Client {
    config: ClientConfig,
    ws: Ws,
    /// Every subscribe request made, replayed after a reconnect.
    requests: Vec<Vec<String>>,
    /// subscriptionId → channels (as subscribed) on the current connection.
    subscriptions: HashMap<String, Vec<String>>,
    watermarks: Watermarks,
    pending: std::collections::VecDeque<Event>,
    /// Reconnects so far.
    pub reconnects: u64,
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let ws = open(&config).await?;
        Ok(Client {
            config,
            ws,
            requests: Vec::new(),
            subscriptions: HashMap::new(),
            watermarks: Watermarks::default(),
            pending: Default::default(),
            reconnects: 0,
        })
    }

    /// Subscribes `channels` as one subscription; returns its id.
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<String, ClientError> {
        self.requests.push(channels.to_vec());
        let (id, _) = self.send_subscribe(channels).await?;
        Ok(id)
    }

    /// The last processed (acknowledged) position of a channel.
    pub fn position(&self, channel: &str) -> Option<&Position> {
        self.watermarks.get(channel)
    }

    /// The next event; reconnects and resumes transparently when configured to.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let msg = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.recover().await?;
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(&msg) else {
                continue;
            };
            match self.on_message(v).await {
                Ok(Some(e)) => return Ok(e),
                Ok(None) => {}
                // The ack could not be sent: the connection is gone; resume.
                Err(ClientError::Lost(_)) => self.recover().await?,
                Err(e) => return Err(e),
            }
        }
    }

    async fn on_message(&mut self, v: Value) -> Result<Option<Event>, ClientError> {
        match v["event"].as_str() {
            Some("data") => {
                let sub_id = v["subscriptionId"].as_str().unwrap_or_default();
                let channel = v["channel"].as_str().unwrap_or_default().to_owned();
                let subscribed = self.subscribed_channel(sub_id, &channel);
                let message_id = v["messageId"].as_str().map(str::to_owned);
                let position: Option<Position> = serde_json::from_value(v["position"].clone()).ok();
                if let Some(id) = &message_id {
                    // Ack first: a duplicate also needs its ack, or it is sent again.
                    self.send(json!({"event": "ack", "data": {"messageIds": [id]}}))
                        .await?;
                }
                if let Some(p) = &position {
                    if !self.watermarks.accept(&subscribed, p) {
                        return Ok(None);
                    }
                }
                Ok(Some(Event::Notification(Notification {
                    subscribed,
                    channel,
                    data: v["data"].clone(),
                    message_id,
                    position,
                    redelivered: v["redelivered"] == true,
                })))
            }
            Some("system-notification") => Ok(Some(Event::System {
                channel: v["channel"].as_str().unwrap_or_default().to_owned(),
                chain_ids: serde_json::from_value(v["data"]["chainIds"].clone())
                    .unwrap_or_default(),
                up: v["data"]["status"] == "up",
            })),
            _ => Ok(None),
        }
    }

    fn subscribed_channel(&self, sub_id: &str, channel: &str) -> String {
        let Some(list) = self.subscriptions.get(sub_id) else {
            return channel.to_owned();
        };
        if list.len() == 1 {
            return list[0].clone();
        }
        // Several channels in one subscription: the one whose account matches the push.
        let account = |c: &str| c.rsplit(':').next().map(str::to_ascii_lowercase);
        list.iter()
            .find(|c| c.eq_ignore_ascii_case(channel))
            .or_else(|| list.iter().find(|c| account(c) == account(channel)))
            .cloned()
            .unwrap_or_else(|| channel.to_owned())
    }

    async fn recover(&mut self) -> Result<(), ClientError> {
        if !self.config.reconnect {
            return Err(ClientError::Lost("closed".into()));
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            let Ok(ws) = open(&self.config).await else {
                continue;
            };
            self.ws = ws;
            self.subscriptions.clear();
            self.reconnects += 1;
            let mut recovered = HashMap::new();
            let mut ok = true;
            for channels in self.requests.clone() {
                match self.send_subscribe(&channels).await {
                    Ok((_, r)) => recovered.extend(r),
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                self.pending.push_back(Event::Resumed { recovered });
                return Ok(());
            }
        }
    }

    /// Sends a subscribe with resume positions; returns the subscription id and recovery.
    async fn send_subscribe(
        &mut self,
        channels: &[String],
    ) -> Result<(String, HashMap<String, bool>), ClientError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut data = json!({"requestId": request_id, "channels": channels});
        if self.config.ack {
            let positions: serde_json::Map<String, Value> = channels
                .iter()
                .filter_map(|c| self.watermarks.get(c).map(|p| (c.clone(), json!(p))))
                .collect();
            if !positions.is_empty() {
                data["positions"] = Value::Object(positions);
            }
        }
        self.send(json!({"event": "subscribe", "data": data}))
            .await?;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(self.config.request_timeout))?;
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                _ => return Err(ClientError::Lost("closed during subscribe".into())),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if v["data"]["requestId"] != request_id.as_str() {
                // Pushes and notifications that precede the reply are kept in order.
                if let Some(e) = Box::pin(self.on_message(v)).await? {
                    self.pending.push_back(e);
                }
                continue;
            }
            if v["event"] != "subscribed"
                || v["data"]["failed"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
            {
                return Err(ClientError::Refused(v["data"].to_string()));
            }
            let id = v["data"]["subscriptionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.subscriptions.insert(id.clone(), channels.to_vec());
            let mut recovered = HashMap::new();
            for c in channels {
                let rec = &v["data"]["recovery"][c];
                if let Ok(p) = serde_json::from_value::<Position>(v["data"]["positions"][c].clone())
                {
                    if rec["recovered"] == false {
                        self.watermarks.reset(c, p);
                    } else {
                        self.watermarks.start_at(c, p);
                    }
                }
                if !rec.is_null() {
                    recovered.insert(c.clone(), rec["recovered"] == true);
                }
            }
            return Ok((id, recovered));
        }
    }

    async fn send(&mut self, v: Value) -> Result<(), ClientError> {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))
    }
}

async fn open(config: &ClientConfig) -> Result<Ws, ClientError> {
    let sep = if config.url.contains('?') { '&' } else { '?' };
    let mut url = format!("{}{sep}token={}", config.url, config.token);
    if config.ack {
        url.push_str("&ack=1");
    }
    let (ws, _) =
        tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| ClientError::Connect {
                url: config.url.clone(),
                source: Box::new(e),
            })?;
    Ok(ws)
}
