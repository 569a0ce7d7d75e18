//! Validates the deployment kit without a container engine: the Dockerfile, docker-compose.yml,
//! the Kubernetes manifests, the Prometheus configuration and alert rules, the nginx load
//! balancer and the Grafana dashboard.
//!
//! - every YAML file under deploy/ and docker-compose.yml parses, and the dashboard JSON too;
//! - the pieces agree with each other (compose services, scrape targets, nginx upstreams, mounted
//!   files, Service/PDB/HPA/ServiceMonitor selectors, ConfigMap/Secret names, the
//!   PrometheusRule and deploy/prometheus/alerts.yml, grace periods longer than the drain);
//! - every `gateway_*` metric the dashboard, the alerts and the HPA use is in `/metrics`;
//! - the binary runs with exactly the environment the compose file gives a replica (two
//!   replicas on one PostgreSQL database), with the Dockerfile's ENV, ENTRYPOINT/CMD and
//!   HEALTHCHECK, and with the Deployment's args, the ConfigMap's TOML and the Secret's keys,
//!   and becomes ready; SIGTERM then ends it with exit code 0 within the drain window.
//!
//! Service host names are replaced by 127.0.0.1, the listen address by a loopback port, and
//! the PostgreSQL URL by a fresh database on the local server (127.0.0.1:5432).
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::Store;
use common::{aa, activity, TestGateway, ADDR_A};
use serde::Deserialize;
use serde_json::{json, Value};

/// Metrics that the dashboard and the alerts use but that a single node without NATS does not
/// export: added by the cluster work (NATS broker and JetStream ingest, issue 4).
/// Both are checked on the compose replicas, which run with the broker and JetStream ingest.
const PENDING_METRICS: &[&str] = &["gateway_broker_connected", "gateway_ingest_messages_total"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = serde_norway::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
        if v.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(&v).unwrap_or_else(|e| panic!("{rel}: {e}")));
    }
    assert!(!docs.is_empty(), "{rel} is empty");
    docs
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one document");
    docs.remove(0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel_path(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

fn dur(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("duration {s:?}: {e}"))
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// `gateway_*` identifiers in a PromQL expression.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut token = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            if token.starts_with("gateway_") {
                out.insert(std::mem::take(&mut token));
            }
            token.clear();
        }
    }
}

