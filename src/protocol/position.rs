//! Where a publication sits in its account stream: the one position type of the gateway,
//! stored by the history, carried by durable publications and push frames, and sent back by
//! clients when they resume.

use serde::{Deserialize, Serialize};

/// A position in an account stream. Offsets start at 1, increase strictly, are never reused
/// within an epoch and stay below 2^53; a new epoch means the stream's history was lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Random identity of the stream's current history.
    pub epoch: String,
    /// Offset within the epoch (0 = before the first publication).
    pub offset: u64,
}
