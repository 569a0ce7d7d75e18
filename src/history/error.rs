//! The errors of the history, each saying what went wrong and what to do about it.

/// Why a history operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// The store cannot be reached or written right now; nothing of the failed call was stored
    /// (except possibly a transaction whose COMMIT was cut off, which a retry with the same
    /// idempotency key resolves).
    #[error(
        "history store unavailable: {0}; retry later (check that the database is running and \
         reachable, the disk is writable and storage.url is right)"
    )]
    Unavailable(String),
    /// The configuration cannot work.
    #[error("invalid history configuration: {0}")]
    Config(String),
    /// A publication the store cannot hold (e.g. a NUL character in a string).
    #[error("invalid publication: {0}")]
    Invalid(String),
    /// A stream ran out of offsets that JavaScript clients can represent.
    #[error(
        "stream {stream} reached offset 2^53 - 1, the highest a JavaScript client can hold; \
         reset the stream's history to start a new epoch"
    )]
    OffsetExhausted {
        /// The stream key.
        stream: String,
    },
    /// The database schema could not be brought up to date.
    #[error("history migration failed: {0}; check the database user's rights and the schema")]
    Migration(String),
    /// The history was closed (graceful shutdown in progress).
    #[error("history is closed: the gateway is shutting down")]
    Closed,
}
