//! `POST /v1/publish`: one publication or a batch, validated whole, then published.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use super::keys::{require, Role};
use crate::ingest::{self, ItemError, Outcome, PublishError, Rejection};
use crate::metrics;
use crate::node::Node;
use crate::protocol::ErrorCode;

pub async fn publish(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Response {
    match handle(&node, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            metrics::publish_rejected(e.code.as_str());
            e.into_response()
        }
    }
}

async fn handle(node: &Arc<Node>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    require(headers, &node.settings, Role::Publisher)?;
    let limit = node.settings.publish.max_body_bytes;
    let bytes = read_body(body, limit).await?;
    let items = ingest::validate(&bytes, node.settings.publish.max_batch).map_err(|r| match r {
        Rejection::Body(message) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPublication,
            message,
        ),
        Rejection::Items(errors) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPublication,
            format!(
                "{} invalid publication(s); nothing was published",
                errors.len()
            ),
        )
        .extra("errors", json!(errors)),
    })?;
    let max = node.settings.publish.max_publication_bytes;
    let too_large: Vec<ItemError> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.payload.len() > max)
        .map(|(index, item)| ItemError {
            index,
            code: ErrorCode::PublicationTooLarge,
            message: format!(
                "\"data\" is {} bytes, more than publish.max_publication_bytes ({max}): a push \
                 that large could not be queued to subscribers; split or shrink it",
                item.payload.len()
            ),
        })
        .collect();
    if !too_large.is_empty() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PublicationTooLarge,
            format!(
                "{} publication(s) larger than publish.max_publication_bytes ({max}); nothing \
                 was published",
                too_large.len()
            ),
        )
        .extra("errors", json!(too_large)));
    }
    let outcomes = ingest::publish(node, items).await.map_err(|e| match e {
        PublishError::Unavailable(_) => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                format!("{e}; nothing was published: retry later"),
            );
            err.retry_after = Some(1);
            err
        }
    })?;
    Ok((
        StatusCode::OK,
        Json(Accepted {
            accepted: outcomes.len(),
            publications: outcomes,
        }),
    )
        .into_response())
}

/// The reply to an accepted request, members in name order.
#[derive(Serialize)]
struct Accepted {
    /// How many publications were accepted: all of the request's.
    accepted: usize,
    /// What happened to each, in request order.
    publications: Vec<Outcome>,
}

/// Reads the body up to `limit` bytes; larger bodies are a 413 with a JSON body.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_big {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "body is larger than {limit} bytes (publish.max_body_bytes): split the batch"
                ),
            )
        } else {
            ApiError::bad_request(format!("could not read the body: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Position;

    #[test]
    fn the_reply_lists_members_in_name_order() {
        let outcome = |duplicate| Outcome {
            channel: "c".into(),
            duplicate,
            message_id: Some("e-1".into()),
            position: Some(Position {
                epoch: "e".into(),
                offset: 1,
            }),
        };
        let market = Outcome {
            channel: "m".into(),
            duplicate: false,
            message_id: None,
            position: None,
        };
        let reply = Accepted {
            accepted: 3,
            publications: vec![outcome(true), outcome(false), market],
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"accepted":3,"publications":[{"channel":"c","duplicate":true,"messageId":"e-1","position":{"epoch":"e","offset":1}},{"channel":"c","messageId":"e-1","position":{"epoch":"e","offset":1}},{"channel":"m"}]}"#
        );
    }
}
