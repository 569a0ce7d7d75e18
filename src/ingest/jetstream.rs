//! JetStream ingest: indexers publish account activity and chain heartbeats to a JetStream
//! stream instead of the HTTP API; every node pulls from one durable consumer they all share,
//! so each message is ingested by one node.
//!
//! Subjects (after the optional `subject_prefix`):
//! - `activity.<chainId>.<address>`: the body is the account-activity `data` object, published
//!   on `account-activity.v1.<chainId>:<address>` with the publish API's validation;
//! - `chains.<chainId>.heartbeat`: a sign of life of the chain (the body is ignored).
//!
//! Guarantees, and how they hold:
//! - **Ack after commit.** The valid messages of a batch go through [`ingest::publish`] in one
//!   call (one group commit); each is acknowledged to JetStream only after that call returned,
//!   so a crash before the commit leaves them unacknowledged and JetStream redelivers them.
//! - **No double delivery.** The idempotency key is the publisher's `Nats-Msg-Id` header, else
//!   `js:<stream>:<stream sequence>`: both are the same on every redelivery, so a message
//!   committed before a crash but never acknowledged comes back as a duplicate of its stored
//!   publication and is not fanned out again.
//! - **Per-account order.** The consumer allows at most `batch` unacknowledged messages
//!   (`max_ack_pending`), a batch is committed in stream order, and a batch is held back while
//!   an older message is still unacknowledged elsewhere (a crashed node's, a peer's) until that
//!   one is redelivered to this node or acknowledged by its holder.
//! - **Malformed messages** (unknown subject, body not JSON, refused by the validator) are
//!   counted, logged once with their subject (never the payload) and terminated: JetStream
//!   does not redeliver them, and they never block the messages behind them.
//!
//! The loop never dies: errors are logged and retried with backoff; async-nats reconnects.
//! It stops when the node drains; messages it holds then are handed back (nak) to the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::serde_helpers::string_list;
use crate::ingest::{self, validate::validate_parts, PublishError, Validated};
use crate::node::Node;
use crate::protocol::caip::ChainId;

/// How long a redelivery is delayed after the history store refused a batch.
const UNAVAILABLE_DELAY: Duration = Duration::from_secs(1);
/// How long an idle pull request waits on the server for a first message.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often a held-back batch re-checks whether the older messages are done.
const ORDER_POLL: Duration = Duration::from_millis(50);
/// Backoff bounds after an error (connection, stream or consumer setup, fetch).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

// === JetStreamConfig ===

/// `[ingest.jetstream]`: consume account activity from a JetStream stream. Disabled unless
/// `url` is set. `Debug` redacts the URL's credentials.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamConfig {
    /// `nats://host:4222` (several servers comma-separated); unset: no JetStream ingest.
    pub url: Option<String>,
    /// The stream's name.
    pub stream: String,
    /// The stream's subjects, before `subject_prefix`.
    #[serde(deserialize_with = "string_list")]
    pub subjects: Vec<String>,
    /// Tokens put in front of every subject (`tenant1` → `tenant1.activity.>`); empty: none.
    pub subject_prefix: String,
    /// The durable consumer's name, shared by every node.
    pub durable: String,
    /// Messages per fetch, per group commit, and the consumer's `max_ack_pending`.
    pub batch: usize,
    /// How long JetStream waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Create the stream (file storage, these subjects) when it does not exist.
    pub create_stream: bool,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "ACTIVITY".into(),
            subjects: vec!["activity.>".into(), "chains.>".into()],
            subject_prefix: String::new(),
            durable: "activity-gateway".into(),
            batch: 256,
            ack_wait: Duration::from_secs(30),
            create_stream: true,
        }
    }
}

impl std::fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("url", &self.url.as_deref().map(crate::config::redact::url))
            .field("stream", &self.stream)
            .field("subjects", &self.subjects)
            .field("subject_prefix", &self.subject_prefix)
            .field("durable", &self.durable)
            .field("batch", &self.batch)
            .field("ack_wait", &self.ack_wait)
            .field("create_stream", &self.create_stream)
            .finish()
    }
}

