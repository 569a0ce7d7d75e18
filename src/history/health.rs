//! Whether the store takes writes. The committer marks it down on a failed transaction; the
//! probe task marks it up again. While it is down, appends are refused at once instead of
//! each waiting for a timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics;
use super::store::Store;

/// How often the store is probed while it is down.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The availability flag, shared by the handle, the committer and the probe.
pub(crate) struct Health {
    /// Read on every append, so an atomic rather than the mutex.
    up: AtomicBool,
    /// Why the store went down, repeated to the appenders refused meanwhile.
    reason: Mutex<String>,
    /// Wakes the probe on a transition to down.
    down: Notify,
}

// === Health ===

impl Health {
    pub(crate) fn new() -> Arc<Health> {
        metrics::available(true);
        Arc::new(Health {
            up: AtomicBool::new(true),
            reason: Mutex::new(String::new()),
            down: Notify::new(),
        })
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> String {
        self.reason.lock().clone()
    }

    /// Marks the store down; logs only on the transition, so an outage is one warning.
    pub(crate) fn mark_down(&self, reason: &str) {
        *self.reason.lock() = reason.to_owned();
        if self.up.swap(false, Ordering::AcqRel) {
            warn!(error = %reason, "History store unavailable; refusing appends until it answers.");
            metrics::available(false);
            self.down.notify_one();
        }
    }

    /// Marks the store up; logs only on the transition.
    pub(crate) fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            info!("History store available again; accepting appends.");
            metrics::available(true);
        }
    }
}

/// Probes the store every second while it is down, until `shutdown`.
/// `sqlite_min_free_bytes`: free space a SQLite store's filesystem needs to count as writable.
pub(crate) async fn run_probe(
    store: Store,
    health: Arc<Health>,
    sqlite_min_free_bytes: u64,
    shutdown: CancellationToken,
) {
    loop {
        if health.is_up() {
            tokio::select! {
                _ = health.down.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            // notify_one stores a permit, so a stale one may wake us while up: check again.
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        match tokio::time::timeout(PROBE_INTERVAL, store.probe(sqlite_min_free_bytes)).await {
            Ok(Ok(())) => health.mark_up(),
            Ok(Err(reason)) => *health.reason.lock() = reason,
            Err(_) => {
                *health.reason.lock() = "the store did not answer a probe within 1s".to_owned()
            }
        }
    }
}
