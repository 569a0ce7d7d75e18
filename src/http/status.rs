//! The operator status page: `GET /status` (one static HTML page embedded in the binary, no
//! external assets) and the JSON it reads, `GET /v1/status`. Read-only and keyless, so it shows
//! only what an anonymous visitor may see: counts, rates, chain ids and reasons, never an
//! account, a channel, a key, a token or a database URL. `status.enabled = false` removes both
//! routes (they answer 404 like any unknown path).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use serde::Serialize;

use crate::broker::{Broker, NodeSeen};
use crate::chains::{ChainView, Mode};
use crate::node::Node;

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

/// `GET /v1/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusReport {
    node: NodeStatus,
    chains: Vec<ChainRow>,
    connections: Connections,
    publications: Publications,
    delivery: Delivery,
    cluster: Cluster,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeStatus {
    /// The gateway's version.
    version: &'static str,
    uptime_seconds: u64,
    /// `ready`, or why not: `draining`, `cluster broker unavailable`, `history store unavailable`.
    state: &'static str,
    ready: bool,
    draining: bool,
    /// The history store: `sqlite` or `postgres`, `up` or `down`.
    store: Component,
    /// The cluster transport: `local` (one node) or `nats`, `up` or `down`.
    broker: Component,
}

#[derive(Debug, Serialize)]
struct Component {
    kind: &'static str,
    status: &'static str,
}

/// One chain: its status and, in words and as a code, why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChainRow {
    chain_id: String,
    status: &'static str,
    mode: Mode,
    /// `fresh`, `stale`, `never_seen`, `operator_override`, `broker_down`, `store_down`.
    reason_code: &'static str,
    reason: String,
    last_seen_ms_ago: Option<u64>,
    stale_after_ms: u64,
}

#[derive(Debug, Serialize)]
struct Connections {
    open: u64,
    subscriptions: u64,
    channels: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Publications {
    total: u64,
    per_second: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    delivered: u64,
    acks: u64,
    /// Pushes sent in ack mode that await an ack.
    acks_outstanding: u64,
    redeliveries: u64,
    /// Connections closed with 4010 (ack timeout).
    ack_timeouts: u64,
}

#[derive(Debug, Serialize)]
struct Cluster {
    /// `single` or `nats`.
    mode: &'static str,
    /// Nodes heard from in the last 10 s, this one first; `null` for a single node.
    nodes: Option<Vec<NodeSeen>>,
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
                kind: match &*node.broker {
                    Broker::Local(_) => "local",
                    Broker::Nats(_) => "nats",
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
            mode: match &*node.broker {
                Broker::Local(_) => "single",
                Broker::Nats(_) => "nats",
            },
            nodes: node.broker.nodes(),
        },
    }
}

/// A chain's status and the reason an operator reads, from the chain rule's own view: its
/// inputs decide which reason applies, in the rule's order (an operator's `down`, the store,
/// the broker, an operator's `up`, then the signs of life), so the page and `GET /v1/chains`
/// never disagree.
fn chain_row(v: ChainView) -> ChainRow {
    let down = v.status != "up";
    let (reason_code, reason) = match v.mode {
        Mode::Down => ("operator_override", "forced down by an operator".to_owned()),
        _ if !v.inputs.store_writable => ("store_down", v.reason.clone()),
        _ if !v.inputs.broker_connected => (
            "broker_down",
            "the cluster broker is unreachable: every chain is reported down".to_owned(),
        ),
        Mode::Up => ("operator_override", "forced up by an operator".to_owned()),
        Mode::Auto => match v.last_seen_ms_ago {
            None => (
                "never_seen",
                "no heartbeat or publication seen yet".to_owned(),
            ),
            Some(ago) if !down => (
                "fresh",
                format!("fresh: last heartbeat or publication {} ago", human_ms(ago)),
            ),
            Some(ago) => (
                "stale",
                format!(
                    "stale since {} ago: no heartbeat or publication for {} (stale after {})",
                    human_ms(ago.saturating_sub(v.stale_after_ms)),
                    human_ms(ago),
                    human_ms(v.stale_after_ms)
                ),
            ),
        },
    };
    ChainRow {
        chain_id: v.chain_id,
        status: v.status,
        mode: v.mode,
        reason_code,
        reason,
        last_seen_ms_ago: v.last_seen_ms_ago,
        stale_after_ms: v.stale_after_ms,
    }
}

