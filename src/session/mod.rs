//! One client connection: its session loop, its writer task, its limits, its subscriptions
//! and (in ack mode) its acknowledged delivery and resume.
//!
//! Lifecycle: the upgrade handler authenticates and calls [`run`]. The session greets the
//! client with `session-created`, then waits for the next [`Event`](events::Event) (a client
//! frame, the ping clock, the token's expiry, a chain status change, the ack timer, room for a
//! replay, a subscribe's cluster interest, the node's drain, the outbox finishing) and hands
//! it to one handler. A subscribe that must wait for the cluster broker completes from a later
//! event, so nothing a request waits for stops the loop. Every way out goes through one
//! cleanup that removes the connection's subscriptions from the hub; then the socket is read
//! until the client's close frame (bounded), so the last replies and the close frame reach
//! the client.
//!
//! - `events`: the session loop's events and their handlers.
//! - `requests`, `subscribe`: client requests; `subscriptions`: what the connection holds.
//! - `resume`, `replay`, `gate`: resume on subscribe in ack mode.
//! - `status`: chain status notifications.
//! - `outbox`, `writer`: the outbound queue and the task writing it to the socket.
//! - `delivery`: acknowledged delivery; `limits`: the abuse limits.
mod delivery;
mod events;
mod gate;
mod limits;
mod outbox;
mod replay;
mod requests;
mod resume;
mod status;
mod subscribe;
mod subscriptions;
mod waiting;
pub mod writer;

pub use delivery::AckTracker;
pub use outbox::{Outbound, Outbox, Receiver, State, Waiter};
pub use writer::close;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::auth::Claims;
use crate::chains::ChainEvent;
use crate::hub::ConnId;
use crate::metrics;
use crate::node::Node;
use crate::protocol::reply;
use limits::{ErrorBudget, TokenBucket};
use replay::ReplayJob;
use subscriptions::Subscriptions;
use waiting::Phase;

/// What the upgrade handler knows about a new connection.
pub struct SessionInit {
    /// The verified token's claims; `exp` bounds the session.
    pub claims: Claims,
    /// The client asked for acknowledged delivery (`?ack=true`).
    pub ack_mode: bool,
}

/// The session loop's state for one connection. Kept small: it lives in every idle
/// connection's task (docs/benchmarks-log.md, S3).
struct Session {
    /// The node's shared state: hub, broker, history, chains and settings.
    node: Arc<Node>,
    /// This connection's id in the hub.
    conn: ConnId,
    /// The connection's outbound queue, drained by the writer task.
    outbox: Outbox,
    /// The subscriptions replied to; each of their channels is registered in the hub.
    subs: Subscriptions,
    /// Requests (`limits.requests_per_second`).
    bucket: TokenBucket,
    /// Ack frames have their own bucket (`limits.acks_per_second`): cheap, but not free.
    ack_bucket: TokenBucket,
    /// Protocol errors per minute; over it the connection closes.
    errors: ErrorBudget,
    /// Pushes awaiting an ack; `Some` exactly in ack mode.
    acks: Option<AckTracker>,
    /// When the client last sent a frame; silence for 2.5 ping intervals closes it.
    last_seen: Instant,
    /// Replays accepted by resuming subscribes, queued a chunk per event in this order.
    replays: VecDeque<ReplayJob>,
    /// Whether a subscribe waits for its cluster interest (and the requests behind it).
    phase: Phase,
    /// Chain status changes, in the order the registry made them. A subscribe handles the
    /// queued ones before it reads the chains' current status, so each change reaches the
    /// client exactly one way: by its event, or by the snapshot that includes it.
    chain_events: broadcast::Receiver<Arc<ChainEvent>>,
}

