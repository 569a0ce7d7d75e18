//! The writer task of one connection: the only place that writes to its socket.
//!
//! It drains the outbox in order, builds each push frame from the shared publication bytes,
//! feeds a run of frames and flushes once. If the outbox overflows (the client stopped
//! reading), it abandons the queue and sends a real close frame with 1013, waiting at most
//! `CLOSE_GRACE` for the client to take it before dropping the TCP connection.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;

use super::delivery::AckTracker;
use super::outbox::Receiver;
use super::outbox::{Outbound, Outbox, State, Waiter};
use crate::metrics;

/// How long a close frame may wait for a client that does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Frames fed before one flush.
const MAX_RUN: usize = 64;

/// Close codes the server sends. Each is documented in docs/protocol.md.
pub mod close {
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const PING_TIMEOUT: u16 = 4002;
    pub const ACK_TIMEOUT: u16 = 4010;
}

/// Why the writer stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// A close frame was sent.
    Closed,
    /// The queue overflowed; 1013 was sent (or the grace ran out).
    SlowConsumer,
    /// The socket failed or the session ended.
    Gone,
}

pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: Receiver,
    outbox: Outbox,
    acks: Option<AckTracker>,
) -> Exit {
    // One registration for the connection's life, not one per frame (see `Outbox::finishing`).
    let finishing = outbox.finishing(Waiter::Writer);
    tokio::pin!(finishing);
    let overflowed = || outbox.state() == State::Overflowed;
    let exit = loop {
        let first = tokio::select! {
            biased;
            _ = &mut finishing => break if overflowed() { Exit::SlowConsumer } else { Exit::Gone },
            item = rx.recv() => match item { Some(i) => i, None => break Exit::Gone },
        };
        let mut item = Some(first);
        let mut fed = 0;
        let mut closed = None;
        while let Some(it) = item.take() {
            if overflowed() {
                break;
            }
            match it {
                Outbound::Close { code, reason } => {
                    closed = Some((code, reason));
                    break;
                }
                other => {
                    // A client that stops reading blocks the feed when the socket buffer is
                    // full; the overflow signal must still get through.
                    let fed_ok = tokio::select! {
                        r = feed(&mut sink, other, &outbox, acks.as_ref()) => r.is_ok(),
                        _ = &mut finishing => false,
                    };
                    if !fed_ok {
                        if overflowed() {
                            break;
                        }
                        outbox.finish();
                        return Exit::Gone;
                    }
                }
            }
            fed += 1;
            if fed < MAX_RUN {
                item = rx.try_recv().ok();
            }
        }
        if overflowed() {
            break Exit::SlowConsumer;
        }
        let flushed = tokio::select! {
            r = sink.flush() => r.is_ok(),
            _ = &mut finishing => false,
        };
        if let Some((code, reason)) = closed {
            if flushed {
                send_close(&mut sink, code, reason).await;
            }
            break Exit::Closed;
        }
        if !flushed {
            if overflowed() {
                break Exit::SlowConsumer;
            }
            break Exit::Gone;
        }
    };
    if exit == Exit::SlowConsumer {
        metrics::get().slow_consumer_disconnects.increment(1);
        metrics::disconnect("slow_consumer");
        tracing::debug!(queued = outbox.queued_bytes(), "Slow consumer closed.");
        send_close(
            &mut sink,
            close::TRY_AGAIN_LATER,
            "slow consumer: outbound queue overflowed",
        )
        .await;
    }
    if exit == Exit::Gone {
        // Completes a close the client started (tungstenite queued the echo) and ends TCP.
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
    }
    outbox.finish();
    exit
}

async fn feed(
    sink: &mut SplitSink<WebSocket, Message>,
    item: Outbound,
    outbox: &Outbox,
    acks: Option<&AckTracker>,
) -> Result<(), axum::Error> {
    let len = item.len(outbox.ack_mode());
    let result = match item {
        Outbound::Push {
            publication,
            subscription_id,
            channel,
            redelivered,
        } => {
            let frame =
                publication.frame(&subscription_id, &channel, outbox.ack_mode(), redelivered);
            // A String: handed to the socket without a UTF-8 check per recipient.
            let r = sink.feed(Message::Text(Utf8Bytes::from(frame))).await;
            if r.is_ok() {
                metrics::get().delivered(publication.namespace, publication.accepted_at.elapsed());
                if let Some(t) = acks {
                    t.sent(&publication, &subscription_id, &channel);
                    if t.over_limit() {
                        metrics::delivery_failure("unacked_overflow");
                        outbox.overflow();
                    }
                }
            }
            r
        }
        Outbound::Text(s) => sink.feed(Message::Text(s.into())).await,
        Outbound::Ping => sink.feed(Message::Ping(Default::default())).await,
        Outbound::Close { .. } => Ok(()),
    };
    outbox.written(len);
    result
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
}
