//! The writer's end of an outbox.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Inner, Outbound};

/// The writer's end of the queue. `recv` yields `None` when every `Outbox` handle is gone
/// and the queue is empty; when it is dropped, pushes are refused.
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

/// Queue capacity (items) kept when the queue is empty again.
const SHRINK_ABOVE: usize = 16;

impl Receiver {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The next item; `None` when every `Outbox` handle is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        match self.dequeue() {
            Some(item) => Ok(item),
            None if self.inner.senders.load(Ordering::Acquire) == 0 => {
                // A push may have landed between the pop and the load.
                self.dequeue().ok_or(TryRecvError::Disconnected)
            }
            None => Err(TryRecvError::Empty),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(item) = self.dequeue() {
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

    fn dequeue(&self) -> Option<Outbound> {
        let mut queue = self.inner.queue.lock();
        let item = queue.pop_front();
        // A burst leaves a large buffer behind: give it back when the queue is empty, so an
        // idle connection stays small.
        if queue.is_empty() && queue.capacity() > SHRINK_ABOVE {
            queue.shrink_to(SHRINK_ABOVE);
        }
        item
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

#[cfg(test)]
mod tests {
    use super::super::Outbox;
    use super::*;

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
    fn pushes_fail_when_the_writer_is_gone_and_drained_items_are_freed() {
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
        outbox.push_close(1000, "bye");
        drop(outbox);
        assert!(matches!(
            rx.try_recv(),
            Ok(Outbound::Close { code: 1000, .. })
        ));
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Disconnected));
    }
}
