//! The outbox's state, its transitions, and the future that waits for it to leave `Open`.
//!
//! ```text
//! Open ──finish()──▶ Finishing
//!   │                   │
//!   └──overflow()──▶ Overflowed ◀──overflow()──┘
//! ```
//!
//! The state only moves forward. Any state but `Open` refuses pushes and resolves
//! [`Finishing`]; `Overflowed` also tells the writer to close with 1013 (a slow consumer),
//! which is why a finishing connection found too slow still becomes `Overflowed`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{Inner, Outbox};

/// Where an outbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Pushes are queued.
    Open = 0,
    /// The connection is ending (the session stopped, or the writer failed): pushes are
    /// refused, and the writer stops.
    Finishing = 1,
    /// The client is not keeping up (the byte bound, the unacknowledged count, or a resume's
    /// held publications ran over): pushes are refused, and the writer closes with 1013.
    Overflowed = 2,
}

/// The task waiting in [`Outbox::finishing`]: each has its own waker slot, so exactly one task
/// of each kind may wait at a time.
#[derive(Debug, Clone, Copy)]
pub enum Waiter {
    Writer = 0,
    Session = 1,
}

/// Resolves when the outbox has left [`State::Open`], and again on every later poll.
#[derive(Debug)]
pub struct Finishing<'a> {
    inner: &'a Inner,
    who: Waiter,
}

// === Outbox ===

impl Outbox {
    /// The current state.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// `Open` → `Finishing`: the connection is ending. No-op in any other state.
    pub fn finish(&self) {
        self.inner.finish();
    }

    /// `Open` or `Finishing` → `Overflowed`: the client is a slow consumer.
    pub fn overflow(&self) {
        self.inner.overflow();
    }

    /// Resolves when the outbox leaves `Open`.
    ///
    /// The future may be polled again after it resolved (it resolves again), so a writer can
    /// create it once and select on it for every frame instead of registering anew each time:
    /// an atomic load and a waker registration per poll, no lock.
    pub fn finishing(&self, who: Waiter) -> Finishing<'_> {
        Finishing {
            inner: &self.inner,
            who,
        }
    }
}

// === Inner ===

impl Inner {
    pub(super) fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Open,
            1 => State::Finishing,
            _ => State::Overflowed,
        }
    }

    pub(super) fn finish(&self) {
        let moved = self.state.compare_exchange(
            State::Open as u8,
            State::Finishing as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if moved.is_ok() {
            self.wake_finishing();
        }
    }

    pub(super) fn overflow(&self) {
        let before = self.state.swap(State::Overflowed as u8, Ordering::AcqRel);
        if before != State::Overflowed as u8 {
            self.wake_finishing();
        }
    }

    fn wake_finishing(&self) {
        for w in &self.finishing_wakers {
            w.wake();
        }
    }
}

// === Finishing ===

impl Future for Finishing<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = self.inner;
        if inner.state() != State::Open {
            return Poll::Ready(());
        }
        inner.finishing_wakers[self.who as usize].register(cx.waker());
        // Re-check after registering, so a transition in between is not missed.
        if inner.state() != State::Open {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_only_moves_forward() {
        let (outbox, _rx) = Outbox::new(1 << 20, false);
        assert_eq!(outbox.state(), State::Open);
        outbox.finish();
        assert_eq!(outbox.state(), State::Finishing);
        outbox.overflow();
        assert_eq!(outbox.state(), State::Overflowed);
        outbox.finish();
        assert_eq!(outbox.state(), State::Overflowed);
    }

    #[tokio::test]
    async fn finishing_wakes_the_writer_and_the_session_and_stays_resolved() {
        let (outbox, _rx) = Outbox::new(1 << 20, false);
        let waiters: Vec<_> = [Waiter::Writer, Waiter::Session]
            .into_iter()
            .map(|who| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    let finishing = outbox.finishing(who);
                    tokio::pin!(finishing);
                    (&mut finishing).await;
                    // Polled again after it resolved: resolves again at once.
                    (&mut finishing).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        outbox.finish();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("woken by finish")
                .unwrap();
        }
        // A future made afterwards resolves at once.
        outbox.finishing(Waiter::Session).await;
    }
}
