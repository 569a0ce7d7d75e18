//! Zero-configuration development mode, the refusal to start half-configured, and the
//! `token` subcommand, all through the real binary.
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// The binary with an empty environment (only PATH), in a fresh working directory (dev mode
/// keeps its SQLite history under `./data`).
fn bare() -> Command {
    let dir = std::env::temp_dir().join(format!("gw-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    cmd
}

/// The text after `prefix` on the banner line that contains it.
fn after<'a>(banner: &'a [String], prefix: &str) -> &'a str {
    banner
        .iter()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{}", banner.join("\n")))
}

/// Runs a command that must exit by itself; returns (status code, stdout, stderr).
fn run_to_exit(mut cmd: Command) -> (Option<i32>, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

#[tokio::test]
async fn dev_mode_prints_a_banner_whose_token_key_and_curl_work() {
    let mut cmd = bare();
    cmd.env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .args(["serve", "--dev"]);
    let (mut child, addr, banner) = spawn_capture(cmd);
    let text = banner.join("\n");
    assert!(text.contains("DEV MODE"), "{text}");
    let token = after(&banner, "client token (sub dev-wallet, 24h):");
    let publisher = after(&banner, "publisher key:");
    let admin = after(&banner, "admin key:");
    assert!(
        !token.is_empty() && !publisher.is_empty() && !admin.is_empty(),
        "{text}"
    );
    let subscribe: Value =
        serde_json::from_str(after(&banner, "subscribe with:")).expect("subscribe JSON");
    let curl = banner
        .iter()
        .find(|l| l.trim_start().starts_with("curl") && l.contains("/v1/publish"))
        .unwrap_or_else(|| panic!("no publish curl in the banner:\n{text}"));
    assert!(
        curl.contains(&format!("http://{addr}/v1/publish")),
        "{curl}"
    );
    let curl_key = curl
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("key in curl");
    assert_eq!(curl_key, publisher);
    let body: Value = {
        let (_, rest) = curl.split_once(" -d '").expect("-d '…'");
        serde_json::from_str(rest.strip_suffix('\'').expect("closing quote"))
            .expect("curl body is JSON")
    };

    // The token connects; the printed subscribe works; the printed curl is delivered.
    let gw_http = reqwest::Client::new();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1?token={token}"))
        .await
        .expect("dev token connects");
    let mut c = WsClient { ws };
    assert_eq!(c.recv().await["event"], "session-created");
    c.send(subscribe.clone()).await;
    let reply = c
        .reply_to(subscribe["data"]["requestId"].as_str().unwrap())
        .await;
    assert_eq!(
        reply["data"]["succeeded"], subscribe["data"]["channels"],
        "{reply}"
    );
    let r = gw_http
        .post(format!("http://{addr}/v1/publish"))
        .bearer_auth(curl_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let push = c.next_push().await;
    assert_eq!(
        (push["channel"].clone(), push["data"].clone()),
        (body["channel"].clone(), body["data"].clone())
    );
    assert_eq!(push["subscriptionId"], reply["data"]["subscriptionId"]);

    // The admin key is an admin key, and the common chains are known.
    let r = gw_http
        .put(format!("http://{addr}/v1/chains/eip155:1/status"))
        .bearer_auth(admin)
        .json(&json!({"status": "up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let chains: Value = gw_http
        .get(format!("http://{addr}/v1/chains"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chains["chains"].as_array().unwrap().len(), 8, "{chains}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn with_nothing_configured_it_starts_in_dev_mode() {
    let mut cmd = bare();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.starts_with("listening on ");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("neither a banner nor an exit within 20 s");
    let text = lines.join("\n");
    if lines.last().is_some_and(|l| l.starts_with("listening on ")) {
        let _ = child.kill();
        let _ = child.wait();
        assert!(text.contains("DEV MODE"), "{text}");
        assert!(
            text.contains("client token")
                && text.contains("publisher key:")
                && text.contains("curl "),
            "{text}"
        );
        assert_eq!(lines.last().unwrap(), "listening on 127.0.0.1:8080");
    } else {
        // Port 8080 is taken here: dev mode was entered, and the bind error names the address.
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success());
        assert!(
            err.contains("127.0.0.1:8080"),
            "stdout:\n{text}\nstderr:\n{err}"
        );
    }
}

#[test]
fn a_partial_configuration_refuses_to_start_and_names_the_missing_key() {
    let mut cmd = bare();
    cmd.env("GATEWAY__PUBLISH__API_KEYS", "k1");
    let (code, out, err) = run_to_exit(cmd);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(
        !out.contains("listening on") && !out.contains("DEV MODE"),
        "{out}"
    );
    assert!(
        err.contains("auth.hs256_secret") && err.contains("--dev"),
        "{err}"
    );

    let mut cmd = bare();
    cmd.env("GATEWAY__AUTH__HS256_SECRET", "x".repeat(40))
        .env("GATEWAY__PUBLISH__API_KEYS", "k1");
    let (code, _, err) = run_to_exit(cmd);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(err.contains("admin.api_keys"), "{err}");

    // A configuration that cannot parse names its key too.
    let mut cmd = bare();
    cmd.env("GATEWAY__SERVER__IDLE_TIMEOUT", "soon");
    let (code, _, err) = run_to_exit(cmd);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(err.contains("idle_timeout"), "{err}");
}

#[tokio::test]
async fn the_token_subcommand_mints_a_token_that_connects() {
    let gw = TestGateway::start(&[]).await;
    let mut cmd = bare();
    cmd.env("GATEWAY__AUTH__HS256_SECRET", &gw.secret)
        .args(["token", "--sub", "alice"]);
    let (code, out, err) = run_to_exit(cmd);
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim();
    assert_eq!(token.lines().count(), 1, "{out}");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    let ttl = claims["exp"].as_i64().unwrap() - chrono_now();
    assert!((3590..=3600).contains(&ttl), "default ttl 1h, got {ttl}");

    let mut c = gw.client_at(&gw.ws_url(token)).await;
    assert_eq!(
        c.subscribe(&[&aa("eip155:0", ADDR_A)]).await["event"],
        "subscribed"
    );

    // Without a secret it says what to set.
    let mut cmd = bare();
    cmd.args(["token", "--sub", "alice"]);
    let (code, out, err) = run_to_exit(cmd);
    assert!(
        code.is_some_and(|c| c != 0) && out.is_empty(),
        "{code:?} {out}"
    );
    assert!(err.contains("GATEWAY__AUTH__HS256_SECRET"), "{err}");
}