/// Every `expr` string anywhere in a JSON value.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// Compose variable interpolation: `${NAME:-default}` and `${NAME-default}` take the default
/// (the test does not read the caller's environment), `$$` is a literal `$`.
fn interpolate(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {v}"));
            let inner = &r[..end];
            let default = inner
                .split_once(":-")
                .or_else(|| inner.split_once('-'))
                .map(|(_, d)| d)
                .unwrap_or_else(|| panic!("{v}: ${{{inner}}} has no default for a local run"));
            out.push_str(default);
            rest = &r[end + 1..];
        } else {
            panic!("{v}: use ${{NAME}} syntax");
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// A gateway process started by this test, killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    _cwd: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    async fn get(&self, path: &str) -> u16 {
        match reqwest::get(format!("http://{}{path}", self.addr)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn wait_ready(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let code = self.get("/readyz").await;
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: /readyz is {code} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; the process must exit 0 within `within`.
    fn terminate(mut self, within: Duration, what: &str) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{what}: exit status after SIGTERM: {status}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still running {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts the binary with exactly `args` and `env` (and PATH), in an empty working directory.
/// Ok once it prints `listening on`; Err(stderr) if it exits first.
fn spawn(args: &[String], env: &BTreeMap<String, String>) -> Result<Proc, String> {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gateway");
    let rx = common::watch_listening(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let err = Arc::new(Mutex::new(String::new()));
    let err_w = err.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            err_w
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((addr, _)) = rx.try_recv() {
            return Ok(Proc {
                child,
                addr: addr.parse().expect("addr"),
                _cwd: cwd,
            });
        }
        if child.try_wait().unwrap().is_some() {
            std::thread::sleep(Duration::from_millis(100));
            return Err(err.lock().unwrap().clone());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no `listening on` within 30 s; stderr: {}",
                err.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrites a PostgreSQL URL of the kit to the local test database, checking its shape.
fn local_pg(url: &str, store: &Store) -> String {
    assert!(url.starts_with("postgres://"), "storage url: {url}");
    assert!(url.contains('@'), "storage url without credentials: {url}");
    store.url.clone()
}

// ---------------------------------------------------------------------------------------
// Dockerfile

struct Dockerfile {
    instructions: Vec<(String, String)>,
}

impl Dockerfile {
    fn load() -> Self {
        let text = read("Dockerfile");
        let mut instructions = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let t = line.trim();
            if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
                continue;
            }
            if let Some(body) = t.strip_suffix('\\') {
                cur.push_str(body);
                cur.push(' ');
                continue;
            }
            cur.push_str(t);
            let (ins, rest) = cur.split_once(char::is_whitespace).unwrap();
            instructions.push((ins.to_uppercase(), rest.trim().to_owned()));
            cur.clear();
        }
        Dockerfile { instructions }
    }

    fn all(&self, ins: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == ins)
            .map(|(_, r)| r.as_str())
            .collect()
    }

    fn last(&self, ins: &str) -> &str {
        self.all(ins)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("no {ins}"))
    }

    /// The runtime stage's instructions (after the last FROM).
    fn runtime(&self) -> Dockerfile {
        let start = self
            .instructions
            .iter()
            .rposition(|(i, _)| i == "FROM")
            .unwrap();
        Dockerfile {
            instructions: self.instructions[start..].to_vec(),
        }
    }

    /// `ENV K=V K2=V2` pairs of the runtime stage.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for e in self.runtime().all("ENV") {
            for pair in e.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV: use K=V: {e}"));
                env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        env
    }

    fn exec_form(&self, ins: &str) -> Vec<String> {
        serde_json::from_str(self.runtime().last(ins))
            .unwrap_or_else(|e| panic!("{ins} must use the exec (JSON) form: {e}"))
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_healthcheck() {
    let df = Dockerfile::load();
    let froms = df.all("FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].starts_with("rust:1-bookworm") && froms[0].to_lowercase().contains(" as builder"),
        "{froms:?}"
    );
    assert!(
        froms.last().unwrap().starts_with("debian:bookworm-slim"),
        "{froms:?}"
    );
    let runs = df.all("RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    let rt = df.runtime();
    assert!(rt.all("RUN").join(" ").contains("ca-certificates"));
    assert!(rt
        .all("RUN")
        .join(" ")
        .contains("/var/lib/activity-gateway"));
    let user = rt.last("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
    assert_eq!(rt.last("EXPOSE"), "8080");
    assert_eq!(rt.last("STOPSIGNAL"), "SIGTERM");
    let entry = df.exec_form("ENTRYPOINT");
    assert!(entry[0].ends_with("/activity-gateway"), "{entry:?}");
    assert!(
        entry
            .iter()
            .chain(&df.exec_form("CMD"))
            .any(|a| a == "serve"),
        "ENTRYPOINT/CMD must run `serve`"
    );
    let env = df.env();
    assert_eq!(env["GATEWAY__SERVER__LISTEN"], "0.0.0.0:8080");
    assert_eq!(
        env["GATEWAY__STORAGE__URL"],
        "sqlite:///var/lib/activity-gateway/gateway.db"
    );
    let hc = rt.last("HEALTHCHECK");
    assert!(
        hc.contains("CMD ["),
        "HEALTHCHECK must use the exec form: {hc}"
    );
    assert!(!hc.contains("curl") && !hc.contains("wget"), "{hc}");
    let ignore = read(".dockerignore");
    assert!(ignore
        .lines()
        .any(|l| l.trim().trim_end_matches('/') == "target"));
}

/// The image's command, with the Dockerfile's ENV (and nothing else) is a production start:
/// it refuses to start without keys and names what is missing; with the keys it becomes ready,
/// and the HEALTHCHECK command (run with the machine's bash) passes against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_env_entrypoint_and_healthcheck_work() {
    let df = Dockerfile::load();
    let data = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env = df.env();
    for v in env.values_mut() {
        *v = v
            .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
            .replace(
                "/var/lib/activity-gateway",
                &data.path().display().to_string(),
            );
    }
    env.insert("RUST_BACKTRACE".into(), "0".into());
    let mut args: Vec<String> = df.exec_form("ENTRYPOINT")[1..].to_vec();
    args.extend(df.exec_form("CMD"));

    let err = spawn(&args, &env)
        .err()
        .expect("without keys the image must refuse to start (not dev mode)");
    assert!(
        err.contains("GATEWAY__AUTH__HS256_SECRET") || err.contains("auth."),
        "{err}"
    );

    env.insert("GATEWAY__AUTH__HS256_SECRET".into(), "s3cret".into());
    env.insert("GATEWAY__PUBLISH__API_KEYS".into(), "pub-1".into());
    env.insert("GATEWAY__ADMIN__API_KEYS".into(), "adm-1".into());
    let gw = spawn(&args, &env).unwrap_or_else(|e| panic!("image env + keys: {e}"));
    assert_eq!(gw.addr.port(), port);
    gw.wait_ready("Dockerfile env").await;
    assert!(
        data.path().join("gateway.db").exists(),
        "the SQLite history goes to the data directory"
    );

    let hc = df.runtime().last("HEALTHCHECK").to_owned();
    let cmd: Vec<String> = serde_json::from_str(&hc[hc.find("CMD [").unwrap() + 4..]).unwrap();
    assert_eq!(cmd[0], "bash", "{cmd:?}");
    let run_hc = |port: u16| {
        let argv: Vec<String> = cmd
            .iter()
            .map(|a| a.replace("127.0.0.1/8080", &format!("127.0.0.1/{port}")))
            .collect();
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("bash");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(run_hc(port), "HEALTHCHECK fails against a live gateway");
    drop(gw);
    assert!(!run_hc(port), "HEALTHCHECK passes with nothing listening");
}

// ---------------------------------------------------------------------------------------
// YAML and JSON parse

#[test]
fn every_manifest_and_the_dashboard_parse() {
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    files.push(root().join("docker-compose.yml"));
    let mut yamls = 0;
    for f in &files {
        let rel = rel_path(f);
        match f.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                yaml_docs(&rel);
                yamls += 1;
            }
            Some("json") => {
                serde_json::from_str::<Value>(&read(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
            _ => {}
        }
    }
    assert!(yamls >= 14, "{yamls} YAML files");
}

// ---------------------------------------------------------------------------------------
// Dashboard, alerts and metrics

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/activity-gateway.json")).unwrap()
}

fn alert_groups() -> Value {
    yaml("deploy/prometheus/alerts.yml")["groups"].clone()
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "activity-gateway");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["name"] == "datasource"));
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate id: {p}");
        assert!(p["gridPos"]["w"].as_i64().unwrap() > 0);
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().unwrap());
            continue;
        }
        titles.push(s(&p["title"]).to_owned());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(!s(&t["expr"]).is_empty());
        }
    }
    let mut used = Vec::new();
    exprs(&d, &mut used);
    let used = used.join("\n");
    for must in [
        "gateway_connections_open",
        "gateway_subscriptions_active",
        "gateway_channels_active",
        "gateway_publications_total",
        "gateway_notifications_delivered_total",
        "histogram_quantile(0.5, sum by (le) (rate(gateway_delivery_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(gateway_delivery_latency_seconds_bucket",
        "gateway_acks_total",
        "gateway_redeliveries_total",
        "gateway_slow_consumer_disconnects_total",
        "sum by (reason) (rate(gateway_auth_failures_total",
        "gateway_chain_status",
        "gateway_store_available",
        "gateway_broker_connected",
    ] {
        assert!(used.contains(must), "dashboard lacks {must}");
    }
}

