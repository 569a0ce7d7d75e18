//! The outbound queue of one connection, bounded in bytes, and its state.
//!
//! Publishers and the fan-out never wait on a client: `push` is synchronous and never blocks.
//! When a client stops reading, its queued bytes grow until `max_bytes`; the push over the
//! bound moves the outbox to [`State::Overflowed`], and the writer closes the connection with
//! 1013. So one slow client costs at most `max_bytes` of memory and never slows anyone down.
//!
//! The queue is a `VecDeque` behind a mutex (held for a push or a pop, never across an
//! `.await`) with one waker for the writer, instead of a tokio unbounded channel: an idle
//! connection then costs a few dozen bytes instead of the channel's ~2 KB (its first block of
//! 32 slots and its cache-padded state are allocated up front). With 10,000 idle wallets that
//! is ~20 MB less (docs/benchmarks-log.md, S3).
//!
//! - `state`: the outbox's one state ([`State`]), its transitions and the [`Finishing`] future.
//! - `receiver`: the writer's end ([`Receiver`]).

mod receiver;
mod state;

pub use receiver::Receiver;
pub use state::{State, Waiter};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::hub::{Publication, Recipient};

/// One item for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// A publication for one subscription; the frame is built by the writer.
    Push {
        /// The shared publication.
        publication: Arc<Publication>,
        /// The subscription it is delivered to.
        subscription_id: Arc<str>,
        /// The channel the frame names.
        channel: Arc<str>,
        /// An ack-mode re-send of a push not acknowledged in time.
        redelivered: bool,
    },
    /// A reply, an error or a system notification (already serialised).
    Text(String),
    /// A WebSocket ping.
    Ping,
    /// Close the connection with this code and reason, after what is already queued.
    Close {
        /// The WebSocket close code (see `writer::close`).
        code: u16,
        /// The close frame's reason text.
        reason: &'static str,
    },
}

/// A cheap-to-clone handle that enqueues frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<VecDeque<Outbound>>,
    /// The writer waiting for an item (or for the last handle to go).
    waker: AtomicWaker,
    /// Live `Outbox` handles.
    senders: AtomicUsize,
    /// Set when the `Receiver` is dropped: pushes are refused.
    receiver_gone: AtomicBool,
    /// Bytes queued and not written yet; never above `max_bytes`.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    ack_mode: bool,
    /// A [`State`] as its `u8`; it only moves forward.
    state: AtomicU8,
    /// The writer and the session task waiting in [`Finishing`], one slot each.
    finishing_wakers: [AtomicWaker; 2],
    /// Live publications held by this connection's closed gates (see `session::gate`),
    /// all gates together; never above [`MAX_HELD`].
    held: AtomicUsize,
}

/// At most this many live publications are held by one connection's closed gates while its
/// replays run; one more means the client cannot keep up, and it is closed as a slow
/// consumer. Counted per connection, so resuming many channels at once holds no more.
pub const MAX_HELD: usize = 10_000;

// === Outbound ===

impl Outbound {
    /// A first delivery of `publication` to one subscription.
    pub fn push(
        publication: &Arc<Publication>,
        subscription_id: &Arc<str>,
        channel: &Arc<str>,
    ) -> Outbound {
        Outbound::Push {
            publication: publication.clone(),
            subscription_id: subscription_id.clone(),
            channel: channel.clone(),
            redelivered: false,
        }
    }

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
    pub fn new(max_bytes: usize, ack_mode: bool) -> (Outbox, Receiver) {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            senders: AtomicUsize::new(1),
            receiver_gone: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            ack_mode,
            state: AtomicU8::new(State::Open as u8),
            finishing_wakers: [AtomicWaker::new(), AtomicWaker::new()],
            held: AtomicUsize::new(0),
        });
        (
            Outbox {
                inner: inner.clone(),
            },
            Receiver::new(inner),
        )
    }

    /// This connection as the hub's recipient of its plain (ungated) subscriptions. Shares
    /// the queue; allocates nothing. It does not count as an `Outbox` handle.
    pub fn recipient(&self) -> Arc<dyn Recipient> {
        self.inner.clone()
    }

    /// Enqueues an item. Returns false when the outbox is not open, or when the item would
    /// take it over its byte bound (which moves it to [`State::Overflowed`]).
    pub fn push(&self, item: Outbound) -> bool {
        self.inner.push(item)
    }

    /// Asks the writer to close the connection with `code` after what is queued. Not subject
    /// to the bound nor to the state: the close frame is the last item a connection needs.
    pub fn push_close(&self, code: u16, reason: &'static str) {
        self.inner.enqueue(Outbound::Close { code, reason });
    }

    /// Called by the writer after it wrote an item of `len` bytes.
    pub fn written(&self, len: usize) {
        self.inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Counts one live publication held by a closed gate. Past [`MAX_HELD`] for the
    /// connection it is not counted, the outbox overflows, and false is returned.
    pub fn hold(&self) -> bool {
        if self.inner.held.fetch_add(1, Ordering::AcqRel) >= MAX_HELD {
            self.inner.held.fetch_sub(1, Ordering::AcqRel);
            self.inner.overflow();
            return false;
        }
        true
    }

    /// A gate opened or went away with `n` publications held.
    pub fn release_held(&self, n: usize) {
        self.inner.held.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes.load(Ordering::Acquire)
    }

    pub fn ack_mode(&self) -> bool {
        self.inner.ack_mode
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: a writer waiting on an empty queue must see the end.
            self.inner.waker.wake();
        }
    }
}

// === Inner ===

impl Recipient for Inner {
    fn deliver(
        &self,
        publication: &Arc<Publication>,
        subscription_id: &Arc<str>,
        channel: &Arc<str>,
    ) -> bool {
        self.push(Outbound::push(publication, subscription_id, channel))
    }
}

impl Inner {
    fn push(&self, item: Outbound) -> bool {
        if self.state() != State::Open {
            return false;
        }
        let len = item.len(self.ack_mode);
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.overflow();
            return false;
        }
        if !self.enqueue(item) {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Appends and wakes the writer; false when the writer is gone.
    fn enqueue(&self, item: Outbound) -> bool {
        {
            let mut queue = self.queue.lock();
            // Checked under the lock: the receiver's drop empties the queue under it too.
            if self.receiver_gone.load(Ordering::Acquire) {
                return false;
            }
            queue.push_back(item);
        }
        self.waker.wake();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_refuses_and_moves_to_overflowed() {
        let (outbox, mut rx) = Outbox::new(20, false);
        assert!(outbox.push(Outbound::Text("0123456789".into())));
        assert!(outbox.push(Outbound::Text("0123456789".into())));
        assert_eq!(outbox.state(), State::Open);
        assert!(!outbox.push(Outbound::Text("x".into())));
        assert_eq!(outbox.state(), State::Overflowed);
        assert_eq!(outbox.queued_bytes(), 20);
        assert!(matches!(rx.try_recv(), Ok(Outbound::Text(_))));
        outbox.written(10);
        assert_eq!(outbox.queued_bytes(), 10);
        // An outbox that is not open takes nothing more, even with room.
        assert!(!outbox.push(Outbound::Text("y".into())));
    }
}
