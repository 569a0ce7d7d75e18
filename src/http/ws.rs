//! `GET /v1`: the WebSocket upgrade.
//!
//! Checks run cheapest first, and each refusal is a plain HTTP error with a JSON body: a
//! draining node (503), a request that is not an upgrade (400, whatever its token), an
//! `Origin` not allowed (403), the node's session cap (503) and the client address's cap
//! (429), then the token (401), then the subject's cap (429). Nothing about a token is
//! looked at before the request has shown it is an upgrade from an admissible client.
//! The admitted session holds its slots until it ends.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::error::ApiError;
use super::keys::bearer;
use crate::admission::Refused;
use crate::auth::{self, AuthError};
use crate::metrics;
use crate::node::Node;
use crate::protocol::ErrorCode;
use crate::session::{self, SessionInit};

/// `Retry-After` on a refusal for lack of room, in seconds: random within this range, so the
/// clients refused together do not come back together.
const RETRY_AFTER_FULL_SECS: std::ops::RangeInclusive<u64> = 5..=15;

pub async fn upgrade(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let server = &node.settings.server;
    if node.shutdown.is_draining() {
        metrics::connection_attempt("draining");
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "this node is shutting down: reconnect, another node will take the connection",
        );
        // Spread like the drain spreads its closes: within the drain window.
        let window = server.drain_window.as_secs().max(1);
        err.retry_after = Some(rand::thread_rng().gen_range(1..=window));
        return err.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            metrics::connection_attempt("bad_request");
            return ApiError::bad_request(format!("not a WebSocket upgrade request: {e}"))
                .into_response();
        }
    };
    if !node.admission.origin_allowed(&headers) {
        metrics::connection_attempt("origin_not_allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            "this Origin may not connect: the gateway accepts only the origins in \
             server.allowed_origins",
        )
        .into_response();
    }
    let client = node.admission.client_ip(peer, &headers);
    let slots = match node.admission.admit(client) {
        Ok(slots) => slots,
        Err(refused) => return refusal(refused, &node),
    };
    let params = Params::parse(uri.query().unwrap_or(""));
    let token = params
        .token
        .as_deref()
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
    let slots = match slots.with_subject(&node.admission, &claims.sub) {
        Ok(slots) => slots,
        Err(refused) => return refusal(refused, &node),
    };
    let ack_mode = matches!(params.ack.as_deref(), Some("1" | "true"));
    metrics::connection_attempt("accepted");
    let tracker = node.shutdown.sessions().clone();
    let init = SessionInit { claims, ack_mode };
    let (read_buffer, write_buffer, max_message) = (
        server.read_buffer_bytes,
        server.write_buffer_bytes,
        server.max_message_bytes,
    );
    ws.read_buffer_size(read_buffer)
        .write_buffer_size(write_buffer)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                // The slots are given back when the session ends (or if the upgrade fails,
                // when this closure is dropped unrun).
                let _slots = slots;
                session::run(socket, node, init).await
            })
        })
}

/// The query string parameters the upgrade reads, decoded as
/// `application/x-www-form-urlencoded`; of a repeated name, the last one counts.
#[derive(Debug, Default, PartialEq)]
struct Params<'a> {
    /// `token`: the access token, when it is not in the `Authorization` header.
    token: Option<Cow<'a, str>>,
    /// `ack`: `1` or `true` asks for acknowledged delivery.
    ack: Option<Cow<'a, str>>,
}

impl<'a> Params<'a> {
    fn parse(query: &'a str) -> Self {
        let mut params = Params::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = if pair.bytes().any(|b| b == b'%' || b == b'+') {
                // Escapes: decoded by the same code as the rest of the URL handling.
                match url::form_urlencoded::parse(pair.as_bytes()).next() {
                    Some(decoded) => decoded,
                    None => continue,
                }
            } else {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(name), Cow::Borrowed(value))
            };
            match &*name {
                "token" => params.token = Some(value),
                "ack" => params.ack = Some(value),
                _ => {}
            }
        }
        params
    }
}

/// The answer to an upgrade refused for lack of room, with a `Retry-After`.
fn refusal(refused: Refused, node: &Node) -> Response {
    let (status, code, result, message) = match refused {
        Refused::OverCapacity => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::OverCapacity,
            "over_capacity",
            format!(
                "this node holds its maximum of {} connections: retry after Retry-After \
                 seconds (another node may take the connection sooner)",
                node.settings.server.max_connections
            ),
        ),
        Refused::TooManyPerIp => (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyConnections,
            "too_many_per_ip",
            format!(
                "this address already holds {} connections: close one, or retry after \
                 Retry-After seconds",
                node.settings.server.max_connections_per_ip
            ),
        ),
        Refused::TooManyPerSubject => (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyConnections,
            "too_many_per_subject",
            format!(
                "this token's subject already holds {} connections: close one, or retry \
                 after Retry-After seconds",
                node.settings.auth.max_connections_per_subject
            ),
        ),
    };
    metrics::connection_attempt(result);
    let mut err = ApiError::new(status, code, message);
    err.retry_after = Some(rand::thread_rng().gen_range(RETRY_AFTER_FULL_SECS));
    err.into_response()
}

fn unauthorized(err: &AuthError) -> Response {
    metrics::connection_attempt("unauthorized");
    ApiError::new(StatusCode::UNAUTHORIZED, err.code(), err.message()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> (Option<String>, Option<String>) {
        let p = Params::parse(query);
        (p.token.map(Cow::into_owned), p.ack.map(Cow::into_owned))
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn params_decode_like_a_form() {
        assert_eq!(parse(""), (None, None));
        assert_eq!(parse("token=a.b.c&ack=1"), (some("a.b.c"), some("1")));
        assert_eq!(parse("ack=true&other=x&token="), (some(""), some("true")));
        // Escapes and `+` in names and values; a name without `=` has an empty value.
        assert_eq!(parse("%74oken=a%2Eb+c&ack"), (some("a.b c"), some("")));
        // The last of a repeated name counts; empty pairs are skipped.
        assert_eq!(parse("&&token=x&&token=y&"), (some("y"), None));
        // The value is everything after the first `=`.
        assert_eq!(parse("token=a=b"), (some("a=b"), None));
        // Bad escapes are kept as they are, invalid UTF-8 replaced.
        assert_eq!(parse("token=%zz%ff"), (some("%zz\u{fffd}"), None));
    }
}
