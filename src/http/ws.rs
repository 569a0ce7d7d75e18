//! `GET /v1`: the WebSocket upgrade. The token is verified before the upgrade, so a bad
//! token is a plain HTTP 401 (the real client never reaches `connected` with it).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::keys::bearer;
use crate::auth::{self, AuthError};
use crate::metrics;
use crate::node::Node;
use crate::protocol::ErrorCode;
use crate::session::{self, SessionInit};

pub async fn upgrade(
    State(node): State<Arc<Node>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if node.shutdown.is_draining() {
        metrics::connection_attempt("draining");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "this node is shutting down: reconnect, another node will take the connection",
        )
        .into_response();
    }
    let params = query.map(|q| q.0).unwrap_or_default();
    let token = params
        .get("token")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(&headers));
    let claims = match token {
        None => {
            auth::record_failure(&AuthError::Missing);
            return unauthorized(&AuthError::Missing);
        }
        Some(t) => match node.verifier.verify(t).await {
            Ok(c) => c,
            Err(e) => return unauthorized(&e),
        },
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            metrics::connection_attempt("bad_request");
            return ApiError::bad_request(format!("not a WebSocket upgrade request: {e}"))
                .into_response();
        }
    };
    let ack_mode = matches!(params.get("ack").map(String::as_str), Some("1" | "true"));
    metrics::connection_attempt("accepted");
    let server = &node.settings.server;
    let tracker = node.shutdown.sessions().clone();
    let init = SessionInit { claims, ack_mode };
    ws.read_buffer_size(server.read_buffer_bytes)
        .write_buffer_size(server.write_buffer_bytes)
        .max_message_size(server.max_message_bytes)
        .max_frame_size(server.max_message_bytes)
        .on_upgrade(move |socket| tracker.track_future(session::run(socket, node, init)))
}

fn unauthorized(err: &AuthError) -> Response {
    metrics::connection_attempt("unauthorized");
    ApiError::with_code(StatusCode::UNAUTHORIZED, err.code(), err.message()).into_response()
}
