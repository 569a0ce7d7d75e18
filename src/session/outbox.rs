//! The outbound queue of one connection, bounded in bytes.
//!
//! Publishers and the fan-out never wait on a client: `push` is synchronous and never blocks.
//! When a client stops reading, its queued bytes grow until `max_bytes`; the next push marks
//! the connection overflowed and cancels it, and the writer closes it with 1013. So one slow
//! client costs at most `max_bytes` of memory and never slows anyone else down.
//!
//! The queue is a `VecDeque` behind a mutex (held for a push or a pop, never across an
//! `.await`) with one waker for the writer, instead of a tokio unbounded channel: an idle
//! connection then costs a few dozen bytes instead of the channel's ~2 KB (its first block of
//! 32 slots and its cache-padded state are allocated up front). With 10,000 idle wallets that
//! is ~20 MB less (docs/benchmarks-log.md, S3).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

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
#[derive(Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// The writer's end of the queue. `recv` yields `None` once every `Outbox` handle is gone
/// and the queue is empty; once it is dropped, pushes are refused.
#[derive(Debug)]
pub struct Receiver {
    inner: Arc<Inner>,
}

/// `Receiver::try_recv` found nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    /// Every `Outbox` handle is gone and the queue is empty.
    Disconnected,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<VecDeque<Outbound>>,
    /// The writer waiting for an item (or for the last handle to go).
    waker: AtomicWaker,
    /// Live `Outbox` handles.
    senders: AtomicUsize,
    receiver_gone: AtomicBool,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    ack_mode: bool,
    /// Set when the connection is finishing, for whatever reason: pushes are refused.
    finishing: AtomicBool,
    /// The writer and the session task waiting for `finishing`, one slot each. An atomic
    /// load and a waker registration per poll, where a `CancellationToken` took a mutex (3.5 %
    /// of the gateway's CPU in S2, polled once per fed frame).
    closing_wakers: [AtomicWaker; 2],
}

/// The task waiting in [`Outbox::closing`]: each has its own waker slot, so exactly one task
/// of each kind may wait at a time.
#[derive(Debug, Clone, Copy)]
pub enum Waiter {
    Writer = 0,
    Session = 1,
}

