//! One client connection: its reader loop, its writer task, its limits, its subscriptions
//! and (in ack mode) its acknowledged delivery.
//!
//! Lifecycle: the upgrade handler authenticates and calls [`run`]. The session greets the
//! client with `session-created`, then loops over client frames, the ping clock, the token's
//! expiry, chain status events, the ack timer, replays and the node's drain signal. A subscribe
//! that must wait for the cluster broker completes from that loop too, so nothing a request
//! waits for stops the loop. Every way out goes through one cleanup that removes the
//! connection's subscriptions from the hub; then the socket is read until the client's close
//! frame (bounded), so the last replies and the close frame reach the client.
mod delivery;
mod limits;
mod outbox;
mod requests;
mod resume;
mod subscriptions;
pub mod writer;

pub use delivery::AckTracker;
pub use outbox::{Outbound, Outbox, Receiver, Waiter};
pub use writer::close;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use rand::Rng;
use tokio::time::sleep_until;

use crate::auth::Claims;
use crate::chains::ChainEvent;
use crate::hub::ConnId;
use crate::metrics;
use crate::node::Node;
use crate::protocol::{reply, Namespace};
use limits::{ErrorBudget, TokenBucket};
use subscriptions::{relevant, Subscriptions};

/// What the upgrade handler knows about a new connection.
pub struct SessionInit {
    pub claims: Claims,
    pub ack_mode: bool,
}

/// The reader side's state for one connection.
struct Session {
    node: Arc<Node>,
    conn: ConnId,
    outbox: Outbox,
    subs: Subscriptions,
    bucket: TokenBucket,
    /// Ack frames have their own bucket: cheap, but not free.
    ack_bucket: TokenBucket,
    errors: ErrorBudget,
    acks: Option<AckTracker>,
    last_seen: Instant,
    /// Replays queued by resuming subscribes, pumped by the session loop.
    replays: std::collections::VecDeque<resume::ReplayJob>,
    /// The subscribe waiting for its cluster interest (at most one at a time).
    pending: Option<PendingSubscribe>,
    /// Registers the pending subscribe's cluster interest; polled by the session loop.
    interest: Option<InterestFuture>,
    /// Requests received while a subscribe is pending, handled in order after it.
    deferred: std::collections::VecDeque<crate::protocol::request::Request>,
    /// Chain status changes, in the order the registry made them. A subscribe handles the
    /// queued ones before it reads the chains' current status, so each change reaches the
    /// client once: by its event, or by the snapshot that already includes it.
    chain_events: tokio::sync::broadcast::Receiver<Arc<ChainEvent>>,
}

/// The task registering a pending subscribe's cluster interest: whether each new channel's
/// interest was registered in time.
type InterestFuture = tokio::task::JoinHandle<Vec<bool>>;

/// A subscribe registered in the hub, waiting for its cluster interest before its reply.
struct PendingSubscribe {
    request_id: String,
    subscription_id: Arc<str>,
    /// The channels, with the gate of each resuming one.
    gated: Vec<(subscriptions::Held, Option<Arc<crate::hub::Gate>>)>,
    /// Indices into `gated` of the channels new to the connection (they need interest).
    interest: Vec<usize>,
    /// Indices into `gated` of the channels the connection already holds, with the channel
    /// as it was sent then: they move to the new id with the reply.
    moved: Vec<(usize, Arc<str>)>,
    positions: std::collections::HashMap<String, crate::protocol::Position>,
    /// Channels whose positions are ignored (`already_subscribed`).
    ignored: Vec<Arc<str>>,
    failed: Vec<String>,
    errors: serde_json::Map<String, serde_json::Value>,
    /// Channels new to the connection.
    new: usize,
}