/// Why the session loop stopped; decides the close frame.
enum Stop {
    Close(u16, &'static str, &'static str),
    /// A read failed (a message over the size limit, invalid UTF-8): the socket can no longer
    /// be read, so the close frame is followed by a short hold instead of a drain.
    ReadFailed(u16, &'static str, &'static str),
    Gone,
    /// The outbox is finishing (a slow consumer, or the writer failed): the writer closes.
    Finishing,
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

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// waiting for its close frame. Closing a socket with unread input makes the kernel send a
/// reset, which discards the replies and the close frame still on their way to the client.
const LINGER: Duration = Duration::from_secs(2);
/// How long a socket that can no longer be read stays open after its close frame, so that a
/// client still sending gets to read the close frame before the reset.
const HOLD_UNREADABLE: Duration = Duration::from_secs(1);
/// How long the writer may take to send the last items and the close frame.
const WRITER_GRACE: Duration = Duration::from_secs(10);

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
        outbox,
        subs: Subscriptions::default(),
        bucket: TokenBucket::new(
            settings.limits.requests_per_second,
            settings.limits.request_burst,
        ),
        ack_bucket: TokenBucket::new(settings.limits.acks_per_second, settings.limits.ack_burst),
        errors: ErrorBudget::new(settings.limits.errors_per_minute, Duration::from_secs(60)),
        acks,
        last_seen: Instant::now(),
        replays: VecDeque::new(),
        phase: Phase::Ready,
        chain_events: node.chains.events(),
    };

    let drain = node.shutdown.clone();
    let drain_at = async {
        drain.draining().await;
        // Spread over most of the drain window, so the clients do not reconnect together.
        let window = settings.server.drain_window.mul_f64(0.8);
        let delay = rand::thread_rng().gen_range(Duration::ZERO..=window);
        tokio::time::sleep(delay).await;
    };
    let stop = events::run_loop(&mut session, &mut stream, init.claims.exp, drain_at).await;

    let rest = session.stop(stop);
    drop(session);
    linger(writer, stream, rest).await;
    metrics::get().connections_open.decrement(1.0);
    tracing::debug!(conn, "Session ended.");
}

/// Waits for the writer to send the last items and the close frame, while reading what the
/// client still sends (its requests in flight, its close frame), so the socket is closed with
/// nothing unread and the client gets everything, the close frame included.
async fn linger(writer: JoinHandle<writer::Exit>, mut stream: SplitStream<WebSocket>, rest: Rest) {
    let abort = writer.abort_handle();
    let written = async {
        if tokio::time::timeout(WRITER_GRACE, writer).await.is_err() {
            abort.abort();
        }
    };
    let read = async {
        match rest {
            Rest::Drain => while let Some(Ok(_)) = stream.next().await {},
            Rest::Hold => tokio::time::sleep(HOLD_UNREADABLE).await,
            Rest::Nothing => {}
        }
    };
    tokio::join!(written, async {
        let _ = tokio::time::timeout(LINGER, read).await;
    });
}

// === Session ===

impl Session {
    /// Acts on why the loop stopped: asks the writer for the close frame (or tells it the
    /// connection is finishing), then removes every subscription. Returns what is left to
    /// read from the socket.
    fn stop(&mut self, stop: Stop) -> Rest {
        let rest = match stop {
            Stop::Close(code, reason, label) => {
                metrics::disconnect(label);
                self.outbox.push_close(code, reason);
                // A client that stopped answering pings will not send its close frame either.
                if code == close::PING_TIMEOUT {
                    Rest::Nothing
                } else {
                    Rest::Drain
                }
            }
            Stop::ReadFailed(code, reason, label) => {
                metrics::disconnect(label);
                self.outbox.push_close(code, reason);
                Rest::Hold
            }
            Stop::Finishing => {
                self.outbox.finish();
                Rest::Drain
            }
            // The client closed or vanished: the writer echoes a close and ends the socket.
            Stop::Gone => {
                self.outbox.finish();
                Rest::Nothing
            }
        };
        self.cleanup();
        rest
    }

    /// Removes the connection's subscriptions (and a pending subscribe's) from the hub and
    /// gives back their broker interest.
    fn cleanup(&mut self) {
        self.abandon_waiting();
        let held = self.subs.drain();
        let m = metrics::get();
        let mut ids = HashSet::new();
        let mut identities = HashSet::new();
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

/// Stops the session on a message it could not read.
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
