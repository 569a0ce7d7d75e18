//! The sending half of the broker: what a node hands to every node.
//!
//! In a cluster, messages (publications and chain events) go through one queue to one
//! publisher task, so they leave in the order they were handed over (commit order for
//! publications). The queue holds at most [`OUTBOUND_QUEUE`] messages. Handing over never
//! waits (the history's committer calls it and must not block): when the queue is full,
//! the message is not sent, counted in `gateway_broker_not_sent_total{kind}` and logged
//! (at most once a second). The publication stays in the shared history: a receiving node
//! reads it from there when a later offset of the same stream reaches it (gap fill) or when
//! it catches up after a reconnect, and a resuming client replays it; until one of those, the
//! other nodes' live subscribers of that stream do not have it. A chain's sign of life is
//! repeated by the next one. A full queue means NATS takes less than the node commits,
//! usually a stalled or lost connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::wire::{self, ChainMessage, WirePublication};
use super::Handler;
use crate::history::{CommitListener, Committed};
use crate::hub::Publication;
use crate::protocol::Position;

/// Most messages waiting for the publisher task.
pub const OUTBOUND_QUEUE: usize = 16_384;
/// A full queue is logged at most this often.
const FULL_WARN_EVERY: Duration = Duration::from_secs(1);

/// One message for NATS: its subject and body.
type Message = (String, Bytes);

/// Where this node's publications go: its own subscribers, or every node.
#[derive(Clone)]
pub enum Outlet {
    /// One node: straight to the node's handler.
    Local(Arc<dyn Handler>),
    /// A cluster: onto the outbound queue.
    Nats(Outbound),
}

impl Outlet {
    /// Hands over a committed or ephemeral publication for fan-out on every node.
    pub fn publish(&self, publication: Arc<Publication>, payload: &str) {
        match self {
            Outlet::Local(handler) => handler.deliver(&publication),
            Outlet::Nats(out) => out.publication(
                &publication.key,
                &publication.channel,
                publication.durable.as_ref().map(|d| &d.position),
                payload,
            ),
        }
    }
}

impl CommitListener for Outlet {
    fn committed(&self, batch: &[Committed]) {
        match self {
            Outlet::Local(handler) => {
                let now = Instant::now();
                for c in batch {
                    if let Some(p) = Publication::durable(&c.channel, &c.payload, &c.position, now)
                    {
                        handler.deliver(&Arc::new(p));
                    }
                }
            }
            // The receivers build the frame; only the stored parts travel.
            Outlet::Nats(out) => {
                for c in batch {
                    out.publication(&c.stream, &c.channel, Some(&c.position), &c.payload);
                }
            }
        }
    }
}

/// The cluster's sending half: the bounded queue to the publisher task.
#[derive(Clone)]
pub struct Outbound {
    /// The queue; see the module doc for what happens when it is full.
    queue: mpsc::Sender<Message>,
    /// The subject prefix (`broker.subject_prefix`).
    prefix: Arc<str>,
    /// When a full queue was last logged.
    warned: Arc<Mutex<Option<Instant>>>,
}

impl Outbound {
    /// A queue and the receiving end for [`run_publisher`].
    pub fn new(prefix: &str) -> (Outbound, mpsc::Receiver<Message>) {
        let (queue, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let out = Outbound {
            queue,
            prefix: prefix.into(),
            warned: Arc::new(Mutex::new(None)),
        };
        (out, rx)
    }

    /// Queues a publication on hub key `key` (with its stream position when durable).
    pub fn publication(
        &self,
        key: &str,
        channel: &str,
        position: Option<&Position>,
        payload: &str,
    ) {
        let Ok(data) = serde_json::from_str::<&RawValue>(payload) else {
            return;
        };
        let wire = WirePublication::new(channel, position, data);
        if let Ok(bytes) = serde_json::to_vec(&wire) {
            self.send(
                "publication",
                wire::publication_subject(&self.prefix, key),
                bytes,
            );
        }
    }

    /// Queues a chain event.
    pub fn chain(&self, msg: &ChainMessage) {
        if let Ok(bytes) = serde_json::to_vec(msg) {
            self.send("chain", wire::chains_subject(&self.prefix), bytes);
        }
    }

    fn send(&self, kind: &'static str, subject: String, bytes: Vec<u8>) {
        let Err(e) = self.queue.try_send((subject, Bytes::from(bytes))) else {
            return;
        };
        crate::metrics::broker_not_sent(kind);
        if let mpsc::error::TrySendError::Full(_) = e {
            let now = Instant::now();
            let mut warned = self.warned.lock();
            if warned.is_none_or(|t| now.duration_since(t) >= FULL_WARN_EVERY) {
                *warned = Some(now);
                tracing::warn!(kind, capacity = OUTBOUND_QUEUE, "Broker outbound queue full; message not sent (other nodes fill publications from the history).");
            }
        }
    }
}

/// Sends queued messages in order until `stop`; then sends what is still queued and flushes
/// the connection.
pub async fn run_publisher(
    client: Client,
    mut rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    loop {
        let (subject, bytes) = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        send(&client, subject, bytes).await;
    }
    rx.close();
    while let Ok((subject, bytes)) = rx.try_recv() {
        send(&client, subject, bytes).await;
    }
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "Broker queue not flushed on stop.");
    }
}

async fn send(client: &Client, subject: String, bytes: Bytes) {
    if let Err(e) = client.publish(subject, bytes).await {
        tracing::warn!(error = %e, "Broker publish failed; subscribers will fill the gap from history.");
    }
}
