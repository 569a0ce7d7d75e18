//! The consumer loop: fetch, hold a batch back while older messages are outstanding
//! elsewhere, hand it to [`super::batch`], and hand everything back on stop.
//!
//! Invariant: `pending` is sorted by stream sequence and holds every message this node
//! fetched and has not yet acknowledged, nak'd or terminated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream;
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::link::{Error, Link};
use crate::config::JetStreamConfig;
use crate::node::Node;

/// How long an idle pull request waits on the server for a first message.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often a held-back batch re-checks whether the older messages are done.
const ORDER_POLL: Duration = Duration::from_millis(50);
/// Shortest backoff after an error (connection, stream or consumer setup, fetch).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest backoff after repeated errors.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A fetched message and its stream sequence.
pub struct Fetched {
    /// The message's stream sequence.
    pub seq: u64,
    /// The message, to acknowledge.
    pub msg: Message,
}

/// The consumer loop's state.
pub struct Consumer {
    /// The node the messages are published on.
    pub(super) node: Arc<Node>,
    /// `[ingest.jetstream]`.
    pub(super) config: JetStreamConfig,
    /// The server address (from `config.url`).
    url: String,
    /// Cancelled when the node drains.
    stop: CancellationToken,
    /// Fetched and not yet acknowledged, nak'd or terminated; sorted by stream sequence.
    pub(super) pending: Vec<Fetched>,
    /// The last stream sequence of the previous batch this node finished, when every
    /// message up to it is known to be done (lets a contiguous batch skip the order check).
    pub(super) last_done: Option<u64>,
    /// Since when the pending batch waits for older messages.
    blocked_since: Option<Instant>,
    /// When the pending messages' ack deadline was last extended.
    last_progress: Option<Instant>,
}

impl Consumer {
    /// A consumer that holds nothing yet.
    pub fn new(
        node: Arc<Node>,
        config: JetStreamConfig,
        url: String,
        stop: CancellationToken,
    ) -> Self {
        Consumer {
            node,
            config,
            url,
            stop,
            pending: Vec::new(),
            last_done: None,
            blocked_since: None,
            last_progress: None,
        }
    }

    /// Runs until stopped; never dies on an error (logged, retried with backoff).
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut link: Option<Link> = None;
        while !self.stop.is_cancelled() {
            let result = match link.as_mut() {
                Some(l) => self.step(l).await,
                None => Link::connect(&self.url).await.map(|l| link = Some(l)),
            };
            match result {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "JetStream ingest failed; retrying.");
                    if let Some(l) = link.as_mut() {
                        self.release(None).await;
                        l.reset();
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Stopping: hand what this node holds to the others at once, and make sure every
        // ack already decided reaches the server.
        self.release(None).await;
        if let Some(l) = link {
            let _ = tokio::time::timeout(Duration::from_secs(2), l.client.flush()).await;
        }
        tracing::info!("JetStream ingest stopped.");
    }

    /// One round: fetch, hold back if older messages are outstanding, else process.
    async fn step(&mut self, link: &mut Link) -> Result<(), Error> {
        if link.consumer.is_none() {
            link.setup(&self.config).await?;
        }
        let (Some(stream), Some(consumer)) = (&link.stream, &link.consumer) else {
            return Ok(());
        };
        let fetched = self.fetch(consumer).await?;
        self.absorb(fetched);
        if self.pending.is_empty() {
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
                first = self.pending[0].seq,
                "Older JetStream messages stayed unacknowledged; ingesting without them."
            );
        }
        self.blocked_since = None;
        self.last_progress = None;
        self.process().await;
        let _ = link.client.flush().await;
        Ok(())
    }

    /// Waits for messages (long poll) when holding none; otherwise takes what is there.
    async fn fetch(&self, consumer: &PullConsumer) -> Result<Vec<Message>, Error> {
        let batch = self.config.batch;
        if !self.pending.is_empty() {
            let room = batch.saturating_sub(self.pending.len()).max(1);
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

    /// Adds fetched messages to the pending ones, by stream sequence; a redelivery of a
    /// message already pending replaces it.
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
            match self.pending.binary_search_by_key(&seq, |h| h.seq) {
                Ok(i) => self.pending[i] = Fetched { seq, msg },
                Err(i) => self.pending.insert(i, Fetched { seq, msg }),
            }
        }
        crate::metrics::ingest_redeliveries(redelivered);
    }

    /// True when no message older than the pending ones is still unacknowledged elsewhere.
    async fn in_order(&self, stream: &stream::Stream) -> Result<bool, Error> {
        let first = self.pending[0].seq;
        let contiguous = self.pending.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if contiguous && self.last_done.is_some_and(|d| d + 1 == first) {
            return Ok(true);
        }
        let info = stream.consumer_info(&self.config.durable).await?;
        // Everything unacknowledged is ours: nothing older can be pending elsewhere, since
        // JetStream delivers new messages in stream order.
        if info.num_ack_pending <= self.pending.len() {
            return Ok(true);
        }
        // Others hold messages, but only newer ones.
        Ok(contiguous && info.ack_floor.stream_sequence + 1 >= first)
    }

    /// Keeps JetStream from redelivering pending messages while they wait for older ones.
    async fn extend_deadline(&mut self) {
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= self.config.ack_wait / 3);
        if due {
            for h in &self.pending {
                let _ = h.msg.ack_with(AckKind::Progress).await;
            }
            self.last_progress = Some(Instant::now());
        }
    }

    /// Hands every pending message back for immediate redelivery (or after `delay`).
    async fn release(&mut self, delay: Option<Duration>) {
        for h in std::mem::take(&mut self.pending) {
            ack(&h.msg, AckKind::Nak(delay)).await;
        }
        self.last_done = None;
        self.blocked_since = None;
        self.last_progress = None;
    }

    /// Sleeps, waking early when stopped.
    pub(super) async fn pause(&self, d: Duration) {
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
pub(super) async fn ack(msg: &Message, kind: AckKind) {
    if let Err(error) = msg.ack_with(kind).await {
        tracing::debug!(%error, subject = %msg.subject, "JetStream ack not sent.");
    }
}