/// Why the reader loop stopped; decides the close frame.
enum Stop {
    Close(u16, &'static str, &'static str),
    /// A read failed (a message over the size limit, invalid UTF-8): the socket can no longer
    /// be read, so the close frame is followed by a short hold instead of a drain.
    ReadFailed(u16, &'static str, &'static str),
    Gone,
    /// The outbox is finishing (a slow consumer, or the writer failed): the writer closes.
    Finishing,
}

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// waiting for its close frame. Closing a socket with unread input makes the kernel send a
/// reset, which discards the replies and the close frame still on their way to the client.
const LINGER: Duration = Duration::from_secs(2);
/// How long a socket that can no longer be read stays open after its close frame, so that a
/// client still sending gets to read the close frame before the reset.
const HOLD_UNREADABLE: Duration = Duration::from_secs(1);

/// Runs a connection to its end.
pub async fn run(socket: WebSocket, node: Arc<Node>, init: SessionInit) {
    let settings = node.settings.clone();
    let (sink, mut stream) = socket.split();
    let (outbox, rx) = Outbox::new(settings.server.max_queue_bytes, init.ack_mode);
    let acks = init.ack_mode.then(|| {
        AckTracker::new(
            settings.delivery.ack_timeout,
            settings.delivery.max_retries,
            settings.delivery.max_unacked,
        )
    });
    let writer = tokio::spawn(writer::run(sink, rx, outbox.clone(), acks.clone()));
    let conn = node.next_conn_id();
    let session_id = uuid::Uuid::new_v4().to_string();
    outbox.push(Outbound::Text(reply::session_created(&session_id)));
    metrics::get().connections_open.increment(1.0);
    tracing::debug!(conn, %session_id, sub = %init.claims.sub, ack = init.ack_mode, "Session started.");

    let mut session = Session {
        node: node.clone(),
        conn,
        outbox: outbox.clone(),
        subs: Subscriptions::default(),
        bucket: TokenBucket::new(
            settings.limits.requests_per_second,
            settings.limits.request_burst,
        ),
        ack_bucket: TokenBucket::new(settings.limits.acks_per_second, settings.limits.ack_burst),
        errors: ErrorBudget::new(settings.limits.errors_per_minute, Duration::from_secs(60)),
        acks,
        last_seen: Instant::now(),
        replays: Default::default(),
        pending: None,
        interest: None,
        deferred: Default::default(),
        chain_events: node.chains.events(),
    };

    let ping_every = settings.server.ping_interval;
    // Each connection pings at its own phase of the interval. Connections made together (the
    // reconnect storm after a deploy) would otherwise ping and pong together every interval
    // for as long as they live: at 10,000 connections a burst of ~0.3 s of CPU every 30 s,
    // which delayed the deliveries queued behind it (docs/benchmarks-log.md, "Ping phases").
    let first_ping = ping_every.mul_f64(rand::thread_rng().gen_range(0.1..=1.0));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + first_ping, ping_every);
    let expiry = tokio::time::Instant::now() + until_expiry(init.claims.exp);
    let drain = node.shutdown.clone();
    let drain_at = async {
        drain.draining().await;
        let window = settings.server.drain_window.mul_f64(0.8);
        let delay = rand::thread_rng().gen_range(Duration::ZERO..=window);
        tokio::time::sleep(delay).await;
    };
    tokio::pin!(drain_at);

    let expiry = sleep_until(expiry);
    tokio::pin!(expiry);
    // Ack mode: one timer, kept at or before the next ack deadline (`AckTracker::next_check`).
    // Each turn of the loop moves it earlier when a deadline needs it, or re-arms it once it
    // fired; otherwise it is left to fire early, which costs a turn of the loop per
    // `ack_timeout` rather than a timer per push.
    let mut ack_timer = session
        .acks
        .as_ref()
        .map(|acks| Box::pin(sleep_until(acks.next_check(Instant::now()).into())));
    let stop = loop {
        if let (Some(timer), Some(acks)) = (ack_timer.as_mut(), session.acks.as_ref()) {
            let check = tokio::time::Instant::from_std(acks.next_check(Instant::now()));
            if timer.is_elapsed() || check < timer.deadline() {
                timer.as_mut().reset(check);
            }
        }
        let replay_delay = session.replay_delay();
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(msg)) => {
                    session.last_seen = Instant::now();
                    // Boxed: a subscribe's future (history reads, broker interest) is large, and
                    // held inline it would sit in every idle connection's task (docs/benchmarks-log.md, S3).
                    if let Some(stop) = Box::pin(session.on_frame(msg)).await {
                        break stop;
                    }
                }
                Some(Err(e)) => break classify_read_error(e),
                None => break Stop::Gone,
            },
            _ = ping.tick() => {
                if session.last_seen.elapsed() > ping_every * 2 + ping_every / 2 {
                    break Stop::Close(close::PING_TIMEOUT, "ping timeout: no pong received", "ping_timeout");
                }
                session.outbox.push(Outbound::Ping);
            }
            _ = &mut expiry => break Stop::Close(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token", "token_expired"),
            event = session.chain_events.recv() => match event {
                Ok(event) => session.on_chain_event(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => session.resync_chains(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            _ = ack_fired(&mut ack_timer) => {
                // The loop's next turn re-arms the timer that fired.
                if let Some(stop) = session.on_ack_timer() {
                    break stop;
                }
            }
            _ = tokio::time::sleep(replay_delay), if !session.replays.is_empty() => {
                if Box::pin(session.pump_replay()).await.is_err() {
                    break Stop::Close(close::TRY_AGAIN_LATER, "replay interrupted: reconnect and resume", "replay_interrupted");
                }
            }
            placed = interest_placed(&mut session.interest) => {
                if let Some(stop) = Box::pin(session.on_interest(placed)).await {
                    break stop;
                }
            }
            _ = &mut drain_at => {
                session.send_down_for_all();
                break Stop::Close(close::RESTART, "server restart: reconnect", "drain");
            }
            _ = outbox.closing(Waiter::Session) => break Stop::Finishing,
        }
    };

    // What still has to be read from the socket before it may be dropped.
    let mut rest = Rest::Drain;
    match stop {
        Stop::Close(code, reason, label) => {
            metrics::disconnect(label);
            session.outbox.close(code, reason);
            // A client that stopped answering pings will not send its close frame either.
            if code == close::PING_TIMEOUT {
                rest = Rest::Nothing;
            }
        }
        Stop::ReadFailed(code, reason, label) => {
            metrics::disconnect(label);
            session.outbox.close(code, reason);
            rest = Rest::Hold;
        }
        Stop::Finishing => session.outbox.cancel(),
        // The client closed or vanished: the writer echoes a close and ends the socket.
        Stop::Gone => {
            session.outbox.cancel();
            rest = Rest::Nothing;
        }
    }
    session.cleanup();
    drop(session);
    // The writer ends after the close frame, or when every outbox handle is gone.
    drop(outbox);
    let abort = writer.abort_handle();
    let written = async {
        if tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    };
    // Reads what the client still sends (its requests in flight, its close frame) while the
    // writer sends the last replies and the close frame, so the socket is closed with nothing
    // unread and the client gets everything, the close frame included.
    let linger = async {
        match rest {
            Rest::Drain => while let Some(Ok(_)) = stream.next().await {},
            Rest::Hold => tokio::time::sleep(HOLD_UNREADABLE).await,
            Rest::Nothing => {}
        }
    };
    tokio::join!(written, async {
        let _ = tokio::time::timeout(LINGER, linger).await;
    });
    drop(stream);
    metrics::get().connections_open.decrement(1.0);
    tracing::debug!(conn, "Session ended.");
}

/// What the session still reads from a closing socket.
enum Rest {
    /// Read and discard until the client's close frame or the end of the stream.
    Drain,
    /// The stream failed and cannot be read: keep the socket open a moment without reading.
    Hold,
    /// The client closed or the socket is gone.
    Nothing,
}

fn until_expiry(exp: u64) -> Duration {
    let now_ms = crate::protocol::now_ms().max(0) as u64;
    Duration::from_millis((exp.saturating_mul(1000)).saturating_sub(now_ms))
}

/// Resolves with the pending subscribe's interest registration; never without one.
async fn interest_placed(interest: &mut Option<InterestFuture>) -> Vec<bool> {
    match interest {
        // A failed task placed nothing.
        Some(f) => f.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// Resolves when the ack timer fires; never without ack mode.
async fn ack_fired(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

fn classify_read_error(e: axum::Error) -> Stop {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    match e.into_inner().downcast::<WsError>() {
        Ok(ws) => match *ws {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                Stop::ReadFailed(close::TOO_BIG, "message too big", "too_big")
            }
            WsError::Utf8(_) => Stop::ReadFailed(
                close::INVALID_PAYLOAD,
                "text frame is not valid UTF-8",
                "invalid_utf8",
            ),
            _ => Stop::Gone,
        },
        Err(_) => Stop::Gone,
    }
}

// === Session ===

impl Session {
    async fn on_frame(&mut self, msg: Message) -> Option<Stop> {
        match msg {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => Some(Stop::Close(
                close::UNSUPPORTED_DATA,
                "binary frames are not supported: send JSON text frames",
                "binary",
            )),
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => Some(Stop::Gone),
        }
    }

    fn on_chain_event(&mut self, event: &ChainEvent) {
        for (ns, selectors) in self.subs.selectors() {
            for up in [false, true] {
                let changed = event
                    .changes
                    .iter()
                    .filter(|(_, u)| *u == up)
                    .map(|(c, _)| c);
                let ids = relevant(&selectors, changed);
                self.send_status(ns, &ids, up);
            }
        }
    }

    /// Handles the chain events already queued, for the subscriptions held now.
    fn take_queued_chain_events(&mut self) {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            match self.chain_events.try_recv() {
                Ok(event) => self.on_chain_event(&event),
                Err(TryRecvError::Lagged(_)) => self.resync_chains(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// After missed events, tell the current status of every relevant chain.
    fn resync_chains(&mut self) {
        let up = self.node.chains.up_chains();
        for (ns, selectors) in self.subs.selectors() {
            self.send_status(ns, &relevant(&selectors, up.iter()), true);
        }
    }

    fn send_down_for_all(&mut self) {
        let up = self.node.chains.up_chains();
        for (ns, selectors) in self.subs.selectors() {
            self.send_status(ns, &relevant(&selectors, up.iter()), false);
        }
    }

    fn send_status(&self, ns: Namespace, chain_ids: &[String], up: bool) {
        if chain_ids.is_empty() {
            return;
        }
        if self.outbox.push(Outbound::Text(reply::system_notification(
            ns, chain_ids, up,
        ))) {
            metrics::system_notifications(up, 1);
        }
    }

    fn on_ack_timer(&mut self) -> Option<Stop> {
        let acks = self.acks.as_ref()?;
        match acks.expire(Instant::now()) {
            delivery::Expired::GiveUp => {
                metrics::delivery_failure("ack_timeout");
                Some(Stop::Close(
                    close::ACK_TIMEOUT,
                    "ack timeout",
                    "ack_timeout",
                ))
            }
            delivery::Expired::Resend(items) => {
                metrics::redeliveries(items.len() as u64);
                for item in items {
                    self.outbox.push(item);
                }
                None
            }
        }
    }

    fn cleanup(&mut self) {
        self.abandon_pending();
        let held = self.subs.drain();
        let m = metrics::get();
        let mut ids = std::collections::HashSet::new();
        let mut identities = std::collections::HashSet::new();
        for (id, h) in &held {
            self.node.hub.unsubscribe(&h.key, self.conn, id, &h.sent);
            self.node.broker.remove_interest(&h.key);
            ids.insert(id.clone());
            identities.insert(h.identity.clone());
        }
        m.subscriptions_active.decrement(ids.len() as f64);
        m.channels_active.decrement(identities.len() as f64);
    }
}
