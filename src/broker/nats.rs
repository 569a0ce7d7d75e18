//! The NATS broker of one node: its connection and the state of that connection, the
//! interests (keys this node's clients hold), and its tasks, all owned and stopped by
//! [`NatsBroker::close`].
//!
//! Invariant: while the connection is down, or up but some interest has not caught up from
//! the history yet (at most [`CATCH_UP_LIMIT`]), the handler hears `connected(false)`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::Client;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::outbound::{run_publisher, Outbound};
use super::presence::{NodeSeen, Presence};
use super::wire;
use super::Handler;
use crate::history::History;

/// Longest the chains wait, after a reconnect, for every stream to catch up before they count
/// the broker as connected again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);
/// Longest [`NatsBroker::close`] waits for the outbound queue to be sent.
const FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// Error connecting to NATS.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {message}; check broker.url")]
pub struct ConnectError {
    /// The server address, its credentials redacted.
    pub url: String,
    /// What the client reported.
    pub message: String,
}

/// A NATS connection whose receiving side has not started yet.
pub struct Connection {
    /// The client (reconnects on its own).
    client: Client,
    /// `broker.subject_prefix`.
    prefix: String,
    /// The sending half.
    pub outbound: Outbound,
    /// The publisher task, sending what `outbound` queues.
    publisher: JoinHandle<()>,
    /// Stops the publisher (after it sent what is queued).
    stop: CancellationToken,
    /// The client's connection events.
    events: mpsc::UnboundedReceiver<async_nats::Event>,
}

impl Connection {
    /// Connects (retrying in the background when NATS is not there yet) and starts the
    /// publisher.
    pub async fn open(url: &str, prefix: &str) -> Result<Connection, ConnectError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name("activity-gateway")
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Come back quickly after a NATS restart: wallets poll while the node is cut off.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(2_000))
            })
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .connect(url)
            .await
            .map_err(|e| ConnectError {
                url: crate::config::redact::url(url),
                message: e.to_string(),
            })?;
        crate::metrics::describe_broker();
        let (outbound, rx) = Outbound::new(prefix);
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(run_publisher(client.clone(), rx, stop.clone()));
        Ok(Connection {
            client,
            prefix: prefix.to_owned(),
            outbound,
            publisher,
            stop,
            events,
        })
    }
}

/// One key this node listens to.
struct Interest {
    /// Local subscribers holding the key.
    holders: usize,
    /// True once the subscription is in place on the server.
    ready: watch::Receiver<bool>,
    /// The key's listener.
    task: JoinHandle<()>,
}

/// The NATS transport of one node.
pub struct NatsBroker {
    /// The client.
    pub(super) client: Client,
    /// `broker.subject_prefix`.
    pub(super) prefix: String,
    /// Where received publications and chain events go.
    pub(super) handler: Arc<dyn Handler>,
    /// The shared history, read to fill gaps.
    pub(super) history: History,
    /// The sending half.
    pub(super) outbound: Outbound,
    /// The keys this node listens to.
    interests: Mutex<HashMap<String, Interest>>,
    /// The connection is up.
    up: AtomicBool,
    /// Fires on every reconnect so each interest catches up from the history.
    pub(super) reconnected: broadcast::Sender<()>,
    /// Interests still catching up after the last reconnect; the handler hears the broker is
    /// back when the last one is done (or after `CATCH_UP_LIMIT`).
    catching_up: AtomicUsize,
    /// When this node last announced each chain's sign of life.
    pub(super) last_alive: Mutex<HashMap<String, Instant>>,
    /// The cluster's nodes this node hears from.
    presence: Arc<Presence>,
    /// Every task but the publisher and the interests' listeners.
    pub(super) tasks: Mutex<JoinSet<()>>,
    /// The publisher task; taken by `close`.
    publisher: Mutex<Option<JoinHandle<()>>>,
    /// Stops the publisher.
    stop: CancellationToken,
}