/// Resolves once the connection is finishing, and again on every later poll.
#[derive(Debug)]
pub struct Closing<'a> {
    inner: &'a Inner,
    who: Waiter,
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
    pub fn new(max_bytes: usize, ack_mode: bool) -> (Outbox, Receiver) {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            senders: AtomicUsize::new(1),
            receiver_gone: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            overflowed: AtomicBool::new(false),
            ack_mode,
            finishing: AtomicBool::new(false),
            closing_wakers: [AtomicWaker::new(), AtomicWaker::new()],
        });
        (
            Outbox {
                inner: inner.clone(),
            },
            Receiver { inner },
        )
    }

    /// Enqueues an item. Returns false (and marks the connection overflowed) when the queue
    /// is over its byte bound, or false when the connection is already finishing.
    pub fn push(&self, item: Outbound) -> bool {
        let inner = &*self.inner;
        if inner.finishing.load(Ordering::Acquire) {
            return false;
        }
        let len = item.len(inner.ack_mode);
        let before = inner.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > inner.max_bytes {
            inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            if !inner.overflowed.swap(true, Ordering::AcqRel) {
                inner.finish();
            }
            return false;
        }
        if !inner.enqueue(item) {
            inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Marks the connection a slow consumer (e.g. too many unacknowledged pushes).
    pub fn overflow(&self) {
        if !self.inner.overflowed.swap(true, Ordering::AcqRel) {
            self.inner.finish();
        }
    }

    /// Asks the writer to close the connection after what is queued (not subject to the bound).
    pub fn close(&self, code: u16, reason: &'static str) {
        self.inner.enqueue(Outbound::Close { code, reason });
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
        self.inner.finish();
    }

    pub fn is_closing(&self) -> bool {
        self.inner.finishing.load(Ordering::Acquire)
    }

    /// Resolves when the connection is finishing.
    ///
    /// The future may be polled again after it resolved (it resolves again), so a writer can
    /// create it once and select on it for every frame instead of registering anew each time.
    pub fn closing(&self, who: Waiter) -> Closing<'_> {
        Closing {
            inner: &self.inner,
            who,
        }
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

// === Receiver ===

impl Receiver {
    /// The next item; `None` once every `Outbox` handle is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        match self.inner.dequeue() {
            Some(item) => Ok(item),
            None if self.inner.senders.load(Ordering::Acquire) == 0 => {
                // A push may have landed between the pop and the load.
                self.inner.dequeue().ok_or(TryRecvError::Disconnected)
            }
            None => Err(TryRecvError::Empty),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(item) = self.inner.dequeue() {
            return Poll::Ready(Some(item));
        }
        self.inner.waker.register(cx.waker());
        // Re-check after registering, so a push or a last drop in between is not missed.
        match self.try_recv() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.receiver_gone.store(true, Ordering::Release);
        // Frees what was queued (and the publications it holds) now, not with the last handle.
        let drained = std::mem::take(&mut *self.inner.queue.lock());
        drop(drained);
    }
}

// === Closing ===

impl Future for Closing<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = self.inner;
        if inner.finishing.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        inner.closing_wakers[self.who as usize].register(cx.waker());
        // Re-check after registering, so a `finish` in between is not missed.
        if inner.finishing.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

// === Inner ===

impl Inner {
    fn finish(&self) {
        self.finishing.store(true, Ordering::Release);
        for w in &self.closing_wakers {
            w.wake();
        }
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

    fn dequeue(&self) -> Option<Outbound> {
        let mut queue = self.queue.lock();
        let item = queue.pop_front();
        // A burst leaves a large buffer behind: give it back once the queue is empty, so an
        // idle connection stays small.
        if queue.is_empty() && queue.capacity() > SHRINK_ABOVE {
            queue.shrink_to(SHRINK_ABOVE);
        }
        item
    }
}

/// Queue capacity (items) kept once the queue is empty again.
const SHRINK_ABOVE: usize = 16;

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

    #[tokio::test]
    async fn closing_wakes_the_writer_and_the_session_and_stays_resolved() {
        let (outbox, _rx) = Outbox::new(1 << 20, false);
        let waiters: Vec<_> = [Waiter::Writer, Waiter::Session]
            .into_iter()
            .map(|who| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    let closing = outbox.closing(who);
                    tokio::pin!(closing);
                    (&mut closing).await;
                    // Polled again after it resolved: resolves again at once.
                    (&mut closing).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        outbox.cancel();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("woken by cancel")
                .unwrap();
        }
        // A future made after the fact resolves at once.
        outbox.closing(Waiter::Session).await;
    }

    #[tokio::test]
    async fn recv_wakes_on_push_and_ends_after_the_last_handle() {
        let (outbox, mut rx) = Outbox::new(1 << 20, false);
        let other = outbox.clone();
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(item) = rx.recv().await {
                assert!(matches!(item, Outbound::Ping));
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        for _ in 0..100 {
            assert!(outbox.push(Outbound::Ping));
        }
        drop(outbox);
        tokio::task::yield_now().await;
        assert!(other.push(Outbound::Ping));
        drop(other);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert_eq!(n.ok().and_then(Result::ok), Some(101));
    }

    #[test]
    fn pushes_fail_once_the_writer_is_gone_and_drained_items_are_freed() {
        let (outbox, mut rx) = Outbox::new(1 << 20, false);
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
        for _ in 0..1000 {
            assert!(outbox.push(Outbound::Text("x".repeat(10))));
        }
        while rx.try_recv().is_ok() {}
        assert!(outbox.inner.queue.lock().capacity() <= SHRINK_ABOVE);
        assert!(outbox.push(Outbound::Text("y".into())));
        drop(rx);
        assert!(outbox.inner.queue.lock().is_empty());
        let before = outbox.queued_bytes();
        assert!(!outbox.push(Outbound::Text("z".into())));
        assert_eq!(outbox.queued_bytes(), before);
    }

    #[test]
    fn try_recv_reports_disconnection_only_when_empty() {
        let (outbox, mut rx) = Outbox::new(1 << 20, false);
        outbox.close(1000, "bye");
        drop(outbox);
        assert!(matches!(
            rx.try_recv(),
            Ok(Outbound::Close { code: 1000, .. })
        ));
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Disconnected));
    }
}