impl JetStreamConfig {
    /// Refuses settings the consumer could not run with; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        for server in url.split(',') {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| {
                    format!(
                        "ingest.jetstream.url: {:?} is not a NATS server address ({e})",
                        crate::config::redact::url(server.trim())
                    )
                })?;
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(&self.stream) {
            return Err("ingest.jetstream.stream must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'".into());
        }
        if !name_ok(&self.durable) {
            return Err("ingest.jetstream.durable must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'".into());
        }
        if self.subjects.is_empty() {
            return Err("ingest.jetstream.subjects must name at least one subject".into());
        }
        if self.subject_prefix.starts_with('.') || self.subject_prefix.ends_with('.') {
            return Err("ingest.jetstream.subject_prefix must not start or end with '.'".into());
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err("ingest.jetstream.batch must be between 1 and 10000".into());
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err("ingest.jetstream.ack_wait must be at least 1s".into());
        }
        Ok(())
    }

    /// The subjects as stored in the stream (with the prefix).
    pub fn stream_subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .map(|s| match self.subject_prefix.as_str() {
                "" => s.clone(),
                p => format!("{p}.{s}"),
            })
            .collect()
    }
}

// === Ingest ===

/// The running consumer of one node.
pub struct Ingest {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Ingest {
    /// Starts consuming when `ingest.jetstream.url` is set. Never fails on an unreachable
    /// server: the loop connects and retries in the background.
    pub fn spawn(node: Arc<Node>) -> Option<Ingest> {
        let config = node.settings.ingest.jetstream.clone();
        let url = config.url.clone()?;
        describe_metrics();
        let stop = node.shutdown.stop_token().child_token();
        let consumer = Consumer {
            node,
            config,
            url,
            stop: stop.clone(),
            held: Vec::new(),
            last_done: None,
            blocked_since: None,
            last_progress: None,
        };
        Some(Ingest {
            stop,
            task: tokio::spawn(consumer.run()),
        })
    }

    /// Stops fetching, hands held messages back, flushes acks; waits at most 5 s.
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("JetStream ingest did not stop within 5 s.");
        }
    }
}

// === Subject ===

/// What a message's subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `activity.<chainId>.<address>`: the channel `account-activity.v1.<chainId>:<address>`.
    Activity { channel: String },
    /// `chains.<chainId>.heartbeat`.
    Heartbeat(ChainId),
}

impl Subject {
    /// Parses a message subject, `prefix` (without its dot) first when not empty.
    pub fn parse(prefix: &str, subject: &str) -> Result<Subject, String> {
        let rest = match prefix {
            "" => Some(subject),
            p => subject.strip_prefix(p).and_then(|r| r.strip_prefix('.')),
        }
        .ok_or("the subject does not start with ingest.jetstream.subject_prefix")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["activity", chain, address] => Ok(Subject::Activity {
                channel: format!("account-activity.v1.{chain}:{address}"),
            }),
            ["chains", chain, "heartbeat"] => {
                let chain = ChainId::parse(chain).map_err(|e| e.to_string())?;
                if chain.is_wildcard() {
                    return Err(
                        "chain reference 0 is the subscription wildcard, not a chain".into(),
                    );
                }
                Ok(Subject::Heartbeat(chain))
            }
            _ => Err("expected activity.<chainId>.<address> or chains.<chainId>.heartbeat".into()),
        }
    }
}

// === Consumer ===

/// The consumer loop's state.
struct Consumer {
    node: Arc<Node>,
    config: JetStreamConfig,
    url: String,
    stop: CancellationToken,
    /// Fetched and not yet acknowledged, nak'd or terminated; sorted by stream sequence.
    held: Vec<Held>,
    /// The last stream sequence of the previous batch this node finished, when every
    /// message up to it is known to be done (lets a contiguous batch skip the order check).
    last_done: Option<u64>,
    /// Since when the held batch waits for older messages.
    blocked_since: Option<Instant>,
    /// When the held messages' ack deadline was last extended.
    last_progress: Option<Instant>,
}

/// A fetched message and its stream sequence.
struct Held {
    seq: u64,
    msg: Message,
}

/// What one message turned out to be.
enum Kind {
    Publication(Validated),
    Heartbeat(ChainId),
    Malformed { code: &'static str, reason: String },
}

/// The connection-level state, rebuilt after an error.
struct Session {
    client: async_nats::Client,
    stream: Option<stream::Stream>,
    consumer: Option<PullConsumer>,
}

type Error = async_nats::Error;

impl Consumer {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut session: Option<Session> = None;
        while !self.stop.is_cancelled() {
            let result = match session.as_mut() {
                Some(s) => self.step(s).await,
                None => self.connect().await.map(|s| session = Some(s)),
            };
            match result {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "JetStream ingest failed; retrying.");
                    if let Some(s) = session.as_mut() {
                        self.release(None).await;
                        s.stream = None;
                        s.consumer = None;
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Stopping: hand what this node holds to the others at once, and make sure every
        // ack already decided reaches the server.
        self.release(None).await;
        if let Some(s) = session {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.client.flush()).await;
        }
        tracing::info!("JetStream ingest stopped.");
    }