impl NatsBroker {
    /// Starts the receiving side: connection watching, chain events, presence.
    pub fn start(conn: Connection, history: History, handler: Arc<dyn Handler>) -> Arc<Self> {
        let up = conn.client.connection_state() == State::Connected;
        let (reconnected, _) = broadcast::channel(16);
        let broker = Arc::new(NatsBroker {
            client: conn.client,
            prefix: conn.prefix,
            handler,
            history,
            outbound: conn.outbound,
            interests: Mutex::new(HashMap::new()),
            up: AtomicBool::new(up),
            reconnected,
            catching_up: AtomicUsize::new(0),
            last_alive: Mutex::new(HashMap::new()),
            presence: Presence::new(),
            tasks: Mutex::new(JoinSet::new()),
            publisher: Mutex::new(Some(conn.publisher)),
            stop: conn.stop,
        });
        broker.handler.connected(up);
        crate::metrics::broker_connected(up);
        {
            let mut tasks = broker.tasks.lock();
            let subject = wire::nodes_subject(&broker.prefix);
            broker
                .presence
                .spawn(&mut tasks, broker.client.clone(), subject);
            tasks.spawn(broker.clone().receive_chain_events());
            tasks.spawn(watch_connection(Arc::downgrade(&broker), conn.events));
        }
        broker
    }

    /// Sends what the outbound queue holds (at most [`FLUSH_LIMIT`]), then stops every task.
    pub async fn close(&self) {
        self.stop.cancel();
        let publisher = self.publisher.lock().take();
        if let Some(mut p) = publisher {
            if tokio::time::timeout(FLUSH_LIMIT, &mut p).await.is_err() {
                tracing::warn!("Broker queue not sent within {FLUSH_LIMIT:?}; other nodes fill it from the history.");
                p.abort();
            }
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        tasks.shutdown().await;
        for (_, i) in self.interests.lock().drain() {
            i.task.abort();
        }
    }

    fn on_event(self: &Arc<Self>, event: async_nats::Event) {
        match event {
            async_nats::Event::Connected => self.set_up(true),
            async_nats::Event::Disconnected => self.set_up(false),
            other => tracing::warn!(event = %other, "NATS event."),
        }
    }

    fn set_up(self: &Arc<Self>, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        crate::metrics::broker_connected(up);
        if !up {
            self.handler.connected(false);
            tracing::error!("NATS connection lost: every chain is reported down, publishing is refused until it returns.");
            return;
        }
        tracing::info!("NATS connection established; chains follow their status again once every stream caught up.");
        let pending = self.interests.lock().len();
        self.catching_up.store(pending, Ordering::Release);
        if pending == 0 || self.reconnected.send(()).is_err() {
            self.handler.connected(true);
            return;
        }
        let weak = Arc::downgrade(self);
        self.tasks.lock().spawn(async move {
            tokio::time::sleep(CATCH_UP_LIMIT).await;
            if let Some(b) = weak.upgrade() {
                if b.catching_up.swap(0, Ordering::AcqRel) > 0 && b.is_up() {
                    tracing::warn!("Streams still catching up after the reconnect; chains follow their status again anyway.");
                    b.handler.connected(true);
                }
            }
        });
    }

    /// False while the connection is down.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The nodes heard from recently, this one first.
    pub fn nodes(&self) -> Vec<NodeSeen> {
        self.presence.nodes()
    }

    /// One interest finished catching up after a reconnect; the last one tells the handler.
    pub(super) fn caught_up(&self) {
        let before = self
            .catching_up
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) && self.is_up() {
            self.handler.connected(true);
        }
    }

    /// Starts (or joins) listening to `key`; true once the subscription is in place, false if
    /// it is not by `deadline` (the interest is counted either way: the caller removes it).
    pub async fn add_interest_until(
        self: &Arc<Self>,
        key: &str,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut ready = {
            let mut interests = self.interests.lock();
            let interest = interests.entry(key.to_owned()).or_insert_with(|| {
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(self.clone().listen(key.to_owned(), tx));
                Interest {
                    holders: 0,
                    ready: rx,
                    task,
                }
            });
            interest.holders += 1;
            interest.ready.clone()
        };
        // Bounded: a node without NATS still serves its clients live from nothing.
        tokio::time::timeout_at(deadline, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops listening to `key` after its last local holder.
    pub fn remove_interest(&self, key: &str) {
        let mut interests = self.interests.lock();
        if let Some(i) = interests.get_mut(key) {
            i.holders = i.holders.saturating_sub(1);
            if i.holders == 0 {
                if let Some(i) = interests.remove(key) {
                    i.task.abort();
                }
            }
        }
    }
}

/// Follows the connection's state. Events say when it changes; the state poll covers what
/// they do not report (the first connection of a client that retried its initial connect).
async fn watch_connection(
    broker: std::sync::Weak<NatsBroker>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => Some(e), None => return },
            _ = poll.tick() => None,
        };
        let Some(b) = broker.upgrade() else { return };
        match event {
            Some(e) => b.on_event(e),
            None => b.set_up(b.client.connection_state() == State::Connected),
        }
    }
}
