//! Prometheus metrics: names, help texts and the handles used on the hot path.
//!
//! Handles for the hot path are registered once and kept here, so a delivery costs an atomic
//! add, not a registry lookup. Labels are bounded sets (namespace, reason, code, chain id from
//! the chain registry); never an address, a channel or a subscriber.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::Namespace;

/// Hot-path handles.
pub struct Metrics {
    pub connections_open: Gauge,
    pub subscriptions_active: Gauge,
    pub channels_active: Gauge,
    pub slow_consumer_disconnects: Counter,
    pub delivery_latency: Histogram,
    delivered_account: Counter,
    delivered_market: Counter,
    published_account: Counter,
    published_market: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The hot-path handles (registered on first use).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::register)
}

/// How often histogram samples are folded into their buckets. The exporter keeps raw samples
/// until then: without this upkeep, memory grows with every delivery between two scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds buffered histogram samples into buckets and samples the memory gauges every few
/// seconds, for the life of the process. `sqlite_memory` reads the bytes SQLite holds (the
/// history's page caches); it is passed in so that this module stays a leaf.
pub fn spawn_upkeep(handle: PrometheusHandle, sqlite_memory: fn() -> u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            handle.run_upkeep();
            sample_memory(sqlite_memory);
        }
    });
}

/// Where the process's memory goes: the Rust heap (jemalloc's allocated and resident bytes)
/// and SQLite's heap (its page caches), to tell a growing RSS apart.
fn sample_memory(sqlite_memory: fn() -> u64) {
    #[cfg(all(unix, not(target_env = "musl")))]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // jemalloc caches its statistics; advancing the epoch refreshes them.
        if epoch::advance().is_ok() {
            if let Ok(v) = stats::allocated::read() {
                gauge!("gateway_allocator_allocated_bytes").set(v as f64);
            }
            if let Ok(v) = stats::resident::read() {
                gauge!("gateway_allocator_resident_bytes").set(v as f64);
            }
        }
    }
    gauge!("gateway_sqlite_memory_bytes").set(sqlite_memory() as f64);
}

/// Installs the Prometheus recorder once per process and returns its render handle.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(HANDLE.get().cloned().unwrap_or(handle))
}

impl Metrics {
    fn register() -> Self {
        Self {
            connections_open: gauge!(names::CONNECTIONS_OPEN),
            subscriptions_active: gauge!(names::SUBSCRIPTIONS_ACTIVE),
            channels_active: gauge!(names::CHANNELS_ACTIVE),
            slow_consumer_disconnects: counter!("gateway_slow_consumer_disconnects_total"),
            delivery_latency: histogram!("gateway_delivery_latency_seconds"),
            delivered_account: counter!(names::DELIVERED, "namespace" => Namespace::AccountActivity.as_str()),
            delivered_market: counter!(names::DELIVERED, "namespace" => Namespace::MarketData.as_str()),
            published_account: counter!(names::PUBLICATIONS, "namespace" => Namespace::AccountActivity.as_str()),
            published_market: counter!(names::PUBLICATIONS, "namespace" => Namespace::MarketData.as_str()),
        }
    }

    pub fn published(&self, ns: Namespace, n: u64) {
        match ns {
            Namespace::AccountActivity => self.published_account.increment(n),
            Namespace::MarketData => self.published_market.increment(n),
        }
    }

    /// One frame written to a client.
    pub fn delivered(&self, ns: Namespace, latency: Duration) {
        match ns {
            Namespace::AccountActivity => self.delivered_account.increment(1),
            Namespace::MarketData => self.delivered_market.increment(1),
        }
        self.delivery_latency.record(latency.as_secs_f64());
    }
}

/// A WebSocket upgrade's outcome: accepted, or why it was refused (docs/operations.md lists
/// the values).
pub fn connection_attempt(result: &'static str) {
    counter!("gateway_connection_attempts_total", "result" => result).increment(1);
}

/// An error reply to a client, by code.
pub fn protocol_error(code: &'static str) {
    counter!("gateway_protocol_errors_total", "code" => code).increment(1);
}

/// A connection closed by the server, by reason.
pub fn disconnect(reason: &'static str) {
    counter!("gateway_disconnects_total", "reason" => reason).increment(1);
}

