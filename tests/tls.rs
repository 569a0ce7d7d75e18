//! `wss://` served directly (`server.tls`), with certificates generated here: a wallet
//! connects and gets pushes over TLS, plain `ws://` gets nothing, and a renewed certificate is
//! picked up on SIGHUP or when its files change, with no restart; a broken one is ignored.
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::Connector;

/// A self-signed certificate for `127.0.0.1` and `localhost`, written to `dir` as
/// `cert.pem` and `key.pem` (replacing what is there).
struct Cert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Cert {
    fn generate() -> Cert {
        let generated =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("certificate");
        Cert {
            der: generated.cert.der().clone(),
            cert_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
        }
    }

    fn install(&self, dir: &Path) {
        // The key first: the certificate's change is the one a reload waits for.
        std::fs::write(dir.join("key.pem"), &self.key_pem).expect("write key");
        std::fs::write(dir.join("cert.pem"), &self.cert_pem).expect("write cert");
    }
}

/// A gateway serving TLS with the files in `dir`.
async fn tls_gateway(dir: &Path, reload_interval: &str) -> TestGateway {
    let path = |name: &str| -> String { dir.join(name).display().to_string() };
    TestGateway::start(&[
        ("GATEWAY__SERVER__TLS__CERT_PATH", &path("cert.pem")),
        ("GATEWAY__SERVER__TLS__KEY_PATH", &path("key.pem")),
        ("GATEWAY__SERVER__TLS__RELOAD_INTERVAL", reload_interval),
    ])
    .await
}

/// A TLS client that trusts only `cert`.
fn trusting(cert: &Cert) -> Connector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("trust anchor");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

fn wss_url(gw: &TestGateway) -> String {
    format!(
        "wss://127.0.0.1:{}/v1?token={}",
        gw.addr.port(),
        gw.token("wallet", 3600)
    )
}

/// Connects over `wss://` trusting only `cert`; the client after `session-created`, or the
/// connection error.
async fn connect_trusting(gw: &TestGateway, cert: &Cert) -> Result<WsClient, String> {
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        wss_url(gw),
        None,
        false,
        Some(trusting(cert)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut client = WsClient { ws };
    let hello = client.recv().await;
    assert_eq!(hello["event"], "session-created", "{hello}");
    Ok(client)
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test]
async fn a_wallet_gets_its_pushes_over_wss_and_plain_ws_gets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = Cert::generate();
    cert.install(dir.path());
    let gw = tls_gateway(dir.path(), "1h").await;

    let mut wallet = connect_trusting(&gw, &cert).await.expect("wss connect");
    wallet
        .subscribe(&[&format!("account-activity.v1.eip155:0:{ADDR_A}")])
        .await;
    let publish = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let status = publish
        .post(format!("https://127.0.0.1:{}/v1/publish", gw.addr.port()))
        .bearer_auth(&gw.publisher_key)
        .json(&serde_json::json!({"channel": aa("eip155:1", ADDR_A), "data": activity(ADDR_A, "eip155:1", 1)}))
        .send()
        .await
        .expect("https publish")
        .status();
    assert_eq!(status.as_u16(), 200);
    let push = wallet.next_push().await;
    assert_eq!(push["channel"], aa("eip155:1", ADDR_A), "{push}");

    // Plain ws:// on the TLS port: no upgrade, no frame.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(gw.ws_url(&gw.token("wallet", 3600))),
    )
    .await
    .expect("a plain connection is ended within the handshake timeout");
    assert!(plain.is_err(), "plain ws:// was upgraded on the TLS port");

    // A client that does not trust the certificate is refused in the handshake.
    let stranger = Cert::generate();
    let err = connect_trusting(&gw, &stranger)
        .await
        .err()
        .expect("an untrusted certificate was accepted");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_sighup_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Cert::generate();
    old.install(dir.path());
    // A period too long to matter: only the signal can cause the reload here.
    let gw = tls_gateway(dir.path(), "1h").await;
    let mut kept = connect_trusting(&gw, &old).await.expect("old certificate");

    let new = Cert::generate();
    new.install(dir.path());
    // Not before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(connect_trusting(&gw, &new).await.is_err());
    kill(Pid::from_raw(gw.pid()), Signal::SIGHUP).expect("SIGHUP");
    wait_until(
        Duration::from_secs(10),
        "the new certificate is served",
        || async { connect_trusting(&gw, &new).await.is_ok() },
    )
    .await;
    assert!(
        connect_trusting(&gw, &old).await.is_err(),
        "the old certificate is still served"
    );
    // The connection made with the old certificate lives on.
    kept.subscribe(&[&format!("account-activity.v1.eip155:0:{ADDR_B}")])
        .await;

    // A certificate whose key does not match, then one that is not PEM: the gateway keeps
    // serving the last good one.
    let (cert_path, key_path) = files(dir.path());
    std::fs::write(&cert_path, Cert::generate().cert_pem).unwrap();
    kill(Pid::from_raw(gw.pid()), Signal::SIGHUP).expect("SIGHUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&key_path, "not a key").unwrap();
    kill(Pid::from_raw(gw.pid()), Signal::SIGHUP).expect("SIGHUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    connect_trusting(&gw, &new)
        .await
        .expect("the last good certificate is kept");
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Cert::generate();
    old.install(dir.path());
    let gw = tls_gateway(dir.path(), "200ms").await;
    connect_trusting(&gw, &old).await.expect("old certificate");

    let new = Cert::generate();
    new.install(dir.path());
    wait_until(
        Duration::from_secs(10),
        "the new certificate is served",
        || async { connect_trusting(&gw, &new).await.is_ok() },
    )
    .await;
}

#[test]
fn a_half_tls_configuration_or_a_missing_file_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = files(dir.path());
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__AUTH__HS256_SECRET", "x".repeat(40))
            .env("GATEWAY__PUBLISH__API_KEYS", "pub")
            .env("GATEWAY__ADMIN__API_KEYS", "adm")
            .env(
                "GATEWAY__STORAGE__URL",
                format!("sqlite://{}/gateway.db", dir.path().display()),
            )
            .envs(env.iter().copied());
        let out = cmd.output().expect("run");
        assert!(!out.status.success(), "it started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = cert_path.display().to_string();
    let key = key_path.display().to_string();
    let err = run(&[("GATEWAY__SERVER__TLS__CERT_PATH", &cert)]);
    assert!(
        err.contains("server.tls.cert_path and server.tls.key_path must be set together"),
        "{err}"
    );
    let err = run(&[
        ("GATEWAY__SERVER__TLS__CERT_PATH", &cert),
        ("GATEWAY__SERVER__TLS__KEY_PATH", &key),
    ]);
    assert!(err.contains(&format!("cannot read {cert}")), "{err}");
}