/// `1234` → `1.2 s`, `90000` → `1.5 min`, hours past an hour.
fn human_ms(ms: u64) -> String {
    let ms = ms as f64;
    if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms < 3_600_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else {
        format!("{:.1} h", ms / 3_600_000.0)
    }
}

fn up_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

/// The store's kind from its URL (the URL itself may carry a password and is never shown).
fn store_kind(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The series the page shows, read from the node's own Prometheus registry.
#[derive(Debug, Default)]
struct Counters {
    connections: f64,
    subscriptions: f64,
    channels: f64,
    publications: f64,
    delivered: f64,
    acks: f64,
    acks_outstanding: f64,
    redeliveries: f64,
    ack_timeouts: f64,
}

/// Sums the series of interest (over their labels) from Prometheus text.
fn counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        match name {
            "gateway_connections_open" => c.connections += value,
            "gateway_subscriptions_active" => c.subscriptions += value,
            "gateway_channels_active" => c.channels += value,
            "gateway_publications_total" => c.publications += value,
            "gateway_notifications_delivered_total" => c.delivered += value,
            "gateway_acks_total" => c.acks += value,
            "gateway_acks_outstanding" => c.acks_outstanding += value,
            "gateway_redeliveries_total" => c.redeliveries += value,
            "gateway_delivery_failures_total" if labels.contains("\"ack_timeout\"") => {
                c.ack_timeouts += value
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::Inputs;

    fn view(status: &'static str, mode: Mode, ago: Option<u64>) -> ChainView {
        ChainView {
            chain_id: "eip155:1".into(),
            status,
            mode,
            reason: String::new(),
            inputs: Inputs {
                fresh_sign_of_life: ago.is_some_and(|a| a < 60_000),
                store_writable: true,
                broker_connected: true,
            },
            stale_after_ms: 60_000,
            last_seen_ms_ago: ago,
        }
    }

    #[test]
    fn chain_reasons() {
        let r = chain_row(view("down", Mode::Down, Some(10)));
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            ("operator_override", "forced down by an operator")
        );
        let r = chain_row(view("up", Mode::Auto, Some(1_500)));
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            ("fresh", "fresh: last heartbeat or publication 1.5 s ago")
        );
        let r = chain_row(view("down", Mode::Auto, Some(90_000)));
        assert_eq!(r.reason_code, "stale");
        assert_eq!(
            r.reason,
            "stale since 30.0 s ago: no heartbeat or publication for 1.5 min (stale after 1.0 min)"
        );
        let r = chain_row(view("down", Mode::Auto, None));
        assert_eq!(r.reason_code, "never_seen");
        let mut cut = view("down", Mode::Auto, Some(10));
        cut.inputs.broker_connected = false;
        assert_eq!(chain_row(cut).reason_code, "broker_down");
        let mut locked = view("down", Mode::Up, Some(10));
        locked.inputs.store_writable = false;
        locked.reason = "history store not writable: database is locked".into();
        let r = chain_row(locked);
        assert_eq!(
            (r.reason_code, r.reason.as_str()),
            (
                "store_down",
                "history store not writable: database is locked"
            )
        );
    }

    #[test]
    fn counters_sum_labels_and_pick_ack_timeouts() {
        let text = "# HELP x\n\
            gateway_publications_total{namespace=\"account-activity.v1\"} 5\n\
            gateway_publications_total{namespace=\"market-data.v1\"} 2\n\
            gateway_connections_open 3\n\
            gateway_delivery_failures_total{reason=\"ack_timeout\"} 1\n\
            gateway_delivery_failures_total{reason=\"other\"} 9\n";
        let c = counters(text);
        assert_eq!(c.publications, 7.0);
        assert_eq!(c.connections, 3.0);
        assert_eq!(c.ack_timeouts, 1.0);
        assert_eq!(
            c.acks_outstanding, 0.0,
            "absent until the first ack-mode push"
        );
    }
}
