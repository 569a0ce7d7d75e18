//! The writer side of the handle: `append` checks a batch, hands it to the committer's queue
//! and waits for its commit. An append the committer has taken into a batch is answered with
//! that batch's outcome, never with a timeout: a timed-out append was not stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::committer::{Claim, Job, Request};
use super::{Committed, History, HistoryError, NewPublication, CALL_TIMEOUT};

impl History {
    /// Appends publications, all in one transaction with whatever else is queued, and
    /// returns their positions in input order. Publications whose idempotency key is already
    /// stored for their stream come back with the original position and `duplicate: true`.
    pub async fn append(&self, batch: Vec<NewPublication>) -> Result<Vec<Committed>, HistoryError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        validate(&batch)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HistoryError::Closed);
        }
        if !self.inner.health.is_up() {
            return Err(HistoryError::Unavailable(self.inner.health.reason()));
        }
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        let request = Request {
            pubs: batch,
            reply,
            claim: claim.clone(),
        };
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let unavailable =
            || HistoryError::Unavailable(format!("no commit within {CALL_TIMEOUT:?}"));
        match tokio::time::timeout_at(deadline, self.inner.tx.send(Job::Append(request))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(HistoryError::Closed),
            Err(_) => return Err(unavailable()),
        }
        // The committer answers every request it takes; a dropped sender means it stopped.
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(res) => res.map_err(|_| HistoryError::Closed)?,
            // Still queued: it never will be committed.
            Err(_) if claim.abandon() => Err(unavailable()),
            // Already in a batch being committed: its outcome is the answer.
            Err(_) => answer.await.map_err(|_| HistoryError::Closed)?,
        }
    }
}

/// Refuses what the store cannot hold, before it can fail a whole batch.
fn validate(batch: &[NewPublication]) -> Result<(), HistoryError> {
    for p in batch {
        let has_nul = p.stream.contains('\0')
            || p.channel.contains('\0')
            || p.payload.contains('\0')
            || p.idempotency_key
                .as_deref()
                .is_some_and(|k| k.contains('\0'));
        if has_nul {
            return Err(HistoryError::Invalid(format!(
                "a publication to stream {:?} contains a NUL character, which the store cannot hold",
                p.stream
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_refused_up_front() {
        let p = NewPublication {
            stream: "s".to_owned(),
            channel: "c".to_owned(),
            payload: "{\"a\":\"\0\"}".to_owned(),
            idempotency_key: None,
        };
        assert!(matches!(validate(&[p]), Err(HistoryError::Invalid(_))));
    }
}