    async fn connect(&self) -> Result<Session, Error> {
        let client = async_nats::ConnectOptions::new()
            .name("activity-gateway ingest")
            .retry_on_initial_connect()
            .connect(self.url.as_str())
            .await?;
        Ok(Session {
            client,
            stream: None,
            consumer: None,
        })
    }

    /// Creates or finds the stream and the durable consumer.
    async fn setup(&self, session: &mut Session) -> Result<(), Error> {
        let cfg = &self.config;
        let js = jetstream::new(session.client.clone());
        let stream = if cfg.create_stream {
            js.get_or_create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: cfg.stream_subjects(),
                storage: StorageType::File,
                ..Default::default()
            })
            .await?
        } else {
            js.get_stream(&cfg.stream).await?
        };
        let subjects = cfg.stream_subjects();
        let consumer_config = pull::Config {
            durable_name: Some(cfg.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: cfg.ack_wait,
            max_ack_pending: cfg.batch as i64,
            // One subject filters the classic way; several need a 2.10 server (an older one
            // ignores the list and delivers the whole stream, which holds only these).
            filter_subject: match subjects.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: if subjects.len() > 1 {
                subjects
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        // Create-or-update, so a changed ack_wait or batch applies; an existing consumer
        // that cannot be updated is used as it is.
        let consumer = match stream.create_consumer(consumer_config).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, durable = %cfg.durable, "Cannot create or update the JetStream consumer; using it as it is.");
                stream.get_consumer(&cfg.durable).await?
            }
        };
        tracing::info!(stream = %cfg.stream, durable = %cfg.durable, "JetStream ingest consuming.");
        session.stream = Some(stream);
        session.consumer = Some(consumer);
        Ok(())
    }

    /// One round: fetch, hold back if older messages are outstanding, else process.
    async fn step(&mut self, session: &mut Session) -> Result<(), Error> {
        if session.consumer.is_none() {
            self.setup(session).await?;
        }
        let (Some(stream), Some(consumer)) = (&session.stream, &session.consumer) else {
            return Ok(());
        };
        let fetched = self.fetch(consumer).await?;
        self.absorb(fetched);
        if self.held.is_empty() {
            return Ok(());
        }
        if !self.in_order(stream).await? {
            let since = *self.blocked_since.get_or_insert_with(Instant::now);
            // A crashed node's messages come back after ack_wait; waiting much longer means
            // they are gone (deleted from the stream): go on rather than stall forever.
            if since.elapsed() < self.config.ack_wait * 2 + Duration::from_secs(1) {
                self.extend_deadline().await;
                self.pause(ORDER_POLL).await;
                return Ok(());
            }
            tracing::warn!(
                first = self.held[0].seq,
                "Older JetStream messages stayed unacknowledged; ingesting without them."
            );
        }
        self.blocked_since = None;
        self.last_progress = None;
        self.process().await;
        let _ = session.client.flush().await;
        Ok(())
    }

    /// Waits for messages (long poll) when holding none; otherwise takes what is there.
    async fn fetch(&self, consumer: &PullConsumer) -> Result<Vec<Message>, Error> {
        let batch = self.config.batch;
        if !self.held.is_empty() {
            let room = batch.saturating_sub(self.held.len()).max(1);
            return collect(consumer.fetch().max_messages(room).messages().await?).await;
        }
        let first = tokio::select! {
            _ = self.stop.cancelled() => return Ok(Vec::new()),
            r = async {
                collect(consumer.batch().max_messages(1).expires(IDLE_POLL).messages().await?).await
            } => r?,
        };
        if first.is_empty() || batch == 1 {
            return Ok(first);
        }
        let mut all = first;
        all.extend(collect(consumer.fetch().max_messages(batch - 1).messages().await?).await?);
        Ok(all)
    }

    /// Adds fetched messages to the held ones, by stream sequence; a redelivery of a message
    /// already held replaces it.
    fn absorb(&mut self, fetched: Vec<Message>) {
        let mut redelivered = 0;
        for msg in fetched {
            let seq = match msg.info() {
                Ok(info) => {
                    redelivered += u64::from(info.delivered > 1);
                    info.stream_sequence
                }
                Err(error) => {
                    tracing::warn!(subject = %msg.subject, %error, "Not a JetStream message; skipped.");
                    continue;
                }
            };
            match self.held.binary_search_by_key(&seq, |h| h.seq) {
                Ok(i) => self.held[i] = Held { seq, msg },
                Err(i) => self.held.insert(i, Held { seq, msg }),
            }
        }
        if redelivered > 0 {
            metrics::counter!("gateway_ingest_redeliveries_total").increment(redelivered);
        }
    }

    /// True when no message older than the held ones is still unacknowledged elsewhere.
    async fn in_order(&self, stream: &stream::Stream) -> Result<bool, Error> {
        let first = self.held[0].seq;
        let contiguous = self.held.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if contiguous && self.last_done.is_some_and(|d| d + 1 == first) {
            return Ok(true);
        }
        let info = stream.consumer_info(&self.config.durable).await?;
        // Everything unacknowledged is ours: nothing older can be pending elsewhere, since
        // JetStream delivers new messages in stream order.
        if info.num_ack_pending <= self.held.len() {
            return Ok(true);
        }
        // Others hold messages, but only newer ones.
        Ok(contiguous && info.ack_floor.stream_sequence + 1 >= first)
    }

    /// Keeps JetStream from redelivering held messages while they wait for older ones.
    async fn extend_deadline(&mut self) {
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= self.config.ack_wait / 3);
        if due {
            for h in &self.held {
                let _ = h.msg.ack_with(AckKind::Progress).await;
            }
            self.last_progress = Some(Instant::now());
        }
    }

    /// Validates, commits and acknowledges the held batch.
    async fn process(&mut self) {
        let held = std::mem::take(&mut self.held);
        let Some(last) = held.last().map(|h| h.seq) else {
            return;
        };
        let mut valid = Vec::with_capacity(held.len());
        let mut valid_msgs = Vec::with_capacity(held.len());
        for h in held {
            match self.classify(&h) {
                Kind::Publication(v) => {
                    valid.push(v);
                    valid_msgs.push(h.msg);
                }
                Kind::Heartbeat(chain) => {
                    match self.node.chains.alive(&chain) {
                        Ok(()) => counted("accepted", 1),
                        Err(reason) => {
                            tracing::debug!(subject = %h.msg.subject, %reason, "JetStream heartbeat refused.");
                            counted("malformed", 1);
                        }
                    }
                    ack(&h.msg, AckKind::Ack).await;
                }
                Kind::Malformed { code, reason } => {
                    tracing::warn!(subject = %h.msg.subject, seq = h.seq, code, %reason, "Malformed JetStream message terminated.");
                    counted("malformed", 1);
                    ack(&h.msg, AckKind::Term).await;
                }
            }
        }
        if !valid.is_empty() {
            match ingest::publish(&self.node, valid).await {
                Ok(outcomes) => {
                    let duplicates = outcomes.iter().filter(|o| o.duplicate).count();
                    counted("duplicate", duplicates as u64);
                    counted("accepted", (outcomes.len() - duplicates) as u64);
                    for msg in &valid_msgs {
                        ack(msg, AckKind::Ack).await;
                    }
                }
                Err(PublishError::Unavailable(error)) => {
                    tracing::warn!(%error, messages = valid_msgs.len(), "History unavailable; JetStream messages will be redelivered.");
                    counted("retried", valid_msgs.len() as u64);
                    for msg in &valid_msgs {
                        ack(msg, AckKind::Nak(Some(UNAVAILABLE_DELAY))).await;
                    }
                    self.last_done = None;
                    self.pause(UNAVAILABLE_DELAY).await;
                    return;
                }
            }
        }
        self.last_done = Some(last);
    }

    /// Turns a message into the publication the publish API would have accepted.
    fn classify(&self, h: &Held) -> Kind {
        let malformed = |code: &'static str, reason: String| Kind::Malformed { code, reason };
        let channel = match Subject::parse(&self.config.subject_prefix, h.msg.subject.as_str()) {
            Ok(Subject::Heartbeat(chain)) => return Kind::Heartbeat(chain),
            Ok(Subject::Activity { channel }) => channel,
            Err(reason) => return malformed("invalid_subject", reason),
        };
        let data: &RawValue = match serde_json::from_slice(&h.msg.payload) {
            Ok(v) => v,
            Err(e) => return malformed("invalid_json", format!("the body is not JSON ({e})")),
        };
        let id = h
            .msg
            .headers
            .as_ref()
            .and_then(|hs| hs.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("js:{}:{}", self.config.stream, h.seq));
        let max = self.node.settings.publish.max_publication_bytes;
        if data.get().len() > max {
            return malformed(
                "publication_too_large",
                format!(
                    "the body is {} bytes, more than publish.max_publication_bytes ({max})",
                    data.get().len()
                ),
            );
        }
        match validate_parts(channel, Some(id), data) {
            Ok(v) => Kind::Publication(v),
            Err(e) => malformed(e.code.as_str(), e.message),
        }
    }

    /// Hands every held message back for immediate redelivery (or after `delay`).
    async fn release(&mut self, delay: Option<Duration>) {
        for h in std::mem::take(&mut self.held) {
            ack(&h.msg, AckKind::Nak(delay)).await;
        }
        self.last_done = None;
        self.blocked_since = None;
        self.last_progress = None;
    }

    /// Sleeps, waking early when stopped.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }
}

