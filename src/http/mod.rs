//! The axum router: the WebSocket endpoint, the publish and chain APIs, health, metrics and
//! the operator status page.
mod chains;
mod error;
mod keys;
mod publish;
mod status;
mod ws;

pub use error::ApiError;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::node::Node;

/// Builds the router for `node`; `/metrics` is on it unless `metrics.listen` gives it a
/// listener of its own ([`metrics_router`]).
pub fn router(node: Arc<Node>, metrics: PrometheusHandle) -> Router {
    let routes = Router::new()
        .route("/v1", get(ws::upgrade))
        .route("/v1/publish", post(publish::publish))
        .route("/v1/chains", get(chains::list))
        .route("/v1/chains/{chain}", get(chains::show))
        .route("/v1/chains/{chain}/heartbeat", post(chains::heartbeat))
        .route("/v1/chains/{chain}/status", put(chains::set_status))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz));
    let routes = if node.settings.metrics.listen.is_some() {
        routes
    } else {
        routes.merge(metrics_router(metrics.clone()))
    };
    status::routes(routes, &node, metrics)
        .fallback(error::not_found)
        .with_state(node)
}

/// `/metrics` alone, for the listener of `metrics.listen`.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(metrics: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    )
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.readiness() {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}