#[test]
fn alert_rules_are_well_formed_and_shipped_to_kubernetes_identically() {
    let groups = alert_groups();
    let mut names = BTreeSet::new();
    for g in groups.as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = s(&r["alert"]).to_owned();
            assert!(names.insert(name.clone()), "duplicate {name}");
            assert!(!s(&r["expr"]).trim().is_empty(), "{name}");
            dur(s(&r["for"]));
            assert!(
                ["warning", "critical"].contains(&s(&r["labels"]["severity"])),
                "{name}"
            );
            assert!(!s(&r["annotations"]["summary"]).is_empty(), "{name}");
        }
    }
    for must in [
        "GatewayChainDown",
        "GatewayDeliveryFailures",
        "GatewaySlowConsumerSpike",
        "GatewayAuthFailureSpike",
        "GatewayBrokerDown",
        "GatewayStoreUnavailable",
        "GatewayNotReady",
    ] {
        assert!(names.contains(must), "missing alert {must}");
    }
    let chain_down = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "GatewayChainDown")
        .unwrap();
    assert!(dur(s(&chain_down["for"])) >= Duration::from_secs(300));
    assert!(s(&chain_down["expr"]).contains("gateway_chain_status"));

    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"]["groups"], groups,
        "deploy/kubernetes/prometheusrule.yaml and deploy/prometheus/alerts.yml differ"
    );
}

