//! The outbound queue of one connection, bounded in bytes.
//!
//! Publishers and the fan-out never wait on a client: `push` is synchronous and never blocks.
//! When a client stops reading, its queued bytes grow until `max_bytes`; the next push marks
//! the connection overflowed and cancels it, and the writer closes it with 1013. So one slow
//! client costs at most `max_bytes` of memory and never slows anyone else down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::Publication;

/// One item for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// A publication for one subscription; the frame is built by the writer.
    Push {
        publication: Arc<Publication>,
        subscription_id: Arc<str>,
        channel: Arc<str>,
        redelivered: bool,
    },
    /// A reply, an error or a system notification (already serialised).
    Text(String),
    /// A WebSocket ping.
    Ping,
    /// Close the connection with this code and reason, after what is already queued.
    Close { code: u16, reason: &'static str },
}

/// A cheap-to-clone handle that enqueues frames for one connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::UnboundedSender<Outbound>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    ack_mode: bool,
    /// Cancelled when the connection is finishing, for whatever reason.
    closing: CancellationToken,
}

// === Outbound ===

impl Outbound {
    /// Bytes this item will occupy on the wire (what the bound counts).
    pub fn len(&self, ack_mode: bool) -> usize {
        match self {
            Outbound::Push {
                publication,
                subscription_id,
                channel,
                ..
            } => publication.frame_len(subscription_id, channel, ack_mode),
            Outbound::Text(s) => s.len(),
            Outbound::Ping | Outbound::Close { .. } => 16,
        }
    }
}

// === Outbox ===

impl Outbox {
    pub fn new(max_bytes: usize, ack_mode: bool) -> (Outbox, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            overflowed: AtomicBool::new(false),
            ack_mode,
            closing: CancellationToken::new(),
        };
        (
            Outbox {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// Enqueues an item. Returns false (and marks the connection overflowed) when the queue
    /// is over its byte bound, or false when the connection is already finishing.
    pub fn push(&self, item: Outbound) -> bool {
        let inner = &*self.inner;
        if inner.closing.is_cancelled() {
            return false;
        }
        let len = item.len(inner.ack_mode);
        let before = inner.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > inner.max_bytes {
            inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            if !inner.overflowed.swap(true, Ordering::AcqRel) {
                inner.closing.cancel();
            }
            return false;
        }
        if inner.tx.send(item).is_err() {
            inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Marks the connection a slow consumer (e.g. too many unacknowledged pushes).
    pub fn overflow(&self) {
        if !self.inner.overflowed.swap(true, Ordering::AcqRel) {
            self.inner.closing.cancel();
        }
    }

    /// Asks the writer to close the connection after what is queued (not subject to the bound).
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.inner.tx.send(Outbound::Close { code, reason });
    }

    /// Called by the writer once an item has been written.
    pub fn written(&self, len: usize) {
        self.inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    pub fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes.load(Ordering::Acquire)
    }

    pub fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Acquire)
    }

    pub fn ack_mode(&self) -> bool {
        self.inner.ack_mode
    }

    /// Marks the connection as finishing; pushes are refused from now on.
    pub fn cancel(&self) {
        self.inner.closing.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.inner.closing.is_cancelled()
    }

    /// Resolves when the connection is finishing.
    pub async fn closing(&self) {
        self.inner.closing.cancelled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_refuses_and_cancels_once() {
        let (outbox, mut rx) = Outbox::new(20, false);
        assert!(outbox.push(Outbound::Text("0123456789".into())));
        assert!(outbox.push(Outbound::Text("0123456789".into())));
        assert!(!outbox.overflowed());
        assert!(!outbox.push(Outbound::Text("x".into())));
        assert!(outbox.overflowed() && outbox.is_closing());
        assert_eq!(outbox.queued_bytes(), 20);
        assert!(matches!(rx.try_recv(), Ok(Outbound::Text(_))));
        outbox.written(10);
        assert_eq!(outbox.queued_bytes(), 10);
        // Finishing connections take nothing more, even with room.
        assert!(!outbox.push(Outbound::Text("y".into())));
    }
}