/// A chain's status: 1 up, 0 down.
pub fn chain_status(chain: &str, up: bool) {
    gauge!("gateway_chain_status", "chain" => chain.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// Chains refused because `chains.max_chains` was reached (`n` = 0 exports the series).
pub fn chains_refused(n: u64) {
    counter!("gateway_chains_refused_total").increment(n);
}

/// A system notification sent to clients, by status.
pub fn system_notifications(up: bool, n: u64) {
    counter!("gateway_system_notifications_total", "status" => if up { "up" } else { "down" })
        .increment(n);
}

/// A refused client token, by [`AuthError::reason`](crate::auth::AuthError::reason).
pub fn auth_failure(reason: &'static str) {
    counter!("gateway_auth_failures_total", "reason" => reason).increment(1);
}

/// A rejected publish request, by code.
pub fn publish_rejected(code: &'static str) {
    counter!("gateway_publish_rejected_total", "code" => code).increment(1);
}

fn describe() {
    describe_gauge!(
        "gateway_allocator_allocated_bytes",
        "Bytes of the Rust heap in use (jemalloc stats.allocated), sampled every 5 s."
    );
    describe_gauge!(
        "gateway_allocator_resident_bytes",
        "Bytes of physical memory held by the Rust heap (jemalloc stats.resident), sampled every 5 s."
    );
    describe_gauge!(
        "gateway_sqlite_memory_bytes",
        "Bytes of heap held by the embedded SQLite (page caches, statements), sampled every 5 s."
    );
    describe_gauge!(
        names::CONNECTIONS_OPEN,
        "WebSocket connections currently open"
    );
    describe_counter!(
        "gateway_connection_attempts_total",
        "WebSocket upgrade attempts by result"
    );
    describe_gauge!(
        names::SUBSCRIPTIONS_ACTIVE,
        "Subscription ids currently held by clients"
    );
    describe_gauge!(
        names::CHANNELS_ACTIVE,
        "Channels currently subscribed (per connection, distinct)"
    );
    describe_counter!(
        names::PUBLICATIONS,
        "Publications accepted by the publish API, by namespace"
    );
    describe_counter!(
        names::DELIVERED,
        "Push frames written to clients, by namespace"
    );
    describe_histogram!(
        "gateway_delivery_latency_seconds",
        "Time from publication committed (account activity) or accepted (market data) to push frame written"
    );
    describe_counter!(
        "gateway_slow_consumer_disconnects_total",
        "Connections closed with 1013 because their outbound queue overflowed"
    );
    describe_counter!(
        "gateway_protocol_errors_total",
        "Error replies sent to clients, by code"
    );
    describe_counter!(
        "gateway_auth_failures_total",
        "Rejected client tokens, by reason"
    );
    describe_gauge!("gateway_chain_status", "Chain status: 1 up, 0 down");
    describe_gauge!(
        names::ACKS_OUTSTANDING,
        "Pushes sent on ack-mode connections that await an ack"
    );
    describe_counter!(
        "gateway_chains_refused_total",
        "Signs of life or overrides for a new chain refused because chains.max_chains was reached"
    );
    describe_counter!(
        "gateway_system_notifications_total",
        "System notifications sent to clients, by status"
    );
    describe_counter!(
        "gateway_disconnects_total",
        "Connections closed by the server, by reason"
    );
    describe_counter!(
        "gateway_publish_rejected_total",
        "Publish requests rejected, by code"
    );
    describe_counter!(
        history::APPENDED,
        "Publications appended to the history (duplicates excluded)"
    );
    describe_histogram!(
        history::COMMIT_SECONDS,
        "Duration of each history batch transaction, from BEGIN to COMMIT"
    );
    describe_histogram!(
        history::BATCH_SIZE,
        "Publications per history batch transaction (duplicates included)"
    );
    describe_counter!(
        history::TRIMMED,
        "Publications removed from the history by retention"
    );
    describe_counter!(
        history::STREAMS_REMOVED,
        "Streams (account rows) removed once retention left them without publications"
    );
    describe_counter!(
        history::READ_FAILURES,
        "History reads (positions, resumes) that failed or timed out; the store stays available"
    );
    describe_gauge!(
        history::AVAILABLE,
        "1 while the history store takes writes, 0 while appends are refused"
    );
}

/// Acks that matched a pending push.
pub fn acks(n: u64) {
    counter!(names::ACKS).increment(n);
}

/// Pushes awaiting an ack (ack-mode connections of this node) changed by `delta`.
pub fn acks_outstanding(delta: f64) {
    gauge!(names::ACKS_OUTSTANDING).increment(delta);
}

/// Pushes sent again because no ack came in time.
pub fn redeliveries(n: u64) {
    counter!(names::REDELIVERIES).increment(n);
}

/// A delivery given up, by reason (ack_timeout, unacked_overflow).
pub fn delivery_failure(reason: &'static str) {
    counter!(names::DELIVERY_FAILURES, "reason" => reason).increment(1);
}

/// A resume attempt, by result (recovered, epoch_changed, trimmed, beyond_end, store_unavailable,
/// already_subscribed, replay_limit).
pub fn resume(result: &'static str) {
    counter!("gateway_resumes_total", "result" => result).increment(1);
}

/// Publications replayed from history on resume.
pub fn replayed(n: u64) {
    counter!("gateway_replayed_total").increment(n);
}

/// The cluster broker's connection: 1 connected (or in-process), 0 lost.
pub fn broker_connected(up: bool) {
    gauge!("gateway_broker_connected").set(if up { 1.0 } else { 0.0 });
}

// === Cluster broker and JetStream ingest ===

/// JetStream messages ingested, by result (accepted, duplicate, malformed, retried).
pub fn ingest_messages(result: &'static str, n: u64) {
    if n > 0 {
        counter!("gateway_ingest_messages_total", "result" => result).increment(n);
    }
}

/// JetStream messages received again.
pub fn ingest_redeliveries(n: u64) {
    if n > 0 {
        counter!("gateway_ingest_redeliveries_total").increment(n);
    }
}

/// Describes the JetStream ingest's series and exports them at 0, so dashboards and alerts
/// see them before traffic.
pub fn describe_ingest() {
    describe_counter!(
        "gateway_ingest_messages_total",
        "JetStream messages ingested, by result (accepted, duplicate, malformed, retried)"
    );
    describe_counter!(
        "gateway_ingest_redeliveries_total",
        "JetStream messages received again (not acknowledged in time, nak'd, or a node crashed)"
    );
    for result in ["accepted", "duplicate", "malformed", "retried"] {
        counter!("gateway_ingest_messages_total", "result" => result).absolute(0);
    }
    counter!("gateway_ingest_redeliveries_total").absolute(0);
}

/// A message not handed to the cluster broker because its outbound queue was full (or
/// closed), by kind (publication, chain).
pub fn broker_not_sent(kind: &'static str) {
    counter!("gateway_broker_not_sent_total", "kind" => kind).increment(1);
}

/// Describes the cluster broker's series and exports them at 0.
pub fn describe_broker() {
    describe_counter!(
        "gateway_broker_not_sent_total",
        "Messages not sent to the cluster broker because its outbound queue was full, by kind (publication: receivers fill it from the history; chain: the next sign of life repeats it)"
    );
    for kind in ["publication", "chain"] {
        counter!("gateway_broker_not_sent_total", "kind" => kind).absolute(0);
    }
}

/// Names of the series other parts of the gateway read back (the status page reads the
/// node's own registry): one spelling for the recorder and its readers.
pub mod names {
    /// Open WebSocket connections (gauge).
    pub const CONNECTIONS_OPEN: &str = "gateway_connections_open";
    /// Active subscriptions (gauge).
    pub const SUBSCRIPTIONS_ACTIVE: &str = "gateway_subscriptions_active";
    /// Distinct channels subscribed (gauge).
    pub const CHANNELS_ACTIVE: &str = "gateway_channels_active";
    /// Publications accepted, by namespace (counter).
    pub const PUBLICATIONS: &str = "gateway_publications_total";
    /// Push frames written, by namespace (counter).
    pub const DELIVERED: &str = "gateway_notifications_delivered_total";
    /// Acks that matched a pending push (counter).
    pub const ACKS: &str = "gateway_acks_total";
    /// Pushes awaiting an ack (gauge).
    pub const ACKS_OUTSTANDING: &str = "gateway_acks_outstanding";
    /// Pushes sent again (counter).
    pub const REDELIVERIES: &str = "gateway_redeliveries_total";
    /// Deliveries given up, by reason (counter).
    pub const DELIVERY_FAILURES: &str = "gateway_delivery_failures_total";
}

/// The history's metrics. Labels: none (all bounded by construction).
pub mod history {
    use std::time::Duration;

    use metrics::{counter, gauge, histogram};

    pub(super) const APPENDED: &str = "gateway_history_appended_total";
    pub(super) const COMMIT_SECONDS: &str = "gateway_history_commit_seconds";
    pub(super) const BATCH_SIZE: &str = "gateway_history_batch_size";
    pub(super) const TRIMMED: &str = "gateway_history_trimmed_total";
    pub(super) const STREAMS_REMOVED: &str = "gateway_history_streams_removed_total";
    pub(super) const READ_FAILURES: &str = "gateway_history_read_failures_total";
    pub(super) const AVAILABLE: &str = "gateway_store_available";

    /// One committed batch of `size` publications, `fresh` of them new, that took `took`.
    pub fn batch_committed(size: usize, fresh: usize, took: Duration) {
        counter!(APPENDED).increment(fresh as u64);
        histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
        histogram!(BATCH_SIZE).record(size as f64);
    }

    /// Publications removed by retention.
    pub fn trimmed(n: u64) {
        if n > 0 {
            counter!(TRIMMED).increment(n);
        }
    }

    /// The store's availability for writes.
    pub fn available(up: bool) {
        gauge!(AVAILABLE).set(if up { 1.0 } else { 0.0 });
    }

    /// Stream rows removed by retention.
    pub fn streams_removed(n: usize) {
        if n > 0 {
            counter!(STREAMS_REMOVED).increment(n as u64);
        }
    }

    /// A failed history read.
    pub fn read_failed() {
        counter!(READ_FAILURES).increment(1);
    }
}
