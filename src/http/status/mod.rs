//! The operator status page: `GET /status` (one static HTML page embedded in the binary, no
//! external assets) and the JSON it reads, `GET /v1/status`. Read-only and keyless, so it shows
//! only what an anonymous visitor may see: counts, rates, chain ids and reasons, never an
//! account, a channel, a key, a token or a database URL. `status.enabled = false` removes both
//! routes (they answer 404 like any unknown path).

mod counters;
mod report;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::node::Node;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use counters::counters;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use report::{
    chain_row, store_kind, up_down, Cluster, Component, Connections, Delivery, NodeStatus,
    Publications, StatusReport,
};

/// The page, compiled in.
const PAGE: &str = include_str!("status.html");

/// When the process started serving (the router is built once, at start).
static STARTED: OnceLock<Instant> = OnceLock::new();

/// What the status handlers share: the metrics they read, the publication-rate sample and
/// the last answer.
struct StatusState {
    node: Arc<Node>,
    metrics: PrometheusHandle,
    rate: Mutex<RateSample>,
    /// The last report, serialised, and when: the endpoint is keyless, so however often it is
    /// asked, the metrics are rendered at most once per [`CACHE_FOR`].
    cached: Mutex<Option<(Instant, Bytes)>>,
}

/// How long one report answers every request.
const CACHE_FOR: Duration = Duration::from_millis(500);

/// The publication counter at the last sample, to turn the total into a rate.
struct RateSample {
    /// When `total` was read.
    at: Instant,
    /// `gateway_publications_total` (all namespaces) then.
    total: f64,
    /// Publications per second over the last window of at least [`RATE_WINDOW_SECS`].
    per_second: f64,
}

/// The shortest window a rate is computed over, so that page refreshes close together do
/// not report noise.
const RATE_WINDOW_SECS: f64 = 1.0;

/// Adds the status routes to `router` unless `status.enabled` is false.
pub fn routes(
    router: Router<Arc<Node>>,
    node: &Arc<Node>,
    metrics: PrometheusHandle,
) -> Router<Arc<Node>> {
    STARTED.get_or_init(Instant::now);
    if !node.settings.status.enabled {
        return router;
    }
    let total = counters(&metrics.render()).publications;
    let state = Arc::new(StatusState {
        node: node.clone(),
        metrics,
        rate: Mutex::new(RateSample {
            at: Instant::now(),
            total,
            per_second: 0.0,
        }),
        cached: Mutex::new(None),
    });
    let status_routes: Router<Arc<Node>> = Router::new()
        .route("/status", get(page))
        .route("/v1/status", get(json))
        .with_state(state);
    router.merge(status_routes)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn json(State(state): State<Arc<StatusState>>) -> Response {
    let body = {
        let mut cached = state.cached.lock();
        match &*cached {
            Some((at, body)) if at.elapsed() < CACHE_FOR => body.clone(),
            _ => {
                let body = Bytes::from(serde_json::to_vec(&report(&state)).unwrap_or_default());
                *cached = Some((Instant::now(), body.clone()));
                body
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn report(state: &StatusState) -> StatusReport {
    let node = &state.node;
    let c = counters(&state.metrics.render());
    let per_second = {
        let mut rate = state.rate.lock();
        let now = Instant::now();
        let secs = now.duration_since(rate.at).as_secs_f64();
        if secs >= RATE_WINDOW_SECS {
            rate.per_second = ((c.publications - rate.total) / secs).max(0.0);
            rate.at = now;
            rate.total = c.publications;
        }
        (rate.per_second * 10.0).round() / 10.0
    };
    let draining = node.shutdown.is_draining();
    let readiness = node.readiness();
    let store_up = node.history.is_available();
    let broker_up = node.broker.is_up();
    StatusReport {
        node: NodeStatus {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: STARTED.get().map_or(0, |t| t.elapsed().as_secs()),
            state: readiness.err().unwrap_or("ready"),
            ready: readiness.is_ok(),
            draining,
            store: Component {
                kind: store_kind(&node.settings.storage.url),
                status: up_down(store_up),
            },
            broker: Component {
                kind: if node.broker.is_cluster() {
                    "nats"
                } else {
                    "local"
                },
                status: up_down(broker_up),
            },
        },
        chains: node.chains.views().into_iter().map(chain_row).collect(),
        connections: Connections {
            open: c.connections as u64,
            subscriptions: c.subscriptions as u64,
            channels: c.channels as u64,
        },
        publications: Publications {
            total: c.publications as u64,
            per_second,
        },
        delivery: Delivery {
            delivered: c.delivered as u64,
            acks: c.acks as u64,
            acks_outstanding: c.acks_outstanding.max(0.0) as u64,
            redeliveries: c.redeliveries as u64,
            ack_timeouts: c.ack_timeouts as u64,
        },
        cluster: Cluster {
            mode: if node.broker.is_cluster() {
                "nats"
            } else {
                "single"
            },
            nodes: node.broker.nodes(),
        },
    }
}
