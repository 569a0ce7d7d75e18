//! Group commit: one task drains the queued appends into batches, commits each batch in one
//! transaction and tells the listener before answering the appenders. Being the only writer
//! of this node, it also defines the node's commit order, which is the fan-out order. On
//! SQLite it also runs the retention deletes and WAL rewinds, between batches, so that the
//! database never has a second writer for the committer to wait on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::error::Elapsed;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::metrics;
use super::store::{CommitError, Maintenance, Store, Writer};
use super::{CommitListener, Committed, HistoryError, NewPublication};

/// Longest a batch may take (connection included) before it is abandoned and the store
/// counted as unavailable; keeps `append` under its 2s bound.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Most times the committer gives way to appenders while it fills one batch.
const MAX_YIELDS: usize = 4;

/// One `append` call waiting for its batch.
pub(crate) struct Request {
    /// The publications, committed together in one batch (an append is never split).
    pub pubs: Vec<NewPublication>,
    /// Where the outcome goes: one `Committed` per publication, in input order.
    pub reply: oneshot::Sender<Result<Vec<Committed>, HistoryError>>,
    /// Settles who decides the request's fate: the committer taking it into a batch, or the
    /// appender giving up on it. Whoever sets it first wins (`Claim`).
    pub claim: Arc<Claim>,
}

/// The hand-off between an appender that may time out and the committer. Without it, an
/// appender could give up (and its publisher hear "nothing was published") while the
/// committer was already committing its publications, which were then delivered: a publisher
/// retrying without an idempotency key would publish them twice.
#[derive(Default)]
pub(crate) struct Claim(AtomicBool);

impl Claim {
    /// The committer takes the request: false if the appender gave up on it first.
    fn take(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// The appender gives up: false if the committer took the request first, in which case its
    /// answer is coming (within `COMMIT_TIMEOUT`) and must be awaited.
    pub(crate) fn abandon(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}

/// What the committer's queue carries.
pub(crate) enum Job {
    /// Publications to commit in the next batch.
    Append(Request),
    /// Runs alone, between two batches.
    Maintain(MaintenanceRequest),
}

/// Maintenance waiting for its turn.
pub(crate) struct MaintenanceRequest {
    /// What to run.
    pub work: Maintenance,
    /// Where the rows deleted (or the failure) go.
    pub reply: oneshot::Sender<Result<u64, HistoryError>>,
}

/// Runs `work` in the committer, between two batches; returns the rows it deleted. Fails with
/// [`HistoryError::Closed`] once the committer has stopped.
pub(crate) async fn maintain(
    queue: &mpsc::Sender<Job>,
    work: Maintenance,
) -> Result<u64, HistoryError> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Job::Maintain(MaintenanceRequest { work, reply }))
        .await
        .map_err(|_| HistoryError::Closed)?;
    answer.await.map_err(|_| HistoryError::Closed)?
}

/// The committer task's state.
pub(crate) struct Committer {
    /// Where new writer connections come from.
    pub store: Store,
    /// Told about each batch's new publications before their appenders are answered.
    pub listener: Arc<dyn CommitListener>,
    /// Marked down when a batch fails in the store; while down, batches are refused.
    pub health: Arc<Health>,
    /// The queue of appends and maintenance, in arrival order.
    pub rx: mpsc::Receiver<Job>,
    /// Most publications in one batch (`history.max_batch`).
    pub max_batch: usize,
    /// On cancel the queue is closed and what is already in it is still committed.
    pub shutdown: CancellationToken,
    /// Kept between batches; dropped after any error, since its state is then unknown.
    pub writer: Option<Writer>,
}

// === Committer ===

impl Committer {
    /// Runs until shutdown (after flushing the queue) or until every handle is gone.
    pub(crate) async fn run(mut self) {
        let mut closing = false;
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(r) => r,
                None => {
                    let next = if closing {
                        self.rx.recv().await
                    } else {
                        tokio::select! {
                            r = self.rx.recv() => r,
                            _ = self.shutdown.cancelled() => {
                                closing = true;
                                self.rx.close();
                                continue;
                            }
                        }
                    };
                    match next {
                        Some(r) => r,
                        None => break,
                    }
                }
            };
            let first = match job {
                Job::Append(r) => r,
                Job::Maintain(m) => {
                    self.maintain(m).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            let mut size = batch[0].pubs.len();
            // Drain what is queued; then give way once so that appenders already woken (by
            // the answers of the previous batch, typically) can enqueue, and drain again,
            // for as long as that brings more. Without it, batches alternate between
            // nearly everyone and the one appender that came late.
            let mut rounds = 0;
            loop {
                let before = size;
                held = self.drain(&mut batch, &mut size);
                if held.is_some() || size >= self.max_batch || rounds == MAX_YIELDS {
                    break;
                }
                if rounds > 0 && size == before {
                    break;
                }
                rounds += 1;
                tokio::task::yield_now().await;
            }
            self.commit(batch).await;
        }
        if let Some(w) = self.writer.take() {
            drop(w);
        }
    }

