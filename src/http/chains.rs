//! The chain endpoints: status (with the rule's inputs) for everyone, heartbeats for
//! publishers, durable overrides for admins.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::keys::{require, Role};
use super::publish::read_body;
use crate::chains::{ChainRefused, ChainView, Mode, SetModeError};
use crate::node::Node;
use crate::protocol::caip::ChainId;
use crate::protocol::ErrorCode;

/// `GET /v1/chains`.
pub async fn list(State(node): State<Arc<Node>>) -> Json<Value> {
    Json(json!({"chains": node.chains.views()}))
}

/// `GET /v1/chains/{chainId}`.
pub async fn show(
    State(node): State<Arc<Node>>,
    Path(chain): Path<String>,
) -> Result<Json<ChainView>, ApiError> {
    let chain = parse_chain(&chain)?;
    node.chains
        .view(&chain)
        .map(Json)
        .ok_or_else(|| unknown(&chain))
}

/// `POST /v1/chains/{chainId}/heartbeat` (publisher key).
pub async fn heartbeat(
    State(node): State<Arc<Node>>,
    Path(chain): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ChainView>, ApiError> {
    require(&headers, &node.settings, Role::Publisher)?;
    let chain = parse_chain(&chain)?;
    node.chains.alive(&chain).map_err(refused)?;
    node.chains
        .view(&chain)
        .map(Json)
        .ok_or_else(|| unknown(&chain))
}

/// `PUT /v1/chains/{chainId}/status` with `{"status": "up" | "down" | "auto"}` (admin key).
pub async fn set_status(
    State(node): State<Arc<Node>>,
    Path(chain): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ChainView>, ApiError> {
    require(&headers, &node.settings, Role::Admin)?;
    let chain = parse_chain(&chain)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        status: Mode,
    }
    let bytes = read_body(body, 4096).await?;
    let body: Body = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"status\": \"up\" | \"down\" | \"auto\"}} ({e})"
        ))
    })?;
    let view = node
        .chains
        .set_mode(&chain, body.status)
        .await
        .map_err(|e| match e {
            SetModeError::Refused(r) => refused(r),
            e @ SetModeError::Store(_) => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreUnavailable,
                    e.to_string(),
                );
                err.retry_after = Some(1);
                err
            }
        })?;
    Ok(Json(view))
}

fn parse_chain(text: &str) -> Result<ChainId, ApiError> {
    let chain = ChainId::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if chain.is_wildcard() {
        return Err(ApiError::bad_request(
            "chain reference 0 is the subscription wildcard, not a chain",
        ));
    }
    Ok(chain)
}

fn unknown(chain: &ChainId) -> ApiError {
    refused(ChainRefused::Unknown(chain.to_string()))
}

fn refused(reason: ChainRefused) -> ApiError {
    match reason {
        ChainRefused::Unknown(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownChain,
            reason.to_string(),
        ),
        ChainRefused::Limit { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyChains,
            reason.to_string(),
        ),
    }
}
