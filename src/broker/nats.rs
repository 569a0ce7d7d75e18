//! The NATS broker: interest-routed fan-out between nodes, per-stream ordering with gap
//! filling from the shared history, chain events, and outage handling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};

use super::order::{Orderer, Verdict};
use super::presence::{NodeSeen, Presence};
use super::wire::{key_token, ChainMessage, ChainSeen, ChainSnapshot, WirePublication};
use crate::chains::{Mode, Registry};
use crate::history::{History, Position, Recovery};
use crate::hub::{Hub, Publication};
use crate::protocol::caip::ChainId;
use crate::protocol::{Channel, Namespace};

/// How long an early arrival waits for the publications before it before they are read
/// from the history.
const GAP_GRACE: Duration = Duration::from_millis(150);
/// Longest the chains wait, after a reconnect, for every stream to catch up before they count
/// the broker as connected again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);
/// A node announces a chain's sign of life at most this often.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long one round trip to the server may take before it is tried again.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);

/// Error connecting to NATS.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {message}")]
pub struct ConnectError {
    /// The server address, its credentials redacted.
    pub url: String,
    pub message: String,
}

/// One key this node listens to.
struct Interest {
    holders: usize,
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The NATS transport of one node.
pub struct NatsBroker {
    client: Client,
    prefix: String,
    hub: Arc<Hub>,
    chains: Arc<Registry>,
    history: OnceLock<History>,
    interests: Mutex<HashMap<String, Interest>>,
    outbound: mpsc::UnboundedSender<(String, Bytes)>,
    up: AtomicBool,
    /// Fires on every reconnect so each interest catches up from the history.
    reconnected: broadcast::Sender<()>,
    /// Interests still catching up after the last reconnect; the chains hear the broker is
    /// back when the last one is done (or after `CATCH_UP_LIMIT`).
    catching_up: AtomicUsize,
    last_alive: Mutex<HashMap<String, Instant>>,
    /// The cluster's nodes this node hears from.
    presence: Arc<Presence>,
}

impl NatsBroker {
    /// Connects (retrying in the background when NATS is not there yet) and starts the
    /// publisher and chain-event tasks.
    pub async fn connect(
        url: &str,
        prefix: &str,
        hub: Arc<Hub>,
        chains: Arc<Registry>,
    ) -> Result<Arc<Self>, ConnectError> {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
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
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let (reconnected, _) = broadcast::channel(16);
        let up = client.connection_state() == async_nats::connection::State::Connected;
        let broker = Arc::new(NatsBroker {
            client,
            prefix: prefix.to_owned(),
            hub,
            chains: chains.clone(),
            history: OnceLock::new(),
            interests: Mutex::new(HashMap::new()),
            outbound,
            up: AtomicBool::new(up),
            reconnected,
            catching_up: AtomicUsize::new(0),
            last_alive: Mutex::new(HashMap::new()),
            presence: Presence::new(),
        });
        broker
            .presence
            .spawn(broker.client.clone(), format!("{prefix}.nodes"));
        chains.set_broker_connected(up);
        crate::metrics::broker_connected(up);
        tokio::spawn(publisher(broker.client.clone(), outbound_rx));
        tokio::spawn(chain_events(broker.clone()));
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            // Events say when the connection changes; the state poll covers what they do not
            // report (the first connection of a client that retried its initial connect).
            let mut poll = tokio::time::interval(Duration::from_millis(250));
            loop {
                let event = tokio::select! {
                    e = events_rx.recv() => match e { Some(e) => Some(e), None => return },
                    _ = poll.tick() => None,
                };
                let Some(b) = weak.upgrade() else { return };
                match event {
                    Some(e) => b.on_event(e),
                    None => b.set_up(
                        b.client.connection_state() == async_nats::connection::State::Connected,
                    ),
                }
            }
        });
        Ok(broker)
    }

    /// The history is opened after the broker (its commit listener needs the broker).
    pub fn set_history(&self, history: History) {
        let _ = self.history.set(history);
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
        if up {
            tracing::info!("NATS connection established; chains follow their status again once every stream caught up.");
            let pending = self.interests.lock().len();
            self.catching_up.store(pending, Ordering::Release);
            if pending == 0 || self.reconnected.send(()).is_err() {
                self.chains.set_broker_connected(true);
            } else {
                let weak = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(CATCH_UP_LIMIT).await;
                    if let Some(b) = weak.upgrade() {
                        if b.catching_up.swap(0, Ordering::AcqRel) > 0 && b.is_up() {
                            tracing::warn!("Streams still catching up after the reconnect; chains follow their status again anyway.");
                            b.chains.set_broker_connected(true);
                        }
                    }
                });
            }
        } else {
            self.chains.set_broker_connected(false);
            tracing::error!("NATS connection lost: every chain is reported down, publishing is refused until it returns.");
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The nodes heard from recently, this one first.
    pub fn nodes(&self) -> Vec<NodeSeen> {
        self.presence.nodes()
    }

    fn subject(&self, key: &str) -> String {
        format!("{}.p.{}", self.prefix, key_token(key))
    }

    fn chains_subject(&self) -> String {
        format!("{}.chains", self.prefix)
    }

    /// Queues a publication for every node (in this node's commit order).
    pub fn publish(&self, publication: &Publication, payload: &str) {
        let Ok(data) = RawValue::from_string(payload.to_owned()) else {
            return;
        };
        let durable = publication.durable.as_ref();
        let wire = WirePublication {
            ns: match publication.namespace {
                Namespace::AccountActivity => "a".into(),
                Namespace::MarketData => "m".into(),
            },
            channel: (&*publication.channel).into(),
            epoch: durable.map(|d| d.position.epoch.as_str().into()),
            offset: durable.map(|d| d.position.offset),
            data: &data,
        };
        if let Ok(bytes) = serde_json::to_vec(&wire) {
            let _ = self
                .outbound
                .send((self.subject(&publication.key), Bytes::from(bytes)));
        }
    }

    pub fn chain_alive(&self, chain: &ChainId) {
        let id = chain.to_string();
        {
            let mut last = self.last_alive.lock();
            let now = Instant::now();
            if last
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < ALIVE_EVERY)
            {
                return;
            }
            last.insert(id.clone(), now);
        }
        self.send_chain(ChainMessage {
            chain: id,
            mode: None,
        });
    }

    pub fn chain_mode(&self, chain: &ChainId, mode: Mode) {
        self.send_chain(ChainMessage {
            chain: chain.to_string(),
            mode: Some(mode),
        });
    }

    fn send_chain(&self, msg: ChainMessage) {
        if let Ok(bytes) = serde_json::to_vec(&msg) {
            let _ = self
                .outbound
                .send((self.chains_subject(), Bytes::from(bytes)));
        }
    }

    /// One interest finished catching up after a reconnect; the last one tells the chains.
    fn caught_up(&self) {
        let before = self
            .catching_up
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) && self.is_up() {
            self.chains.set_broker_connected(true);
        }
    }

    fn chains_view_subject(&self) -> String {
        format!("{}.chains.view", self.prefix)
    }

    /// Asks the other nodes for their view of the chains; the first answer within 1 s.
    pub async fn peers_chains(&self) -> Option<ChainSnapshot> {
        let ask = self
            .client
            .request(self.chains_view_subject(), Bytes::new());
        let reply = tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()?
            .ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }

    /// Answers every request for this node's view of the chains, from now on.
    pub fn serve_chains(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let (client, subject) = (self.client.clone(), self.chains_view_subject());
        tokio::spawn(async move {
            let mut sub = loop {
                match client.subscribe(subject.clone()).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            while let Some(msg) = sub.next().await {
                let (Some(reply), Some(broker)) = (msg.reply, weak.upgrade()) else {
                    continue;
                };
                let chains = broker
                    .chains
                    .snapshot()
                    .into_iter()
                    .map(|(chain, mode, age)| ChainSeen {
                        chain,
                        mode,
                        seen_ms_ago: age.map(|a| a.as_millis() as u64),
                    })
                    .collect();
                if let Ok(bytes) = serde_json::to_vec(&ChainSnapshot { chains }) {
                    let _ = client.publish(reply, Bytes::from(bytes)).await;
                }
            }
        });
    }

    /// Starts (or joins) listening to `key`; returns once the subscription is in place.
    pub async fn add_interest(self: &Arc<Self>, key: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        self.add_interest_until(key, deadline).await;
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
                let task = tokio::spawn(listen(self.clone(), key.to_owned(), tx));
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
        let placed = tokio::time::timeout_at(deadline, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        placed
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

/// Sends queued publications and chain events in order.
async fn publisher(client: Client, mut rx: mpsc::UnboundedReceiver<(String, Bytes)>) {
    while let Some((subject, bytes)) = rx.recv().await {
        if let Err(e) = client.publish(subject, bytes).await {
            tracing::warn!(error = %e, "Broker publish failed; subscribers will fill the gap from history.");
        }
    }
}

/// Applies chain events from every node to the local registry.
async fn chain_events(broker: Arc<NatsBroker>) {
    loop {
        let mut sub = match broker.client.subscribe(broker.chains_subject()).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(msg) = sub.next().await {
            let Ok(m) = serde_json::from_slice::<ChainMessage>(&msg.payload) else {
                continue;
            };
            let Ok(chain) = ChainId::parse(&m.chain) else {
                continue;
            };
            match m.mode {
                None => {
                    let _ = broker.chains.remote_alive(&chain);
                }
                Some(mode) => {
                    let _ = broker.chains.set_mode(&chain, mode, true);
                }
            }
        }
    }
}

/// Waits until the server has handled everything this connection sent so far. A request on a
/// fresh inbox subject, which nobody serves, comes back from the server itself as "no
/// responders"; the server handles one connection's commands in order. Retried while the
/// server does not answer in time.
async fn round_trip(client: &async_nats::Client) {
    use async_nats::RequestErrorKind;
    loop {
        let request = async_nats::Request::new().timeout(Some(ROUND_TRIP_TIMEOUT));
        match client.send_request(client.new_inbox(), request).await {
            Err(e) if e.kind() == RequestErrorKind::TimedOut => continue,
            // `NoResponders` is the answer; any other error is a closed client.
            _ => return,
        }
    }
}

/// Listens to one key: orders account streams by offset, fills gaps and catches up after a
/// reconnect from the history, and hands publications to the local hub.
async fn listen(broker: Arc<NatsBroker>, key: String, ready: watch::Sender<bool>) {
    let subject = broker.subject(&key);
    let mut sub = loop {
        match broker.client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    // The server has the subscription once a round trip made after it returns: nothing
    // published after the caller's registration can be missed. Until then the interest is
    // not ready, so a stalled server makes the subscribe fail in time rather than succeed
    // on an interest the server never saw.
    round_trip(&broker.client).await;
    let history = broker.history.get().cloned();
    let mut orderer: Option<Orderer<Arc<Publication>>> = None;
    if let (Some(h), true) = (
        &history,
        key.starts_with(crate::protocol::channel::ACCOUNT_ACTIVITY),
    ) {
        if let Ok(mut top) = h.positions(std::slice::from_ref(&key)).await {
            if let Some(top) = top.pop() {
                orderer = Some(Orderer::starting_at(top.epoch, top.offset));
            }
        }
    }
    let _ = ready.send(true);
    let mut reconnected = broker.reconnected.subscribe();
    let mut gap_deadline: Option<tokio::time::Instant> = None;
    loop {
        let gap_wait = async {
            match gap_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                let Ok(wire) = serde_json::from_slice::<WirePublication>(&msg.payload) else { continue };
                match (wire.ns.as_ref(), wire.epoch.as_deref(), wire.offset) {
                    ("a", Some(epoch), Some(offset)) => {
                        let position = Position { epoch: epoch.to_owned(), offset };
                        let Some(p) = Publication::durable(&wire.channel, wire.data.get(), &position, Instant::now()) else { continue };
                        let o = orderer.get_or_insert_with(Orderer::default);
                        match o.arrive(epoch, offset, Arc::new(p)) {
                            Verdict::Release(list) => deliver(&broker.hub, list),
                            Verdict::Gap { .. } => {
                                gap_deadline.get_or_insert(tokio::time::Instant::now() + GAP_GRACE);
                            }
                        }
                        if !o.has_gap() {
                            gap_deadline = None;
                        }
                    }
                    ("m", _, _) => {
                        if let Ok(Channel::MarketData(m)) = Channel::parse(&wire.channel) {
                            let p = Publication::new(Namespace::MarketData, m.key.clone(), m.asset.chain.reference().to_owned(),
                                wire.channel.as_ref().into(), wire.data.get(), None, Instant::now());
                            broker.hub.publish(&Arc::new(p));
                        }
                    }
                    _ => {}
                }
            }
            _ = gap_wait => {
                gap_deadline = None;
                if let (Some(o), Some(h)) = (orderer.as_mut(), &history) {
                    catch_up(&broker.hub, h, &key, o).await;
                }
            }
            r = reconnected.recv() => {
                if r.is_ok() {
                    if let (Some(o), Some(h)) = (orderer.as_mut(), &history) {
                        catch_up(&broker.hub, h, &key, o).await;
                    }
                }
                broker.caught_up();
            }
        }
    }
}

/// Reads everything after the orderer's position from the history and releases it in order.
async fn catch_up(
    hub: &Hub,
    history: &History,
    key: &str,
    orderer: &mut Orderer<Arc<Publication>>,
) {
    let Some(epoch) = orderer.epoch().map(str::to_owned) else {
        return;
    };
    loop {
        let after = Position {
            epoch: epoch.clone(),
            offset: orderer.last(),
        };
        match history.read_after(key, &after, 1000).await {
            Ok(Recovery::Recovered { publications, more }) => {
                let now = Instant::now();
                let filled = publications
                    .iter()
                    .filter_map(|s| {
                        Publication::durable(&s.channel, &s.payload, &s.position, now)
                            .map(|p| (s.position.offset, Arc::new(p)))
                    })
                    .collect();
                deliver(hub, orderer.fill(filled));
                if !more {
                    break;
                }
            }
            Ok(Recovery::Failed(_)) => {
                deliver(hub, orderer.give_up());
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read history to fill a gap; releasing what arrived.");
                deliver(hub, orderer.give_up());
                break;
            }
        }
    }
}

fn deliver(hub: &Hub, list: Vec<Arc<Publication>>) {
    for p in list {
        hub.publish(&p);
    }
}