    /// Moves queued appends into `batch` until it is full; returns the job that ends it: an
    /// append that did not fit (it opens the next batch: an append is never split) or
    /// maintenance (it runs after this batch, before the appends queued behind it).
    fn drain(&mut self, batch: &mut Vec<Request>, size: &mut usize) -> Option<Job> {
        while *size < self.max_batch {
            match self.rx.try_recv() {
                Ok(Job::Append(r)) if *size + r.pubs.len() > self.max_batch => {
                    return Some(Job::Append(r))
                }
                Ok(Job::Append(r)) => {
                    *size += r.pubs.len();
                    batch.push(r);
                }
                Ok(m @ Job::Maintain(_)) => return Some(m),
                Err(_) => break,
            }
        }
        None
    }

    /// Runs one piece of maintenance on the committer's connection, with the batches' time
    /// limit. A failure is the maintenance's (its requester retries later), not the store's.
    async fn maintain(&mut self, m: MaintenanceRequest) {
        if m.reply.is_closed() {
            return;
        }
        let outcome = self
            .on_writer(async |w: &mut Writer| w.maintain(&m.work).await, |_| true)
            .await;
        let outcome = match outcome {
            Ok(done) => done
                .map_err(|e| HistoryError::Unavailable(format!("{} failed: {e}", m.work.what()))),
            Err(_) => Err(HistoryError::Unavailable(format!(
                "{} took longer than {COMMIT_TIMEOUT:?}",
                m.work.what()
            ))),
        };
        let _ = m.reply.send(outcome);
    }

    /// Commits one batch and answers its appenders; never fails (errors go to them).
    async fn commit(&mut self, mut batch: Vec<Request>) {
        // An appender that gave up (timed out, or its caller went away) is not committed
        // behind its back; every other one is now committed or failed, and told which.
        batch.retain(|r| !r.reply.is_closed() && r.claim.take());
        if batch.is_empty() {
            return;
        }
        if !self.health.is_up() {
            let err = HistoryError::Unavailable(self.health.reason());
            for r in batch {
                let _ = r.reply.send(Err(err.clone()));
            }
            return;
        }

        let mut lens = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut pubs = Vec::with_capacity(batch.iter().map(|r| r.pubs.len()).sum());
        for r in batch {
            lens.push(r.pubs.len());
            replies.push(r.reply);
            pubs.extend(r.pubs);
        }

        let started = Instant::now();
        let outcome = self
            .on_writer(
                async |w: &mut Writer| w.commit(&pubs).await,
                |e| matches!(e, CommitError::Store(_)),
            )
            .await;

        let results = match outcome {
            Ok(Ok(results)) => results,
            Ok(Err(CommitError::Rejected(e))) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            Ok(Err(CommitError::Store(e))) => {
                self.fail(replies, &e.to_string());
                return;
            }
            Err(_) => {
                // The abandoned writer was closed (`on_writer`); its transaction rolls back.
                self.fail(
                    replies,
                    &format!("a transaction took longer than {COMMIT_TIMEOUT:?}"),
                );
                return;
            }
        };

        // The listener hears of new publications only; a batch without duplicates (the usual
        // case) is handed over as it is, without copying its rows.
        let duplicates = results.iter().filter(|c| c.duplicate).count();
        metrics::batch_committed(results.len(), results.len() - duplicates, started.elapsed());
        if duplicates == 0 {
            self.listener.committed(&results);
        } else if duplicates < results.len() {
            let fresh: Vec<Committed> = results.iter().filter(|c| !c.duplicate).cloned().collect();
            self.listener.committed(&fresh);
        }

        let mut rest = results.into_iter();
        for (reply, n) in replies.into_iter().zip(lens) {
            let _ = reply.send(Ok(rest.by_ref().take(n).collect()));
        }
    }

    /// Runs `work` on the committer's connection (the kept one, or a new one from the pool)
    /// within `COMMIT_TIMEOUT`, connection included. A connection whose work failed in the
    /// store (`store_failed`), or was abandoned half-way, may still be inside its transaction:
    /// it is closed (which rolls the transaction back), never kept or returned to the pool.
    async fn on_writer<T, E: From<sqlx::Error>>(
        &mut self,
        work: impl AsyncFnOnce(&mut Writer) -> Result<T, E>,
        store_failed: impl Fn(&E) -> bool,
    ) -> Result<Result<T, E>, Elapsed> {
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        let mut writer = match self.writer.take() {
            Some(w) => w,
            None => match tokio::time::timeout_at(deadline, self.store.writer()).await? {
                Ok(w) => w,
                Err(e) => return Ok(Err(e.into())),
            },
        };
        let res = tokio::time::timeout_at(deadline, work(&mut writer)).await;
        match &res {
            Ok(Err(e)) if store_failed(e) => writer.discard(),
            Ok(_) => self.writer = Some(writer),
            Err(_) => writer.discard(),
        }
        res
    }

    fn fail(
        &self,
        replies: Vec<oneshot::Sender<Result<Vec<Committed>, HistoryError>>>,
        reason: &str,
    ) {
        self.health.mark_down(reason);
        let err = HistoryError::Unavailable(reason.to_owned());
        for reply in replies {
            let _ = reply.send(Err(err.clone()));
        }
    }
}
