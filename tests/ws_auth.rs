//! Client tokens at the WebSocket upgrade: every refusal is an HTTP 401 with a JSON body and
//! a stable code, counted by reason; a connection whose token expires is closed with 4001.
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn assert_refusal((status, body): (u16, Value), code: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["error", "message"], "{body}");
}

fn failures(reason: &str) -> String {
    format!(r#"gateway_auth_failures_total{{reason="{reason}"}}"#)
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_upgrade_with_401_and_counted() {
    let gw = TestGateway::start(&[]).await;
    let now = chrono_now();
    let base = format!("ws://{}/v1", gw.addr);

    assert_refusal(refused(base.as_str()).await, "token_missing");
    assert_refusal(
        refused(format!("{base}?token=").as_str()).await,
        "token_missing",
    );
    assert_eq!(gw.metric(&failures("missing")).await, 2.0);

    let expired = sign(
        &gw.secret,
        &json!({"sub": "w", "iat": now - 600, "exp": now - 120}),
    );
    assert_refusal(refused(gw.ws_url(&expired).as_str()).await, "token_expired");
    assert_eq!(gw.metric(&failures("expired")).await, 1.0);

    let early = sign(
        &gw.secret,
        &json!({"sub": "w", "iat": now, "nbf": now + 120, "exp": now + 3600}),
    );
    assert_refusal(
        refused(gw.ws_url(&early).as_str()).await,
        "token_not_yet_valid",
    );
    assert_eq!(gw.metric(&failures("not_yet_valid")).await, 1.0);

    let forged = sign(
        "another-secret-of-at-least-32-bytes!",
        &json!({"sub": "w", "exp": now + 3600}),
    );
    assert_refusal(refused(gw.ws_url(&forged).as_str()).await, "token_invalid");
    assert_eq!(gw.metric(&failures("bad_signature")).await, 1.0);

    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "w", "exp": now + 3600}).to_string())
    );
    assert_refusal(
        refused(gw.ws_url(&unsigned).as_str()).await,
        "token_invalid",
    );
    assert_eq!(gw.metric(&failures("alg_none")).await, 1.0);

    assert_refusal(
        refused(gw.ws_url("garbage").as_str()).await,
        "token_invalid",
    );
    assert_refusal(refused(gw.ws_url("a.b.c").as_str()).await, "token_invalid");
    assert_eq!(gw.metric(&failures("malformed")).await, 2.0);

    // A bad token in the header is refused the same way.
    let mut req = base.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {expired}").parse().unwrap(),
    );
    assert_refusal(refused(req).await, "token_expired");
    assert_eq!(gw.metric(&failures("expired")).await, 2.0);
    assert_eq!(
        gw.metric(r#"gateway_connection_attempts_total{result="unauthorized"}"#)
            .await,
        9.0
    );
    assert_eq!(gw.metric("gateway_connections_open").await, 0.0);
}

#[tokio::test]
async fn a_token_works_in_the_query_and_in_an_authorization_header() {
    let gw = TestGateway::start(&[]).await;
    let mut by_query = gw.client().await;
    assert_eq!(
        by_query.subscribe(&[&aa("eip155:0", ADDR_A)]).await["event"],
        "subscribed"
    );

    let mut req = format!("ws://{}/v1", gw.addr)
        .into_client_request()
        .unwrap();
    let token = gw.token("header-wallet", 3600);
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("header token accepted");
    assert_eq!(resp.status().as_u16(), 101);
    let mut by_header = WsClient { ws };
    assert_eq!(by_header.recv().await["event"], "session-created");
    assert_eq!(
        by_header.subscribe(&[&aa("eip155:0", ADDR_A)]).await["event"],
        "subscribed"
    );

    gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}}))
        .await;
    assert_eq!(by_query.next_push().await["data"], json!({"n": 1}));
    assert_eq!(by_header.next_push().await["data"], json!({"n": 1}));
    assert_eq!(
        gw.metric(r#"gateway_connection_attempts_total{result="accepted"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_connection_is_closed_with_4001_when_its_token_expires() {
    let gw = TestGateway::start(&[]).await;
    let exp = chrono_now() + 2;
    let token = sign(
        &gw.secret,
        &json!({"sub": "short", "iat": exp - 2, "exp": exp}),
    );
    let mut c = gw.client_at(&gw.ws_url(&token)).await;
    assert_eq!(
        c.subscribe(&[&aa("eip155:0", ADDR_A)]).await["event"],
        "subscribed"
    );
    // A long-lived connection beside it is not affected.
    let mut other = gw.client().await;

    let ended = c.closed(Duration::from_secs(5)).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        ended,
        Ended::Close(4001, "token expired: reconnect with a fresh token".into())
    );
    assert!(
        now_ms >= exp * 1000 - 100,
        "closed {} ms before exp",
        exp * 1000 - now_ms
    );
    assert!(
        now_ms <= exp * 1000 + 1500,
        "closed {} ms after exp",
        now_ms - exp * 1000
    );
    assert_eq!(
        gw.metric(r#"gateway_disconnects_total{reason="token_expired"}"#)
            .await,
        1.0
    );
    other.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        other.subscribe(&[&aa("eip155:0", ADDR_B)]).await["event"],
        "subscribed"
    );
}
