//! Graceful shutdown: the drain signal every session waits on, and readiness.
//!
//! On SIGTERM/SIGINT the node starts draining: `/readyz` turns false, new upgrades are
//! refused with 503, and each session, after a random delay within the drain window, tells
//! its client `down` for its chains and closes with 1012. Spreading the closes keeps the
//! clients from reconnecting in one wave. The process exits once every session has ended
//! or the window (plus a short grace) has passed.

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

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