/// Makes the gateway emit the series that appear only once something happens.
async fn exercise(gw: &TestGateway) {
    let ch = aa("eip155:0", ADDR_A);
    let ack_url = format!("{}&ack=1", gw.ws_url(&gw.token("wallet", 3600)));

    // A refused token (auth failure, unauthorized attempt).
    let bad = format!("ws://{}/v1?token=not-a-jwt", gw.addr);
    assert!(tokio_tungstenite::connect_async(bad.as_str())
        .await
        .is_err());
    // A refused publish.
    let (st, _) = gw
        .post(
            "/v1/publish",
            "wrong-key",
            json!({"channel": ch, "data": {}}),
        )
        .await;
    assert_eq!(st, 401);

    // An acking client and one that never acks (redelivery, then 4010).
    let mut acker = gw.client_at(&ack_url).await;
    let reply = acker.subscribe(&[&ch]).await;
    let start = reply["data"]["positions"][&ch].clone();
    assert!(start.is_object(), "{reply}");
    let mut silent = gw.client_at(&ack_url).await;
    silent.subscribe(&[&ch]).await;
    // A protocol error (an invalid channel in a subscribe).
    let r = acker.subscribe_as("bad", &["not-a-channel"]).await;
    assert_eq!(r["data"]["failed"], json!(["not-a-channel"]), "{r}");

    gw.heartbeat("eip155:8453").await;
    let (st, body) = gw
        .publish(json!({"channel": aa("eip155:8453", ADDR_A), "data": activity(ADDR_A, "eip155:8453", 1)}))
        .await;
    assert_eq!(st, 200, "{body}");
    let push = acker.next_push().await;
    acker
        .send(json!({"event": "ack", "data": {"messageIds": [push["messageId"]]}}))
        .await;
    silent.next_push().await;
    assert_eq!(silent.next_push().await["redelivered"], true);
    assert_eq!(
        silent.closed(Duration::from_secs(5)).await,
        common::Ended::Close(4010, "ack timeout".into())
    );

    // A resume from the position before the publication: recovered, one replayed.
    let mut resumer = gw.client_at(&ack_url).await;
    resumer
        .send(
            json!({"event": "subscribe", "data": {"requestId": "resume", "channels": [ch],
                     "positions": {ch.clone(): start}}}),
        )
        .await;
    let r = resumer.reply_to("resume").await;
    assert_eq!(r["data"]["recovery"][&ch]["recovered"], true, "{r}");
    let replayed = resumer.next_push().await;
    resumer
        .send(json!({"event": "ack", "data": {"messageIds": [replayed["messageId"]]}}))
        .await;
}

