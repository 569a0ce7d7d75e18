//! Connection limits that hold against a client holding valid tokens: the node-wide session
//! cap, the per-address and per-subject caps (with the address taken from trusted proxies
//! only), allowed origins, the upgrade check that comes before any token check, and a second
//! signal during a drain. A well-behaved wallet on the same gateway keeps its pushes.
mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::tungstenite::Error as WsError;

/// An upgrade the gateway answered with an HTTP error instead of `101`.
#[derive(Debug)]
struct Refusal {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

/// Attempts an upgrade with `token` and extra request headers. Accepted: the client, with
/// `session-created` read. Refused: the status, `Retry-After` and JSON body.
async fn upgrade(
    gw: &TestGateway,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, Refusal> {
    let mut req = gw.ws_url(token).into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            let mut c = WsClient { ws };
            assert_eq!(c.recv().await["event"], "session-created");
            Ok(c)
        }
        Err(WsError::Http(resp)) => Err(Refusal {
            status: resp.status().as_u16(),
            retry_after: resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            body: serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null),
        }),
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

/// Asserts an upgrade was refused with `status`, the JSON error `code` and a message.
fn assert_refused(result: Result<WsClient, Refusal>, status: u16, code: &str) -> Refusal {
    let refusal = match result {
        Ok(_) => panic!("the upgrade was accepted; expected {status} {code}"),
        Err(r) => r,
    };
    assert_eq!(refusal.status, status, "{refusal:?}");
    assert_eq!(refusal.body["error"], code, "{refusal:?}");
    assert!(
        refusal.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{refusal:?}"
    );
    refusal
}

/// A refusal the client should retry later: `Retry-After` is 5 to 15 seconds.
fn assert_retry_later(result: Result<WsClient, Refusal>, status: u16, code: &str) {
    let refusal = assert_refused(result, status, code);
    assert!(
        refusal.retry_after.is_some_and(|s| (5..=15).contains(&s)),
        "Retry-After: {:?}",
        refusal.retry_after
    );
}

/// Retries an upgrade as `sub` (refused only with `status` meanwhile) until a slot freed by a
/// session that ended lets it in.
async fn admitted_within_5s(gw: &TestGateway, sub: &str, status: u16) -> WsClient {
    let started = Instant::now();
    loop {
        match upgrade(gw, &gw.token(sub, 3600), &[]).await {
            Ok(c) => return c,
            Err(r) => {
                assert_eq!(r.status, status, "{r:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a slot was not given back within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn attempts(result: &str) -> String {
    format!(r#"gateway_connection_attempts_total{{result="{result}"}}"#)
}

/// A wallet subscribed to `ADDR_A`'s activity on every EVM chain.
async fn well_behaved(gw: &TestGateway, headers: &[(&str, &str)]) -> WsClient {
    let mut c = upgrade(gw, &gw.token("well-behaved", 3600), headers)
        .await
        .expect("the well-behaved wallet is admitted");
    assert_eq!(
        c.subscribe(&[&aa("eip155:0", ADDR_A)]).await["event"],
        "subscribed"
    );
    c
}

/// Publishes one activity for `ADDR_A` and asserts `c` gets it within 1 s.
async fn assert_push_within_1s(gw: &TestGateway, c: &mut WsClient, n: u64) {
    let (status, body) = gw
        .publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    loop {
        let m = c
            .recv_within(Duration::from_secs(1).saturating_sub(started.elapsed()))
            .await
            .expect("no push within 1 s");
        if m["event"] == "data" {
            assert_eq!(m["data"], json!({"n": n}), "{m}");
            return;
        }
    }
}

#[tokio::test]
async fn sessions_past_max_connections_get_503_over_capacity_and_a_freed_slot_is_reused() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__MAX_CONNECTIONS", "2")]).await;
    let mut good = well_behaved(&gw, &[]).await;
    let second = gw.client().await;
    for n in 0..4 {
        let token = gw.token(&format!("newcomer-{n}"), 3600);
        assert_retry_later(upgrade(&gw, &token, &[]).await, 503, "over_capacity");
    }
    assert_eq!(gw.metric(&attempts("over_capacity")).await, 4.0);
    assert_eq!(gw.metric("gateway_connections_open").await, 2.0);
    // Plain HTTP is still served at the cap, and the admitted wallet keeps its pushes.
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_push_within_1s(&gw, &mut good, 1).await;

    // A session that ends gives its slot back.
    drop(second);
    let _patient = admitted_within_5s(&gw, "patient", 503).await;
    assert_retry_later(
        upgrade(&gw, &gw.token("late", 3600), &[]).await,
        503,
        "over_capacity",
    );
    assert_push_within_1s(&gw, &mut good, 2).await;
}

#[tokio::test]
async fn one_address_is_capped_at_max_connections_per_ip_with_429() {
    let gw = TestGateway::start(&[("GATEWAY__SERVER__MAX_CONNECTIONS_PER_IP", "3")]).await;
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(
            gw.client_at(&gw.ws_url(&gw.token(&format!("w{n}"), 3600)))
                .await,
        );
    }
    assert_retry_later(
        upgrade(&gw, &gw.token("w3", 3600), &[]).await,
        429,
        "too_many_connections",
    );
    // Without trusted proxies a forwarding header is the client's word: it changes nothing.
    for header in ["x-forwarded-for", "forwarded"] {
        let value = if header == "forwarded" {
            "for=203.0.113.9"
        } else {
            "203.0.113.9"
        };
        assert_retry_later(
            upgrade(&gw, &gw.token("w4", 3600), &[(header, value)]).await,
            429,
            "too_many_connections",
        );
    }
    assert_eq!(gw.metric(&attempts("too_many_per_ip")).await, 3.0);
    assert_eq!(gw.metric("gateway_connections_open").await, 3.0);

    held.pop();
    admitted_within_5s(&gw, "w5", 429).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_address_is_counted() {
    let gw = TestGateway::start(&[
        ("GATEWAY__SERVER__MAX_CONNECTIONS_PER_IP", "2"),
        (
            "GATEWAY__SERVER__TRUSTED_PROXIES",
            "127.0.0.0/8, 10.0.0.0/8, ::1",
        ),
    ])
    .await;
    let mut good = well_behaved(&gw, &[("x-forwarded-for", "198.51.100.8")]).await;

    // The same client address through either header, and behind a second trusted hop.
    let abuser = "198.51.100.7";
    let mut held = Vec::new();
    for headers in [
        vec![("x-forwarded-for", abuser)],
        vec![("forwarded", r#"for="198.51.100.7:4711";proto=https"#)],
    ] {
        held.push(
            upgrade(&gw, &gw.token("abuser", 3600), &headers)
                .await
                .expect("admitted"),
        );
    }
    for headers in [
        vec![("x-forwarded-for", abuser)],
        // A made-up address to the left of the one the proxy appended counts for nothing.
        vec![("x-forwarded-for", "203.0.113.1, 198.51.100.7, 10.0.0.1")],
        vec![
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", abuser),
        ],
        vec![("forwarded", "for=203.0.113.1, for=198.51.100.7")],
    ] {
        assert_retry_later(
            upgrade(&gw, &gw.token("abuser", 3600), &headers).await,
            429,
            "too_many_connections",
        );
    }
    // Another address behind the same proxy, and the proxy's own requests, are not affected.
    upgrade(
        &gw,
        &gw.token("neighbour", 3600),
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await
    .expect("another client address is admitted");
    upgrade(&gw, &gw.token("proxy-itself", 3600), &[])
        .await
        .expect("the proxy's own address is admitted");
    assert_eq!(gw.metric(&attempts("too_many_per_ip")).await, 4.0);
    assert_push_within_1s(&gw, &mut good, 1).await;
}

#[tokio::test]
async fn one_subject_is_capped_at_max_connections_per_subject_with_429() {
    // The default: 16 sessions per token subject.
    let gw = TestGateway::start(&[]).await;
    let mut good = well_behaved(&gw, &[]).await;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(gw.client_at(&gw.ws_url(&gw.token("hoarder", 3600))).await);
    }
    for _ in 0..3 {
        assert_retry_later(
            upgrade(&gw, &gw.token("hoarder", 3600), &[]).await,
            429,
            "too_many_connections",
        );
    }
    assert_eq!(gw.metric(&attempts("too_many_per_subject")).await, 3.0);
    assert_eq!(gw.metric("gateway_connections_open").await, 17.0);
    assert_push_within_1s(&gw, &mut good, 1).await;
    gw.client_at(&gw.ws_url(&gw.token("someone-else", 3600)))
        .await;

    held.pop();
    admitted_within_5s(&gw, "hoarder", 429).await;
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_gets_400_before_its_token_is_looked_at() {
    let gw = TestGateway::start(&[]).await;
    let valid = gw.token("wallet", 3600);
    for token in ["garbage", "a.b.c", valid.as_str()] {
        let (status, body) = gw
            .raw("GET", &format!("/v1?token={token}"), None, None)
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let (status, body) = gw.raw("GET", "/v1", Some("not-a-token"), None).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    assert_eq!(gw.metric(&attempts("bad_request")).await, 4.0);
    for reason in ["malformed", "missing", "bad_signature"] {
        let series = format!(r#"gateway_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(gw.metric(&series).await, 0.0, "{series}");
    }
}

#[tokio::test]
async fn an_upgrade_from_an_origin_not_allowed_gets_403() {
    let gw = TestGateway::start(&[(
        "GATEWAY__SERVER__ALLOWED_ORIGINS",
        "https://wallet.example, chrome-extension://nkbihfbeogaeaoehlefnkodbefgpgknn",
    )])
    .await;
    let token = gw.token("wallet", 3600);
    for origin in [
        "https://evil.example",
        "https://wallet.example.evil.example",
        "http://wallet.example",
        "null",
    ] {
        let refusal = assert_refused(
            upgrade(&gw, &token, &[("origin", origin)]).await,
            403,
            "origin_not_allowed",
        );
        assert_eq!(refusal.retry_after, None);
    }
    // The origin is checked before the token.
    assert_refused(
        upgrade(&gw, "garbage", &[("origin", "https://evil.example")]).await,
        403,
        "origin_not_allowed",
    );
    assert_eq!(gw.metric(&attempts("origin_not_allowed")).await, 5.0);

    let mut allowed = Vec::new();
    for origin in [
        "https://wallet.example",
        "https://Wallet.Example",
        "chrome-extension://nkbihfbeogaeaoehlefnkodbefgpgknn",
    ] {
        allowed.push(
            upgrade(&gw, &token, &[("origin", origin)])
                .await
                .unwrap_or_else(|r| panic!("{origin} refused: {r:?}")),
        );
    }
    // Clients that are not browsers send no Origin.
    let mut good = well_behaved(&gw, &[]).await;
    assert_push_within_1s(&gw, &mut good, 1).await;
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let mut gw = TestGateway::start(&[("GATEWAY__SERVER__DRAIN_WINDOW", "60s")]).await;
    // Sessions for the drain to wait on: each is closed at a random point of 48 s.
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(
            gw.client_at(&gw.ws_url(&gw.token(&format!("w{n}"), 3600)))
                .await,
        );
    }
    let pid = Pid::from_raw(gw.pid());
    kill(pid, Signal::SIGTERM).unwrap();
    wait_until(Duration::from_secs(5), "draining", || async {
        gw.get("/readyz").await.0 == 503
    })
    .await;
    let refusal = assert_refused(
        upgrade(&gw, &gw.token("late", 3600), &[]).await,
        503,
        "draining",
    );
    assert!(
        refusal.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After: {:?}",
        refusal.retry_after
    );

    kill(pid, Signal::SIGTERM).unwrap();
    let second = Instant::now();
    let exit = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(5),
            "still running 5 s after the second SIGTERM (drain window 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    for mut c in held {
        assert_eq!(c.closed(Duration::from_secs(2)).await, Ended::Dropped);
    }
}
