//! One key's listener: receives the key's publications from every node, releases account
//! streams strictly in offset order (filling gaps and catching up after a reconnect from the
//! shared history), and hands them to the node's handler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::nats::NatsBroker;
use super::order::{Orderer, Verdict};
use super::wire::{self, WirePublication};
use super::Handler;
use crate::history::{History, Position, Recovery};
use crate::hub::Publication;
use crate::protocol::{Channel, Namespace};

/// How long an early arrival waits for the publications before it before they are read
/// from the history.
const GAP_GRACE: Duration = Duration::from_millis(150);
/// How long one round trip to the server may take before it is tried again.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);
/// Publications read from the history per page of a gap fill.
const FILL_PAGE: usize = 1000;

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

impl NatsBroker {
    /// Listens to `key` until aborted; `ready` turns true once nothing published from then on
    /// can be missed.
    pub(super) async fn listen(self: Arc<Self>, key: String, ready: watch::Sender<bool>) {
        let broker = self;
        let subject = wire::publication_subject(&broker.prefix, &key);
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
        let history = &broker.history;
        let handler = &*broker.handler;
        let mut orderer: Option<Orderer<Arc<Publication>>> = None;
        if key.starts_with(crate::protocol::channel::ACCOUNT_ACTIVITY) {
            if let Ok(mut top) = history.positions(std::slice::from_ref(&key)).await {
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
                                Verdict::Release(list) => deliver(handler, list),
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
                                handler.deliver(&Arc::new(p));
                            }
                        }
                        _ => {}
                    }
                }
                _ = gap_wait => {
                    gap_deadline = None;
                    if let Some(o) = orderer.as_mut() {
                        catch_up(handler, history, &key, o).await;
                    }
                }
                r = reconnected.recv() => {
                    if r.is_ok() {
                        if let Some(o) = orderer.as_mut() {
                            catch_up(handler, history, &key, o).await;
                        }
                    }
                    broker.caught_up();
                }
            }
        }
    }
}

/// Reads everything after the orderer's position from the history and releases it in order.
async fn catch_up(
    handler: &dyn Handler,
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
        match history.read_after(key, &after, FILL_PAGE).await {
            Ok(Recovery::Recovered { publications, more }) => {
                let now = Instant::now();
                let filled = publications
                    .iter()
                    .filter_map(|s| {
                        Publication::durable(&s.channel, &s.payload, &s.position, now)
                            .map(|p| (s.position.offset, Arc::new(p)))
                    })
                    .collect();
                deliver(handler, orderer.fill(filled));
                if !more {
                    break;
                }
            }
            Ok(Recovery::Failed(_)) => {
                deliver(handler, orderer.give_up());
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read history to fill a gap; releasing what arrived.");
                deliver(handler, orderer.give_up());
                break;
            }
        }
    }
}

fn deliver(handler: &dyn Handler, list: Vec<Arc<Publication>>) {
    for p in list {
        handler.deliver(&p);
    }
}