/// Metric names present in a Prometheus text exposition (sample lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_alerts_and_hpa_exists() {
    let mut used_exprs = Vec::new();
    exprs(&dashboard(), &mut used_exprs);
    exprs(&alert_groups(), &mut used_exprs);
    let mut used = BTreeSet::new();
    for e in &used_exprs {
        metric_names(e, &mut used);
    }
    let hpa = yaml("deploy/kubernetes/hpa.yaml");
    for m in hpa["spec"]["metrics"].as_array().unwrap() {
        if m["type"] == "Pods" {
            used.insert(s(&m["pods"]["metric"]["name"]).to_owned());
        }
    }
    assert!(used.len() >= 15, "{used:?}");

    let gw = TestGateway::start(&[
        ("GATEWAY__DELIVERY__ACK_TIMEOUT", "300ms"),
        ("GATEWAY__DELIVERY__MAX_RETRIES", "1"),
    ])
    .await;
    exercise(&gw).await;

    let wanted: Vec<&String> = used
        .iter()
        .filter(|m| !PENDING_METRICS.contains(&m.as_str()))
        .collect();
    // Series appear as their events are counted: poll until all are there (or 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let names = exported(&gw.get("/metrics").await.1);
        let missing: Vec<&String> = wanted
            .iter()
            .copied()
            .filter(|m| !names.contains(m.as_str()))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        missing.is_empty(),
        "used by the dashboard/alerts/HPA but not in /metrics: {missing:?}"
    );

    let names = exported(&gw.get("/metrics").await.1);
    for m in PENDING_METRICS {
        if names.contains(*m) {
            eprintln!("NOTE: {m} now exists: remove it from PENDING_METRICS");
        }
    }
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> Value {
    yaml("docker-compose.yml")
}

/// The gateway services: those built from this repository or running its image.
fn gateway_services(c: &Value) -> Vec<(String, Value)> {
    c["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, svc)| {
            svc.get("build").is_some()
                || svc["image"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("activity-gateway"))
        })
        .map(|(n, svc)| (n.clone(), svc.clone()))
        .collect()
}

fn compose_env(svc: &Value) -> BTreeMap<String, String> {
    svc["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), interpolate(&v))
        })
        .collect()
}

