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
//! - **Ack after commit.** The valid messages of a batch go through
//!   [`crate::ingest::publish`] in one call (one group commit); each is acknowledged to
//!   JetStream only after that call returned, so a crash before the commit leaves them
//!   unacknowledged and JetStream redelivers them.
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
//!
//! # Layout
//! - `subject`: the subject grammar ([`Subject`]).
//! - `link`: the connection, the stream and the durable consumer.
//! - `consumer`: the loop: fetch, hold back for order, extend deadlines, hand back on stop.
//! - `batch`: one batch's classification, group commit and acknowledgements.
//!
//! Its settings are [`crate::config::JetStreamConfig`]; its metrics are declared in
//! [`crate::metrics`].
mod batch;
mod consumer;
mod link;
mod subject;

pub use subject::Subject;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use consumer::Consumer;

/// The running consumer of one node.
pub struct Ingest {
    /// Cancelled on drain: the loop stops fetching and hands back what it holds.
    stop: CancellationToken,
    /// The consumer loop.
    task: JoinHandle<()>,
}

impl Ingest {
    /// Starts consuming when `ingest.jetstream.url` is set. Never fails on an unreachable
    /// server: the loop connects and retries in the background.
    pub fn spawn(node: Arc<Node>) -> Option<Ingest> {
        let config = node.settings.ingest.jetstream.clone();
        let url = config.url.clone()?;
        crate::metrics::describe_ingest();
        let stop = node.shutdown.stop_token().child_token();
        let consumer = Consumer::new(node, config, url, stop.clone());
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
