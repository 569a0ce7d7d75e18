//! The axum router: the WebSocket endpoint, the publish and chain APIs, health, metrics and
//! the operator status page.
pub mod admission;
mod chains;
mod error;
mod keys;
mod publish;
mod status;
mod ws;

pub use error::ApiError;
pub use status::StatusConfig;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::node::Node;

/// Builds the router for `node`.
pub fn router(node: Arc<Node>, metrics: PrometheusHandle) -> Router {
    let routes = Router::new()
        .route("/v1", get(ws::upgrade))
        .route("/v1/publish", post(publish::publish))
        .route("/v1/chains", get(chains::list))
        .route("/v1/chains/{chain}", get(chains::show))
        .route("/v1/chains/{chain}/heartbeat", post(chains::heartbeat))
        .route("/v1/chains/{chain}/status", put(chains::set_status))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", {
            let metrics = metrics.clone();
            get(move || std::future::ready(metrics.render()))
        });
    status::routes(routes, &node, metrics)
        .fallback(error::not_found)
        .with_state(node)
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
