//! The session loop: what a session waits for, and one handler per event.
//!
//! `run_loop` waits for the next [`Event`] and passes it to [`Session::on_event`], which
//! dispatches to the event's handler. A handler returns `Some(Stop)` to end the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep_until, Sleep};

use super::delivery::Expired;
use super::waiting::interest_registered;
use super::{classify_read_error, close, Outbound, Session, Stop, Waiter};
use crate::chains::ChainEvent;
use crate::metrics;

/// One thing the session loop was woken by.
pub(super) enum Event {
    /// A client frame, a read error, or the end of the stream.
    Frame(Option<Result<Message, axum::Error>>),
    /// The ping clock ticked.
    PingDue,
    /// The token expired.
    TokenExpired,
    /// A chain status change (or the news that some were missed).
    Chain(Result<Arc<ChainEvent>, RecvError>),
    /// The ack timer fired (ack mode).
    AckDue,
    /// A replay may queue its next chunk.
    ReplayDue,
    /// The pending subscribe's cluster interest: whether each new channel's was registered.
    InterestRegistered(Vec<bool>),
    /// The node is draining and this connection's turn to go has come.
    Drain,
    /// The outbox left `Open` (a slow consumer, or the writer failed).
    OutboxFinishing,
}

/// Runs the session loop until a handler stops it. `exp` is the token's expiry (Unix
/// seconds); `drain_at` resolves when the node's drain reaches this connection.
pub(super) async fn run_loop(
    session: &mut Session,
    stream: &mut SplitStream<WebSocket>,
    exp: u64,
    drain_at: impl Future<Output = ()>,
) -> Stop {
    tokio::pin!(drain_at);
    let ping_every = session.node.settings.server.ping_interval;
    // Each connection pings at its own phase of the interval. Connections made together (the
    // reconnect storm after a deploy) would otherwise ping and pong together every interval
    // for as long as they live: at 10,000 connections a burst of ~0.3 s of CPU every 30 s,
    // which delays the deliveries queued behind it (docs/benchmarks-log.md, "Ping phases").
    let first_ping = ping_every.mul_f64(rand::thread_rng().gen_range(0.1..=1.0));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + first_ping, ping_every);
    let expiry = sleep_until(tokio::time::Instant::now() + until_expiry(exp));
    tokio::pin!(expiry);
    // Ack mode: one timer, kept at or before the next ack deadline (`AckTracker::next_check`).
    // Each turn of the loop moves it earlier when a deadline needs it, or re-arms it when it
    // has fired; otherwise it is left to fire early, which costs a turn of the loop per
    // `ack_timeout` rather than a timer per push.
    let mut ack_timer = session
        .acks
        .as_ref()
        .map(|acks| Box::pin(sleep_until(acks.next_check(Instant::now()).into())));
    loop {
        if let (Some(timer), Some(acks)) = (ack_timer.as_mut(), session.acks.as_ref()) {
            let check = tokio::time::Instant::from_std(acks.next_check(Instant::now()));
            if timer.is_elapsed() || check < timer.deadline() {
                timer.as_mut().reset(check);
            }
        }
        let replay_delay = session.replay_delay();
        let event = tokio::select! {
            frame = stream.next() => Event::Frame(frame),
            _ = ping.tick() => Event::PingDue,
            _ = &mut expiry => Event::TokenExpired,
            event = session.chain_events.recv() => Event::Chain(event),
            _ = ack_fired(&mut ack_timer) => Event::AckDue,
            _ = tokio::time::sleep(replay_delay), if !session.replays.is_empty() => Event::ReplayDue,
            registered = interest_registered(&mut session.phase) => Event::InterestRegistered(registered),
            _ = &mut drain_at => Event::Drain,
            _ = session.outbox.finishing(Waiter::Session) => Event::OutboxFinishing,
        };
        if let Some(stop) = session.on_event(event).await {
            return stop;
        }
    }
}

fn until_expiry(exp: u64) -> Duration {
    let now_ms = crate::protocol::now_ms().max(0) as u64;
    Duration::from_millis((exp.saturating_mul(1000)).saturating_sub(now_ms))
}

/// Resolves when the ack timer fires; never without ack mode.
async fn ack_fired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

// === Session ===

impl Session {
    /// Hands `event` to its handler. Handlers that read history or wait on the broker are
    /// boxed: their futures are large, and held inline they would sit in every idle
    /// connection's task (docs/benchmarks-log.md, S3).
    async fn on_event(&mut self, event: Event) -> Option<Stop> {
        match event {
            Event::Frame(Some(Ok(msg))) => Box::pin(self.on_frame(msg)).await,
            Event::Frame(Some(Err(e))) => Some(classify_read_error(e)),
            Event::Frame(None) => Some(Stop::Gone),
            Event::PingDue => self.on_ping_due(),
            Event::TokenExpired => Some(Stop::Close(
                close::TOKEN_EXPIRED,
                "token expired: reconnect with a fresh token",
                "token_expired",
            )),
            Event::Chain(event) => {
                self.on_chain(event);
                None
            }
            Event::AckDue => self.on_ack_due(),
            Event::ReplayDue => Box::pin(self.on_replay_due()).await,
            Event::InterestRegistered(registered) => {
                Box::pin(self.on_interest_registered(registered)).await
            }
            Event::Drain => self.on_drain(),
            Event::OutboxFinishing => Some(Stop::Finishing),
        }
    }

    async fn on_frame(&mut self, msg: Message) -> Option<Stop> {
        self.last_seen = Instant::now();
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

    /// Closes a client silent for 2.5 ping intervals; pings the others.
    fn on_ping_due(&mut self) -> Option<Stop> {
        let every = self.node.settings.server.ping_interval;
        if self.last_seen.elapsed() > every * 2 + every / 2 {
            return Some(Stop::Close(
                close::PING_TIMEOUT,
                "ping timeout: no pong received",
                "ping_timeout",
            ));
        }
        self.outbox.push(Outbound::Ping);
        None
    }

    fn on_chain(&mut self, event: Result<Arc<ChainEvent>, RecvError>) {
        match event {
            Ok(event) => self.on_chain_event(&event),
            Err(RecvError::Lagged(_)) => self.resync_chains(),
            Err(RecvError::Closed) => {}
        }
    }

    /// Re-sends the pushes whose ack is overdue, or gives up when their retries are spent.
    fn on_ack_due(&mut self) -> Option<Stop> {
        let acks = self.acks.as_ref()?;
        match acks.expire(Instant::now()) {
            Expired::GiveUp => {
                metrics::delivery_failure("ack_timeout");
                Some(Stop::Close(
                    close::ACK_TIMEOUT,
                    "ack timeout",
                    "ack_timeout",
                ))
            }
            Expired::Resend(items) => {
                metrics::redeliveries(items.len() as u64);
                for item in items {
                    self.outbox.push(item);
                }
                None
            }
        }
    }

    async fn on_replay_due(&mut self) -> Option<Stop> {
        match self.pump_replay().await {
            Ok(()) => None,
            Err(_) => Some(Stop::Close(
                close::TRY_AGAIN_LATER,
                "replay interrupted: reconnect and resume",
                "replay_interrupted",
            )),
        }
    }

    /// Tells the client every chain it follows is down here, then closes for the restart.
    fn on_drain(&mut self) -> Option<Stop> {
        self.send_down_for_all();
        Some(Stop::Close(
            close::RESTART,
            "server restart: reconnect",
            "drain",
        ))
    }
}
