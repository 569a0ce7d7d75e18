//! The publish and admin HTTP API: keys and roles, body limits, validation of whole batches
//! (nothing is delivered when any item is invalid), JSON errors everywhere.
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn assert_api_error((status, body): (u16, Value), want_status: u16, code: &str) -> Value {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn json_body(v: &Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

#[tokio::test]
async fn keys_are_checked_and_roles_are_not_interchangeable() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let one = json!({"channel": aa("eip155:1", ADDR_A), "data": {"n": 1}});

    assert_api_error(
        gw.raw("POST", "/v1/publish", None, json_body(&one)).await,
        401,
        "unauthorized",
    );
    assert_api_error(
        gw.raw("POST", "/v1/publish", Some("wrong-key"), json_body(&one))
            .await,
        401,
        "unauthorized",
    );
    assert_api_error(
        gw.raw("POST", "/v1/publish", Some(&gw.admin_key), json_body(&one))
            .await,
        403,
        "forbidden",
    );
    assert_api_error(
        gw.raw(
            "POST",
            "/v1/chains/eip155:1/heartbeat",
            Some(&gw.admin_key),
            None,
        )
        .await,
        403,
        "forbidden",
    );
    assert_api_error(
        gw.raw("POST", "/v1/chains/eip155:1/heartbeat", None, None)
            .await,
        401,
        "unauthorized",
    );

    let status = json!({"status": "down"});
    let put = |key: Option<String>| {
        let gw = &gw;
        let status = &status;
        async move {
            gw.raw(
                "PUT",
                "/v1/chains/eip155:1/status",
                key.as_deref(),
                json_body(status),
            )
            .await
        }
    };
    assert_api_error(put(Some(gw.publisher_key.clone())).await, 403, "forbidden");
    assert_api_error(put(None).await, 401, "unauthorized");
    assert_api_error(put(Some("nope".into())).await, 401, "unauthorized");
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(put(Some(gw.admin_key.clone())).await.0, 200);

    // None of the refused publishes was delivered; the right key works.
    let (s, b) = gw.publish(one.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.next_push().await["data"], json!({"n": 1}));
    c.expect_no_push(Duration::from_millis(200)).await;
    assert_eq!(
        gw.metric(r#"gateway_publish_rejected_total{code="unauthorized"}"#)
            .await,
        2.0
    );
    assert_eq!(
        gw.metric(r#"gateway_publish_rejected_total{code="forbidden"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_json() {
    let gw = TestGateway::start(&[("GATEWAY__PUBLISH__MAX_BODY_BYTES", "2048")]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let big = json!({"channel": aa("eip155:1", ADDR_A), "data": {"pad": "x".repeat(4000)}});
    let body = assert_api_error(
        gw.raw(
            "POST",
            "/v1/publish",
            Some(&gw.publisher_key),
            json_body(&big),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert!(body["message"].as_str().unwrap().contains("2048"), "{body}");
    // Without a Content-Length (chunked) as well.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.publisher_key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        // The server may answer (and close) before taking the whole body.
        if tcp
            .write_all(format!("3e8\r\n{}\r\n", " ".repeat(1000)).as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains(r#""error":"payload_too_large""#), "{resp}");
    c.expect_silence(Duration::from_millis(200)).await;

    let small = json!({"channel": aa("eip155:1", ADDR_A), "data": {"pad": "x".repeat(1500)}});
    assert_eq!(gw.publish(small).await.0, 200);
    assert_eq!(
        c.next_push().await["data"]["pad"].as_str().unwrap().len(),
        1500
    );
}

#[tokio::test]
async fn bad_json_and_wrong_shapes_are_400_json() {
    let gw = TestGateway::start(&[]).await;
    let key = Some(gw.publisher_key.as_str());
    let raw = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    for body in [
        "{not json",
        "",
        "[]",
        "42",
        r#"{"publications": 5}"#,
        r#"{"publications": []}"#,
    ] {
        assert_api_error(
            gw.raw("POST", "/v1/publish", key, raw(body)).await,
            400,
            "invalid_publication",
        );
    }
    // A framework would answer 415 for a wrong content type; the API answers 400 JSON.
    assert_api_error(
        gw.raw(
            "POST",
            "/v1/publish",
            key,
            Some(("text/plain", b"nope".to_vec())),
        )
        .await,
        400,
        "invalid_publication",
    );
    // A single publication of the wrong shape lists itself as item 0.
    let body = assert_api_error(
        gw.publish(json!({"channel": aa("eip155:1", ADDR_A)})).await,
        400,
        "invalid_publication",
    );
    assert_eq!(
        body["errors"],
        json!([{"index": 0, "code": "invalid_data", "message": body["errors"][0]["message"]}])
    );
    let body = assert_api_error(
        gw.publish(json!({"channel": 5, "data": {}})).await,
        400,
        "invalid_publication",
    );
    assert_eq!(body["errors"][0]["code"], "invalid_channel");
    let body = assert_api_error(
        gw.publish(json!({"channel": aa("eip155:1", ADDR_A), "data": {}, "extra": 1}))
            .await,
        400,
        "invalid_publication",
    );
    assert_eq!(body["errors"][0]["code"], "invalid_publication");

    // The admin API's body is validated the same way.
    let put = |b: &'static str| {
        gw.raw(
            "PUT",
            "/v1/chains/eip155:1/status",
            Some(&gw.admin_key),
            Some(("application/json", b.as_bytes().to_vec())),
        )
    };
    for b in [
        "{",
        r#"{"status":"sideways"}"#,
        r#"{"status":"up","x":1}"#,
        "[]",
    ] {
        assert_api_error(put(b).await, 400, "invalid_request");
    }
}

#[tokio::test]
async fn a_batch_with_invalid_items_lists_every_one_and_delivers_nothing() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let good = |n: u64| json!({"channel": aa("eip155:8453", ADDR_A), "data": activity(ADDR_A, "eip155:8453", n)});
    let batch = json!({"publications": [
        good(0),
        {"channel": aa("eip155:0", ADDR_A), "data": {}},
        good(1),
        {"channel": "system-notifications.v1.account-activity.v1", "data": {"chainIds": ["eip155:1"], "status": "down"}},
        {"channel": aa("eip155:1", ADDR_A), "data": {"address": ADDR_B}},
        {"channel": "not-a-channel", "data": {}},
        {"channel": aa("eip155:1", ADDR_A), "data": {"requestId": "r"}},
        good(2),
    ]});
    let body = assert_api_error(gw.publish(batch).await, 400, "invalid_publication");
    let got: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            assert_eq!(e.as_object().unwrap().len(), 3, "{e}");
            (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "wildcard_chain"),
            (3, "reserved_channel"),
            (4, "address_mismatch"),
            (5, "invalid_channel"),
            (6, "reserved_field")
        ]
    );
    // Nothing at all reaches the client: no push, and no `up` either (nothing was published,
    // so it is no sign of life for eip155:8453).
    c.expect_silence(Duration::from_millis(400)).await;
    assert_eq!(
        gw.metric(r#"gateway_publications_total{namespace="account-activity.v1"}"#)
            .await,
        0.0
    );
    let (_, chains) = gw.get("/v1/chains/eip155:8453").await;
    assert_eq!(
        serde_json::from_str::<Value>(&chains).unwrap()["status"],
        "down"
    );

    // The same valid items alone go through, in order.
    let (s, body) = gw
        .publish(json!({"publications": [good(0), good(1), good(2)]}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["accepted"], 3);
    for n in 0..3 {
        assert_eq!(
            c.next_push().await["data"],
            activity(ADDR_A, "eip155:8453", n)
        );
    }
}

#[tokio::test]
async fn publishing_to_system_notifications_or_chain_zero_is_400() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    for ch in [
        "system-notifications.v1.account-activity.v1",
        "system-notifications.v1.market-data.v1",
    ] {
        let body = assert_api_error(
            gw.publish(
                json!({"channel": ch, "data": {"chainIds": ["eip155:1"], "status": "down"}}),
            )
            .await,
            400,
            "invalid_publication",
        );
        assert_eq!(body["errors"][0]["code"], "reserved_channel", "{body}");
    }
    let body = assert_api_error(
        gw.publish(
            json!({"channel": aa("eip155:0", ADDR_A), "data": activity(ADDR_A, "eip155:1", 1)}),
        )
        .await,
        400,
        "invalid_publication",
    );
    assert_eq!(
        body["errors"],
        json!([{"index": 0, "code": "wildcard_chain", "message": body["errors"][0]["message"]}])
    );
    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        gw.metric(r#"gateway_publish_rejected_total{code="invalid_publication"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn success_reports_what_was_accepted() {
    let gw = TestGateway::start(&[]).await;
    let mut c = gw.client().await;
    c.subscribe(&[&aa("eip155:0", ADDR_A)]).await;
    let upper = format!("0x{}", ADDR_A[2..].to_uppercase());
    let (s, body) = gw
        .publish(json!({"channel": aa("eip155:1", &upper), "data": {"address": upper, "n": 1}}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        body["publications"][0]["channel"],
        aa("eip155:1", ADDR_A),
        "canonical, lower-case: {body}"
    );

    let market = "market-data.v1.eip155:1/slip44:60.1m.usd";
    let (s, body) = gw
        .publish(json!({"publications": [
            {"channel": aa("eip155:137", ADDR_A), "data": {"n": 2}},
            {"channel": market, "data": {"timestamp": 1760099820, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 0}},
        ]}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    let channels: Vec<&Value> = body["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["channel"])
        .collect();
    assert_eq!(channels, [&json!(aa("eip155:137", ADDR_A)), &json!(market)]);

    let p = c.next_push().await;
    assert_eq!(
        (p["channel"].clone(), p["data"].clone()),
        (
            json!(aa("eip155:1", ADDR_A)),
            json!({"address": upper, "n": 1})
        )
    );
    assert_eq!(c.next_push().await["data"], json!({"n": 2}));
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let gw = TestGateway::start(&[]).await;
    assert_api_error(gw.raw("GET", "/nope", None, None).await, 404, "not_found");
    assert_api_error(
        gw.raw("POST", "/v1/publish/extra", Some(&gw.publisher_key), None)
            .await,
        404,
        "not_found",
    );
    assert_api_error(gw.raw("GET", "/v2", None, None).await, 404, "not_found");
}
