//! Acknowledged delivery for one ack-mode connection: which pushes await an ack, when each
//! is due for a re-send, and when the connection has to give up.
//!
//! The writer records every durable push it writes; the session loop applies acks and
//! fires the re-send timer (`next_check`). A push is re-sent up to `max_retries` times,
//! `ack_timeout` after each send; after that the connection is closed with 4010 and the
//! client resumes from its last acknowledged position. At most `max_unacked` pushes may await
//! an ack: beyond that the client is not keeping up and is treated as a slow consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Outbound;
use crate::hub::Publication;
use crate::metrics;

/// Shared between the writer (records sends) and the session loop (acks, timers).
#[derive(Clone)]
pub struct AckTracker {
    inner: Arc<Mutex<Unacked>>,
    ack_timeout: Duration,
    max_retries: u32,
    max_unacked: usize,
}

struct Unacked {
    by_id: HashMap<Arc<str>, Entry>,
    /// (due, message id) in due order: every deadline is `ack_timeout` after the moment it was
    /// set, so appending keeps the order. An item whose entry was acked or re-armed since is
    /// stale and skipped when it reaches the front; the queue is compacted when stale items
    /// outnumber live ones, so it stays within twice the pushes awaiting an ack.
    deadlines: VecDeque<(Instant, Arc<str>)>,
}

impl Drop for Unacked {
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
            inner: Arc::new(Mutex::new(Unacked {
                by_id: HashMap::new(),
                deadlines: VecDeque::new(),
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
        let mut unacked = self.inner.lock();
        let mut added = false;
        let entry = unacked
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
        unacked.push_deadline(due, durable.message_id.clone());
    }

    /// Applies acks; unknown, late and duplicate ids are ignored. Returns how many matched.
    pub fn ack<'a>(&self, ids: impl Iterator<Item = &'a str>) -> usize {
        let mut unacked = self.inner.lock();
        let n = ids.filter(|id| unacked.by_id.remove(*id).is_some()).count();
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
    /// no earlier than that, so the writer never has to wake the session to arm the timer.
    /// Constant time, apart from dropping stale deadlines (each once).
    pub fn next_check(&self, now: Instant) -> Instant {
        let mut unacked = self.inner.lock();
        unacked.drop_stale();
        match unacked.deadlines.front() {
            Some((due, _)) => *due,
            None => now + self.ack_timeout,
        }
    }

    /// Handles every deadline that has passed at `now`, oldest offsets first. The work is the
    /// deadlines that passed, not the pushes awaiting an ack.
    pub fn expire(&self, now: Instant) -> Expired {
        let mut guard = self.inner.lock();
        let unacked = &mut *guard;
        let mut due_ids: Vec<Arc<str>> = Vec::new();
        while let Some((due, id)) = unacked.deadlines.front() {
            if *due > now {
                break;
            }
            if unacked.by_id.get(id).is_some_and(|e| e.due == *due) {
                due_ids.push(id.clone());
            }
            unacked.deadlines.pop_front();
        }
        if due_ids.iter().any(|id| {
            unacked
                .by_id
                .get(id)
                .is_some_and(|e| e.resends >= self.max_retries)
        }) {
            // Keep them due, so the answer stays the same until the connection closes.
            for id in due_ids.into_iter().rev() {
                if let Some(e) = unacked.by_id.get(&id) {
                    unacked.deadlines.push_front((e.due, id));
                }
            }
            return Expired::GiveUp;
        }
        // Each due id once (a deadline is live only while it equals its entry's), by offset.
        let mut seen = std::collections::HashSet::new();
        let mut entries: Vec<(Arc<str>, u64)> = Vec::with_capacity(due_ids.len());
        for id in due_ids {
            if seen.insert(id.clone()) {
                let offset = unacked
                    .by_id
                    .get(&id)
                    .and_then(|e| e.publication.durable.as_ref())
                    .map_or(0, |d| d.position.offset);
                entries.push((id, offset));
            }
        }
        entries.sort_by_key(|(_, offset)| *offset);
        let next_due = now + self.ack_timeout;
        let mut out = Vec::new();
        for (id, _) in entries {
            let Some(e) = unacked.by_id.get_mut(&id) else {
                continue;
            };
            e.resends += 1;
            e.due = next_due;
            for (sub, channel) in &e.targets {
                out.push(Outbound::Push {
                    publication: e.publication.clone(),
                    subscription_id: sub.clone(),
                    channel: channel.clone(),
                    redelivered: true,
                });
            }
            unacked.deadlines.push_back((next_due, id));
        }
        unacked.compact();
        Expired::Resend(out)
    }
}

// === Unacked ===

impl Unacked {
    fn push_deadline(&mut self, due: Instant, id: Arc<str>) {
        self.deadlines.push_back((due, id));
        self.compact();
    }

    /// Drops stale deadlines from the front.
    fn drop_stale(&mut self) {
        while let Some((due, id)) = self.deadlines.front() {
            if self.by_id.get(id).is_some_and(|e| e.due == *due) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    /// Removes stale deadlines when they outnumber the live ones (amortised constant time).
    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.deadlines
                .retain(|(due, id)| by_id.get(id).is_some_and(|e| e.due == *due));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::stored_at as publication;

    fn resent_offsets(e: Expired) -> Vec<u64> {
        match e {
            Expired::GiveUp => panic!("gave up"),
            Expired::Resend(items) => items
                .iter()
                .map(|i| match i {
                    Outbound::Push { publication, .. } => {
                        publication.durable.as_ref().unwrap().position.offset
                    }
                    _ => panic!("not a push"),
                })
                .collect(),
        }
    }

    #[test]
    fn due_pushes_are_resent_by_offset_then_given_up() {
        let timeout = Duration::from_millis(50);
        let t = AckTracker::new(timeout, 1, 100);
        let (sub, ch): (Arc<str>, Arc<str>) = ("s".into(), "c".into());
        for offset in [3, 1, 2] {
            t.sent(&publication(offset), &sub, &ch);
        }
        assert_eq!(t.ack(["e-2", "unknown"].into_iter()), 1);
        let now = Instant::now();
        assert!(t.next_check(now) <= now + timeout);
        assert!(resent_offsets(t.expire(now)).is_empty(), "nothing due yet");
        let later = now + timeout * 2;
        assert_eq!(resent_offsets(t.expire(later)), [1, 3]);
        assert!(t.next_check(later) > later);
        assert!(matches!(t.expire(later + timeout * 2), Expired::GiveUp));
    }

    #[test]
    fn the_timer_does_not_scan_the_pushes_awaiting_an_ack() {
        let t = AckTracker::new(Duration::from_secs(3600), 3, 1 << 20);
        let (sub, ch): (Arc<str>, Arc<str>) = ("s".into(), "c".into());
        for offset in 1..=50_000 {
            t.sent(&publication(offset), &sub, &ch);
        }
        let started = Instant::now();
        for _ in 0..10_000 {
            let now = Instant::now();
            t.next_check(now);
            assert!(resent_offsets(t.expire(now)).is_empty());
        }
        // Scanning 50,000 entries twice per turn takes seconds for 10,000 turns.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        // Acked pushes leave no deadline behind for long.
        let ids: Vec<String> = (1..=50_000).map(|o| format!("e-{o}")).collect();
        assert_eq!(t.ack(ids.iter().map(String::as_str)), 50_000);
        t.sent(&publication(50_001), &sub, &ch);
        assert!(t.inner.lock().deadlines.len() <= 66);
    }
}
