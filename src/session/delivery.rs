//! Acknowledged delivery for one ack-mode connection: which pushes await an ack, when each
//! is due for a re-send, and when the connection has to give up.
//!
//! The writer records every durable push it writes; the session loop applies acks and
//! fires the re-send timer (`next_check`). A push is re-sent up to `max_retries` times,
//! `ack_timeout` after each send; after that the connection is closed with 4010 and the
//! client resumes from its last acknowledged position. At most `max_unacked` pushes may await
//! an ack: beyond that the client is not keeping up and is treated as a slow consumer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Outbound;
use crate::hub::Publication;
use crate::metrics;

/// Shared between the writer (records sends) and the session loop (acks, timers).
#[derive(Clone)]
pub struct AckTracker {
    inner: Arc<Mutex<Pending>>,
    ack_timeout: Duration,
    max_retries: u32,
    max_unacked: usize,
}

struct Pending {
    by_id: HashMap<Arc<str>, Entry>,
}

impl Drop for Pending {
    /// The connection is gone: what it still awaited no longer counts as outstanding.
    fn drop(&mut self) {
        if !self.by_id.is_empty() {
            metrics::acks_outstanding(-(self.by_id.len() as f64));
        }
    }
}

struct Entry {
    publication: Arc<Publication>,
    /// (subscription id, channel) pairs the publication was delivered on.
    targets: Vec<(Arc<str>, Arc<str>)>,
    resends: u32,
    due: Instant,
}

/// What the session must do when the timer fires.
pub enum Expired {
    /// Queue these re-sends.
    Resend(Vec<Outbound>),
    /// Retries are exhausted: close with 4010.
    GiveUp,
}

impl AckTracker {
    pub fn new(ack_timeout: Duration, max_retries: u32, max_unacked: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Pending {
                by_id: HashMap::new(),
            })),
            ack_timeout,
            max_retries,
            max_unacked,
        }
    }

    /// A push was written. The ack deadline is (re-)armed from now.
    pub fn sent(
        &self,
        publication: &Arc<Publication>,
        subscription_id: &Arc<str>,
        channel: &Arc<str>,
    ) {
        let Some(durable) = &publication.durable else {
            return;
        };
        let due = Instant::now() + self.ack_timeout;
        let mut pending = self.inner.lock();
        let mut added = false;
        let entry = pending
            .by_id
            .entry(durable.message_id.clone())
            .or_insert_with(|| {
                added = true;
                Entry {
                    publication: publication.clone(),
                    targets: Vec::new(),
                    resends: 0,
                    due,
                }
            });
        if added {
            metrics::acks_outstanding(1.0);
        }
        entry.due = due;
        if !entry
            .targets
            .iter()
            .any(|(s, c)| s == subscription_id && c == channel)
        {
            entry
                .targets
                .push((subscription_id.clone(), channel.clone()));
        }
    }

    /// Applies acks; unknown, late and duplicate ids are ignored. Returns how many matched.
    pub fn ack<'a>(&self, ids: impl Iterator<Item = &'a str>) -> usize {
        let mut pending = self.inner.lock();
        let n = ids.filter(|id| pending.by_id.remove(*id).is_some()).count();
        if n > 0 {
            metrics::acks_outstanding(-(n as f64));
        }
        n
    }

    /// Pushes awaiting an ack.
    pub fn unacked(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// True when more pushes await an ack than allowed.
    pub fn over_limit(&self) -> bool {
        self.unacked() > self.max_unacked
    }

    /// When the session's timer must fire next at the latest: the earliest ack deadline, or,
    /// with nothing awaiting an ack, one `ack_timeout` from now. A push sent from now on is due
    /// no earlier than that, so the writer never has to wake the session to arm the timer
    /// (it did, once per push: one more turn of the session loop for every message).
    pub fn next_check(&self, now: Instant) -> Instant {
        let earliest = self.inner.lock().by_id.values().map(|e| e.due).min();
        earliest.unwrap_or(now + self.ack_timeout)
    }

    /// Handles every deadline that has passed at `now`, oldest offsets first.
    pub fn expire(&self, now: Instant) -> Expired {
        let mut pending = self.inner.lock();
        let mut due: Vec<&mut Entry> = pending
            .by_id
            .values_mut()
            .filter(|e| e.due <= now)
            .collect();
        if due.iter().any(|e| e.resends >= self.max_retries) {
            return Expired::GiveUp;
        }
        due.sort_by_key(|e| e.publication.durable.as_ref().map(|d| d.position.offset));
        let mut out = Vec::new();
        for e in due {
            e.resends += 1;
            e.due = now + self.ack_timeout;
            for (sub, channel) in &e.targets {
                out.push(Outbound::Push {
                    publication: e.publication.clone(),
                    subscription_id: sub.clone(),
                    channel: channel.clone(),
                    redelivered: true,
                });
            }
        }
        Expired::Resend(out)
    }
}