/// Every message of a pull request (it ends on its own: batch full, no wait, or expiry).
async fn collect<S, E>(mut messages: S) -> Result<Vec<Message>, Error>
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
    E: Into<Error>,
{
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        out.push(m.map_err(Into::into)?);
    }
    Ok(out)
}

/// Sends an ack of some kind; a lost ack only means a redelivery, which idempotency absorbs.
async fn ack(msg: &Message, kind: AckKind) {
    if let Err(error) = msg.ack_with(kind).await {
        tracing::debug!(%error, subject = %msg.subject, "JetStream ack not sent.");
    }
}

fn counted(result: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("gateway_ingest_messages_total", "result" => result).increment(n);
    }
}

fn describe_metrics() {
    metrics::describe_counter!(
        "gateway_ingest_messages_total",
        "JetStream messages ingested, by result (accepted, duplicate, malformed, retried)"
    );
    metrics::describe_counter!(
        "gateway_ingest_redeliveries_total",
        "JetStream messages received again (not acknowledged in time, nak'd, or a node crashed)"
    );
    // Exported at 0 from the start, so dashboards and alerts see the series before traffic.
    for result in ["accepted", "duplicate", "malformed", "retried"] {
        metrics::counter!("gateway_ingest_messages_total", "result" => result).absolute(0);
    }
    metrics::counter!("gateway_ingest_redeliveries_total").absolute(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            Subject::parse("", "activity.eip155:8453.0xabc"),
            Ok(Subject::Activity {
                channel: "account-activity.v1.eip155:8453:0xabc".into()
            })
        );
        assert_eq!(
            Subject::parse("t1.x", "t1.x.chains.eip155:1.heartbeat"),
            Ok(Subject::Heartbeat(ChainId::parse("eip155:1").unwrap()))
        );
        for bad in [
            "activity.eip155:1",
            "activity.eip155:1.0xabc.extra",
            "chains.eip155:1.beat",
            "chains.eip155:0.heartbeat",
            "chains.nope.heartbeat",
            "other.eip155:1.0xabc",
        ] {
            assert!(Subject::parse("", bad).is_err(), "{bad}");
        }
        assert!(Subject::parse("t1", "t2.activity.eip155:1.0xabc").is_err());
        assert!(Subject::parse("t1", "t1activity.eip155:1.0xabc").is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = JetStreamConfig::default();
        assert!(c.url.is_none() && c.validate().is_ok());
        assert_eq!(c.stream_subjects(), ["activity.>", "chains.>"]);
        let c = JetStreamConfig {
            url: Some("nats://127.0.0.1:4222".into()),
            subject_prefix: "t1".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.stream_subjects(), ["t1.activity.>", "t1.chains.>"]);
        for bad in [
            JetStreamConfig {
                batch: 0,
                ..c.clone()
            },
            JetStreamConfig {
                stream: "a.b".into(),
                ..c.clone()
            },
            JetStreamConfig {
                subjects: vec![],
                ..c.clone()
            },
            JetStreamConfig {
                ack_wait: Duration::from_millis(10),
                ..c.clone()
            },
            JetStreamConfig {
                subject_prefix: "t1.".into(),
                ..c.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
