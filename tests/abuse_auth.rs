//! Keys and tokens a hostile party could abuse, through the real binary: a JWKS fetched over
//! plain http or without an audience refuses to start (saying what to change), and a token
//! claiming a life longer than `auth.max_token_lifetime` is refused at the upgrade, and a
//! refused NATS URL is reported without its password.
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The binary with a complete configuration except `auth`, plus `env`.
fn configured(env: &[(&str, &str)]) -> Command {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__PUBLISH__API_KEYS", "pub-key")
        .env("GATEWAY__ADMIN__API_KEYS", "adm-key")
        .env(
            "GATEWAY__STORAGE__URL",
            format!("sqlite://{}/gateway.db", dir.display()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a gateway that must refuse to start; returns its exit code and stderr.
fn refuses_to_start(mut cmd: Command) -> (Option<i32>, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status.code(), err)
}

#[test]
fn a_jwks_over_plain_http_to_another_host_refuses_to_start() {
    let (code, err) = refuses_to_start(configured(&[
        ("GATEWAY__AUTH__JWKS_URL", "http://issuer.example/jwks.json"),
        ("GATEWAY__AUTH__AUDIENCE", "activity-gateway"),
    ]));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(
        err.contains("auth.jwks_url must use https")
            && err.contains("loopback host (127.0.0.1, ::1, localhost)"),
        "{err}"
    );
}

#[test]
fn a_jwks_without_an_audience_refuses_to_start() {
    let (code, err) = refuses_to_start(configured(&[(
        "GATEWAY__AUTH__JWKS_URL",
        "https://issuer.example/jwks.json",
    )]));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(
        err.contains("auth.audience is required with auth.jwks_url"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_is_refused() {
    let gw = TestGateway::start(&[("GATEWAY__AUTH__MAX_TOKEN_LIFETIME", "2h")]).await;
    let now = chrono_now();
    let token = |claims: Value| gw.ws_url(&sign(&gw.secret, &claims));

    // Issued an hour ago for three hours: two left, but three in all.
    let (status, body) = refused(token(
        json!({"sub": "w", "iat": now - 3600, "exp": now + 7200}),
    ))
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "token_invalid", "{body}");
    // No `iat`, and three hours left.
    let (status, body) = refused(token(json!({"sub": "w", "exp": now + 3 * 3600}))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "token_invalid", "{body}");
    assert_eq!(
        gw.metric(r#"gateway_auth_failures_total{reason="lifetime_too_long"}"#)
            .await,
        2.0
    );

    // Exactly the maximum, and a token issued an hour ago with an hour left, connect.
    gw.client_at(&token(json!({"sub": "w", "iat": now, "exp": now + 7200})))
        .await;
    gw.client_at(&token(
        json!({"sub": "w", "iat": now - 3600, "exp": now + 3600}),
    ))
    .await;
}

#[tokio::test]
async fn the_default_maximum_is_a_day() {
    let gw = TestGateway::start(&[]).await;
    let now = chrono_now();
    let long = sign(
        &gw.secret,
        &json!({"sub": "w", "iat": now, "exp": now + 7 * 86_400}),
    );
    let (status, body) = refused(gw.ws_url(&long).as_str()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_invalid"))
    );
    gw.client_at(&gw.ws_url(&gw.token("w", 86_400))).await;
}

#[test]
fn a_nats_password_is_not_printed_when_its_url_is_refused() {
    let (code, err) = refuses_to_start(configured(&[
        ("GATEWAY__AUTH__HS256_SECRET", &"x".repeat(40)),
        (
            "GATEWAY__INGEST__JETSTREAM__URL",
            "nats://nats:4222, nats://ingest:hunter2-secret@bad host:4222",
        ),
    ]));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(err.contains("ingest.jetstream.url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
