//! The history's metrics, named in one place. Labels: none (all bounded by construction).

use std::time::Duration;

/// Publications appended (duplicates excluded).
const APPENDED: &str = "gateway_history_appended_total";
/// Duration of each batch transaction, from BEGIN to COMMIT.
const COMMIT_SECONDS: &str = "gateway_history_commit_seconds";
/// Publications per batch transaction (duplicates included).
const BATCH_SIZE: &str = "gateway_history_batch_size";
/// Publications removed by retention.
const TRIMMED: &str = "gateway_history_trimmed_total";
/// Stream rows removed once retention left them without publications.
const STREAMS_REMOVED: &str = "gateway_history_streams_removed_total";
/// Reads (positions, resumes) that failed or timed out; they never mark the store down.
const READ_FAILURES: &str = "gateway_history_read_failures_total";
/// 1 while the store takes writes, 0 while appends are refused.
const AVAILABLE: &str = "gateway_store_available";

/// Records one committed batch.
pub(crate) fn batch_committed(size: usize, fresh: usize, took: Duration) {
    metrics::counter!(APPENDED).increment(fresh as u64);
    metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// Records publications removed by retention.
pub(crate) fn trimmed(n: u64) {
    if n > 0 {
        metrics::counter!(TRIMMED).increment(n);
    }
}

/// Records the store's availability.
pub(crate) fn available(up: bool) {
    metrics::gauge!(AVAILABLE).set(if up { 1.0 } else { 0.0 });
}

/// Records stream rows removed by retention.
pub(crate) fn streams_removed(n: usize) {
    if n > 0 {
        metrics::counter!(STREAMS_REMOVED).increment(n as u64);
    }
}

/// Records a failed read.
pub(crate) fn read_failed() {
    metrics::counter!(READ_FAILURES).increment(1);
}
