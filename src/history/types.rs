//! The vocabulary of the history: publications in and out, stream positions, recovery.

use std::sync::Arc;

pub use crate::protocol::Position;

/// A publication to append.
#[derive(Debug, Clone)]
pub struct NewPublication {
    /// Stream key, e.g. `account-activity.v1.eip155:0:0xd14b...` (lower-case).
    pub stream: String,
    /// Channel the publication is delivered on.
    pub channel: String,
    /// JSON text, stored and returned byte for byte.
    pub payload: String,
    /// The publisher's idempotency key: a retry with the same key is not appended again.
    pub idempotency_key: Option<String>,
}

/// The outcome of one appended publication.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Stream key.
    pub stream: String,
    /// Channel (of the original publication when `duplicate`).
    pub channel: String,
    /// JSON payload (of the original publication when `duplicate`).
    pub payload: Arc<str>,
    /// Position in the stream (the original one when `duplicate`).
    pub position: Position,
    /// Commit time, milliseconds since the Unix epoch.
    pub published_at_ms: i64,
    /// True when the idempotency key was already stored: nothing new was appended.
    pub duplicate: bool,
}

/// A publication read back from the history.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Channel the publication was made on.
    pub channel: String,
    /// JSON payload.
    pub payload: Arc<str>,
    /// Position in the stream.
    pub position: Position,
    /// Commit time, milliseconds since the Unix epoch.
    pub published_at_ms: i64,
}

/// The answer to a resume request.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// The publications after the position, ascending; `more` if the limit cut them.
    Recovered {
        /// Publications with offset > the requested one.
        publications: Vec<Stored>,
        /// True when more publications follow the last one returned.
        more: bool,
    },
    /// The gap cannot be filled; the subscriber goes live without replay.
    Failed(RecoveryFailure),
}

/// Why a position cannot be resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryFailure {
    /// Unknown stream or a different epoch: the history the position refers to is gone.
    EpochChanged,
    /// Publications right after the position were removed by retention.
    Trimmed,
    /// The position is past the stream's last offset.
    BeyondEnd,
}

/// Told about every committed batch, in commit order, before the appenders get their answer.
pub trait CommitListener: Send + Sync + 'static {
    /// Called by the committer task with the new (non-duplicate) publications of one
    /// transaction, ascending per stream. Must not block: it holds up every appender.
    fn committed(&self, batch: &[Committed]);
}

// === RecoveryFailure ===

impl RecoveryFailure {
    /// Wire name of the failure.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EpochChanged => "epoch_changed",
            Self::Trimmed => "trimmed",
            Self::BeyondEnd => "beyond_end",
        }
    }
}