#[test]
fn compose_services_fit_together() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let gateways = gateway_services(&c);
    assert!(gateways.len() >= 2, "two gateway replicas");
    let nats = &services["nats"];
    assert!(
        nats["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "-js" || a == "--jetstream"),
        "NATS with JetStream"
    );
    assert!(s(&services["postgres"]["image"]).starts_with("postgres"));
    for (name, svc) in &gateways {
        let env = compose_env(svc);
        let drain = dur(env
            .get("GATEWAY__SERVER__DRAIN_WINDOW")
            .map_or("10s", String::as_str));
        let grace = dur(s(&svc["stop_grace_period"]));
        assert!(
            grace > drain + Duration::from_secs(2),
            "{name}: stop_grace_period {grace:?} <= drain window {drain:?} + 2s"
        );
        assert!(
            env["GATEWAY__STORAGE__URL"].starts_with("postgres://")
                && env["GATEWAY__STORAGE__URL"].contains("@postgres:5432/"),
            "{name}: shared PostgreSQL"
        );
        assert_eq!(env["GATEWAY__BROKER__URL"], "nats://nats:4222", "{name}");
        assert_eq!(env["GATEWAY__SERVER__DEV"], "false", "{name}");
        for key in [
            "GATEWAY__AUTH__HS256_SECRET",
            "GATEWAY__PUBLISH__API_KEYS",
            "GATEWAY__ADMIN__API_KEYS",
        ] {
            assert!(
                svc["environment"][key]
                    .as_str()
                    .is_some_and(|v| v.contains("${")),
                "{name}: {key} must come from the environment"
            );
        }
        assert_eq!(
            compose_env(svc),
            compose_env(&gateways[0].1),
            "replicas differ"
        );
    }

    // Prometheus scrapes every replica and loads the rules that are mounted.
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let targets: Vec<String> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["job_name"] == "activity-gateway")
        .flat_map(|j| j["static_configs"].as_array().unwrap().clone())
        .flat_map(|sc| sc["targets"].as_array().unwrap().clone())
        .map(|t| s(&t).to_owned())
        .collect();
    let nginx = read("deploy/nginx/nginx.conf");
    for (name, _) in &gateways {
        assert!(
            targets.contains(&format!("{name}:8080")),
            "Prometheus does not scrape {name}"
        );
        assert!(
            nginx.contains(&format!("server {name}:8080")),
            "nginx does not balance to {name}"
        );
    }
    for must in [
        "proxy_set_header Upgrade $http_upgrade",
        "proxy_set_header Connection $connection_upgrade",
        "proxy_http_version 1.1",
        "proxy_read_timeout",
    ] {
        assert!(nginx.contains(must), "nginx.conf lacks {must}");
    }
    assert_eq!(
        nginx.matches('{').count(),
        nginx.matches('}').count(),
        "nginx.conf braces"
    );

    // Every bind-mounted file exists, and the mounts agree with the configs that use them.
    let mut mounts = BTreeMap::new();
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = s(v);
            if let Some(src) = v.strip_prefix("./") {
                let (src, rest) = src.split_once(':').unwrap();
                let dst = rest.split(':').next().unwrap();
                assert!(root().join(src).exists(), "{name}: {src} does not exist");
                mounts.insert(dst.to_owned(), src.to_owned());
            }
        }
    }
    for rf in prom["rule_files"].as_array().unwrap() {
        assert_eq!(
            mounts.get(s(rf)).map(String::as_str),
            Some("deploy/prometheus/alerts.yml")
        );
    }
    assert_eq!(
        mounts.get("/etc/nginx/nginx.conf").map(String::as_str),
        Some("deploy/nginx/nginx.conf")
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/activity-gateway.yml");
    let dash_dir = s(&provider["providers"][0]["options"]["path"]).to_owned();
    assert_eq!(
        mounts
            .get(&format!("{dash_dir}/activity-gateway.json"))
            .map(String::as_str),
        Some("deploy/grafana/activity-gateway.json")
    );
    assert_eq!(
        mounts.get("/etc/grafana/provisioning").map(String::as_str),
        Some("deploy/grafana/provisioning")
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
}

/// Both replicas, with exactly the compose environment (service hosts -> 127.0.0.1, a fresh
/// database on the local PostgreSQL), start together on one database, become ready, and exit
/// 0 on SIGTERM within the drain window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_replicas_run_with_their_environment() {
    let c = compose();
    let store = Store::postgres().await;
    let hosts: Vec<String> = c["services"].as_object().unwrap().keys().cloned().collect();
    let mut procs = Vec::new();
    let mut drain = Duration::from_secs(10);
    for (name, svc) in gateway_services(&c) {
        let mut env = compose_env(&svc);
        for v in env.values_mut() {
            for h in &hosts {
                *v = v
                    .replace(&format!("//{h}:"), "//127.0.0.1:")
                    .replace(&format!("@{h}:"), "@127.0.0.1:");
            }
        }
        let url = env["GATEWAY__STORAGE__URL"].clone();
        assert!(url.contains("@127.0.0.1:5432/"), "{url}");
        env.insert("GATEWAY__STORAGE__URL".into(), local_pg(&url, &store));
        assert_eq!(env["GATEWAY__SERVER__LISTEN"], "0.0.0.0:8080");
        env.insert("GATEWAY__SERVER__LISTEN".into(), "127.0.0.1:0".into());
        env.insert("RUST_BACKTRACE".into(), "0".into());
        if let Some(d) = env.get("GATEWAY__SERVER__DRAIN_WINDOW") {
            drain = dur(d);
        }
        // The image's command (ENTRYPOINT + CMD).
        let df = Dockerfile::load();
        let mut args: Vec<String> = df.exec_form("ENTRYPOINT")[1..].to_vec();
        args.extend(df.exec_form("CMD"));
        let what = format!("compose {name}");
        let p = spawn(&args, &env)
            .unwrap_or_else(|stderr| panic!("{what}: the gateway did not start:\n{stderr}"));
        procs.push((what, p));
    }
    for (what, p) in &procs {
        p.wait_ready(what).await;
        assert_eq!(p.get("/healthz").await, 200, "{what}");
        // Cluster mode: each replica is connected to NATS (the dashboard and the alerts rely
        // on this gauge).
        let text = reqwest::get(format!("http://{}/metrics", p.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.lines().any(|l| l == "gateway_broker_connected 1"),
            "{what}: no `gateway_broker_connected 1` in /metrics"
        );
        assert!(
            exported(&text).contains("gateway_ingest_messages_total"),
            "{what}: JetStream ingest is configured but its metric is not exported"
        );
    }
    for (what, p) in procs {
        p.terminate(drain + Duration::from_secs(3), &what);
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes

struct Kube {
    docs: BTreeMap<String, Value>,
}

impl Kube {
    fn load() -> Self {
        let mut docs = BTreeMap::new();
        let mut files = Vec::new();
        files_under(&root().join("deploy/kubernetes"), &mut files);
        for f in files {
            for d in yaml_docs(&rel_path(&f)) {
                let kind = s(&d["kind"]).to_owned();
                assert!(d["apiVersion"].is_string(), "{kind}: apiVersion");
                assert!(d["metadata"]["name"].is_string(), "{kind}: name");
                assert!(docs.insert(kind.clone(), d).is_none(), "two {kind}s");
            }
        }
        Kube { docs }
    }

    fn get(&self, kind: &str) -> &Value {
        self.docs
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} under deploy/kubernetes"))
    }

    fn name(&self, kind: &str) -> &str {
        s(&self.get(kind)["metadata"]["name"])
    }

    fn container(&self) -> &Value {
        &self.get("Deployment")["spec"]["template"]["spec"]["containers"][0]
    }

    fn toml(&self) -> String {
        s(&self.get("ConfigMap")["data"]["gateway.toml"]).to_owned()
    }

    /// `drain_window` from the ConfigMap (default 10s).
    fn drain_window(&self) -> Duration {
        self.toml()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "drain_window").then(|| dur(v.trim().trim_matches('"')))
            })
            .unwrap_or(Duration::from_secs(10))
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_fit_together() {
    let k = Kube::load();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "Ingress",
    ] {
        k.get(kind);
    }
    assert_eq!(
        k.get("ServiceMonitor")["apiVersion"],
        "monitoring.coreos.com/v1"
    );

    // kustomization: every manifest listed, every listed file present.
    let kust = yaml("deploy/kustomization.yaml");
    let listed: BTreeSet<String> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(r).to_owned())
        .collect();
    let mut files = Vec::new();
    files_under(&root().join("deploy/kubernetes"), &mut files);
    for f in &files {
        let rel = f
            .strip_prefix(root().join("deploy"))
            .unwrap()
            .display()
            .to_string();
        assert!(listed.contains(&rel), "kustomization.yaml lacks {rel}");
    }
    for r in &listed {
        assert!(root().join("deploy").join(r).exists(), "{r}");
    }
    for g in kust["configMapGenerator"].as_array().into_iter().flatten() {
        for f in g["files"].as_array().unwrap() {
            assert!(root().join("deploy").join(s(f)).exists(), "{f}");
        }
    }

    let dep = k.get("Deployment");
    let pod = &dep["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(labels_match(
        &dep["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let c = k.container();
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == 8080)
        .expect("containerPort 8080");
    let port_name = s(&port["name"]);
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("preStop exec");
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop = Duration::from_secs(s(&pre_stop[1]).parse().unwrap());
    let grace = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    assert!(
        grace > pre_stop + k.drain_window() + Duration::from_secs(2),
        "terminationGracePeriodSeconds {grace:?} <= preStop {pre_stop:?} + drain {:?} + 2s",
        k.drain_window()
    );
    let psc = &pod["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_ne!(psc["runAsUser"], 0);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (s(&m["mountPath"]), s(&m["name"])))
        .collect();
    assert!(
        mounts.contains_key("/var/lib/activity-gateway"),
        "a writable data directory under the read-only root"
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let config_arg = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(s)
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config in args");
    let config_dir = Path::new(config_arg).parent().unwrap().to_str().unwrap();
    let config_vol = volumes
        .iter()
        .find(|v| v["name"] == mounts[config_dir])
        .unwrap();
    assert_eq!(config_vol["configMap"]["name"], k.name("ConfigMap"));
    assert!(k.get("ConfigMap")["data"]
        .get(Path::new(config_arg).file_name().unwrap().to_str().unwrap())
        .is_some());
    assert!(c["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["secretRef"]["name"] == k.name("Secret")));

    let svc = k.get("Service");
    assert!(labels_match(&svc["spec"]["selector"], pod_labels));
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["targetPort"], port_name);
    let pdb = k.get("PodDisruptionBudget");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let hpa = k.get("HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], k.name("Deployment"));
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let sm = k.get("ServiceMonitor");
    assert!(labels_match(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc_port["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // The Ingress terminates TLS for its host and routes only /v1 to the Service's port, with
    // proxy timeouts longer than the ping interval.
    let ing = k.get("Ingress");
    assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
    let tls = &ing["spec"]["tls"][0];
    assert!(
        !s(&tls["secretName"]).is_empty(),
        "the Ingress names its TLS Secret"
    );
    let rule = &ing["spec"]["rules"][0];
    assert!(
        tls["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == &rule["host"]),
        "the TLS hosts cover the rule's host"
    );
    let paths = rule["http"]["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "only /v1 is public");
    assert_eq!(paths[0]["path"], "/v1");
    assert_eq!(paths[0]["pathType"], "Prefix");
    let backend = &paths[0]["backend"]["service"];
    assert_eq!(backend["name"], k.name("Service"));
    assert_eq!(backend["port"]["name"], svc_port["name"]);
    let annotations = &ing["metadata"]["annotations"];
    for timeout in ["proxy-read-timeout", "proxy-send-timeout"] {
        let secs: u64 = s(&annotations[format!("nginx.ingress.kubernetes.io/{timeout}")])
            .parse()
            .unwrap();
        assert!(
            secs > 30,
            "{timeout} {secs}s is not above server.ping_interval"
        );
    }

    let secret = k.get("Secret");
    for (key, v) in secret["stringData"].as_object().unwrap() {
        assert!(key.starts_with("GATEWAY__"), "{key}");
        assert!(s(v).contains("CHANGE-ME"), "{key}: a placeholder value");
    }
}

/// The Deployment's args with the ConfigMap's TOML as --config and the Secret's keys as the
/// environment (on top of the image's ENV): the binary accepts every key and becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_config_and_secret_run() {
    let k = Kube::load();
    let store = Store::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("gateway.toml");
    let toml = k.toml().replace("nats.nats.svc.cluster.local", "127.0.0.1");
    std::fs::write(&toml_path, &toml).unwrap();

    let mut env = Dockerfile::load().env();
    for (key, v) in k.get("Secret")["stringData"].as_object().unwrap() {
        env.insert(key.clone(), s(v).to_owned());
    }
    for e in k.container()["env"].as_array().into_iter().flatten() {
        env.insert(s(&e["name"]).to_owned(), s(&e["value"]).to_owned());
    }
    let url = env["GATEWAY__STORAGE__URL"].clone();
    env.insert("GATEWAY__STORAGE__URL".into(), local_pg(&url, &store));
    env.insert("GATEWAY__SERVER__LISTEN".into(), "127.0.0.1:0".into());
    env.insert("RUST_BACKTRACE".into(), "0".into());
    let args: Vec<String> = k.container()["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            s(a).replace(
                "/etc/activity-gateway/gateway.toml",
                &toml_path.display().to_string(),
            )
        })
        .collect();
    let p = spawn(&args, &env).unwrap_or_else(|stderr| {
        panic!("Kubernetes ConfigMap: the gateway did not start:\n{stderr}")
    });
    p.wait_ready("Kubernetes ConfigMap").await;
    p.terminate(k.drain_window() + Duration::from_secs(3), "Kubernetes pod");
}

#[test]
fn interpolation_and_metric_name_helpers() {
    assert_eq!(interpolate("a${X:-b}c$$"), "abc$");
    let mut m = BTreeSet::new();
    metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(gateway_x_bucket[5m]))) > gateway_y",
        &mut m,
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["gateway_x_bucket", "gateway_y"]
    );
}
