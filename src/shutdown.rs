//! Graceful shutdown: the drain signal every session waits on, and readiness.
//!
//! On SIGTERM/SIGINT the node starts draining: `/readyz` turns false, new upgrades are
//! refused with 503, and each session, after a random delay within the drain window, tells
//! its client `down` for its chains and closes with 1012. Spreading the closes keeps the
//! clients from reconnecting in one wave. The process exits once every session has ended
//! or the window (plus a short grace) has passed; a second signal during the drain ends the
//! process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap-to-clone shutdown state shared by the node, the server and every session.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    drain: CancellationToken,
    stop: CancellationToken,
    not_ready: AtomicBool,
    sessions: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining (idempotent).
    pub fn start_drain(&self) {
        self.inner.not_ready.store(true, Ordering::Release);
        self.inner.drain.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.inner.drain.is_cancelled()
    }

    /// Resolves when draining starts.
    pub async fn draining(&self) {
        self.inner.drain.cancelled().await
    }

    /// Background loops stop when this is cancelled (after the drain).
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Tracks session tasks so shutdown can wait for them.
    pub fn sessions(&self) -> &TaskTracker {
        &self.inner.sessions
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened to from creation on: a signal that arrives while
/// nobody awaits [`Signals::recv`] is kept for the next call, so a second signal during a
/// drain is never lost.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; from then on these signals no longer end the process by
    /// themselves.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C); never, if the handlers cannot be installed.
pub async fn signal() {
    match Signals::new() {
        Ok(mut signals) => signals.recv().await,
        Err(_) => std::future::pending::<()>().await,
    }
}
