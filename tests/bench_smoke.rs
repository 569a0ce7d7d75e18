//! A short run of the load generator against a spawned gateway, so the tool cannot rot:
//! a few hundred connections for a few seconds, zero loss, and a sane JSON report.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `gateway-bench <args>` against a fresh gateway and returns its JSON report.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .arg("--gateway-bin")
        .arg(env!("CARGO_BIN_EXE_activity-gateway"))
        .args(["--max-duration", "40s", "--json"])
        .arg(&json)
        .args(args)
        .output()
        .expect("run gateway-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gateway-bench failed\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("summary:"),
        "no readable summary:\n{stdout}"
    );
    read_json(&json)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

/// Every step delivered everything the gateway accepted, with plausible latencies.
fn assert_no_loss(r: &Value, connections: u64) {
    assert_eq!(r["connect"]["connected"], connections, "{r}");
    assert_eq!(r["connect"]["failed"], 0);
    assert!(r["aborted"].is_null(), "{}", r["aborted"]);
    let steps = r["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    for s in steps {
        let published = &s["published"];
        assert!(published["attempted"].as_u64() > Some(0), "{s}");
        assert_eq!(published["accepted"], published["attempted"], "{s}");
        assert_eq!(published["failed_requests"], 0, "{s}");
        assert_eq!(s["lost"], 0, "{s}");
        assert_eq!(s["delivered"], s["expected_deliveries"], "{s}");
        assert_eq!(s["connections_alive"], connections, "{s}");
        let p99 = s["latency"]["p99_ms"].as_f64().expect("p99");
        assert!(p99 > 0.0 && p99 < 5_000.0, "p99 {p99} ms");
        assert!(s["latency"]["p50_ms"].as_f64() <= Some(p99));
        assert!(s["server"]["rss_bytes"].as_u64() > Some(0), "{s}");
    }
    assert_eq!(r["summary"]["total_lost"], 0);
    assert_eq!(r["totals"]["unexpected_closes"], serde_json::json!({}));
    assert_eq!(r["totals"]["unstamped"], 0);
    assert!(r["server_end"]["rss_bytes"].as_u64() > Some(0));
    assert!(r["machine"]["nproc"].as_u64() >= Some(1));
}

#[test]
fn unicast_delivers_everything() {
    let r = bench(&[
        "s1",
        "--connections",
        "300",
        "--rates",
        "200,1000",
        "--step",
        "2s",
        "--drain",
        "3s",
    ]);
    assert_eq!(r["scenario"], "s1");
    assert_no_loss(&r, 300);
    assert_eq!(r["steps"][0]["fanout"], 1);
}

#[test]
fn broadcast_reaches_every_connection() {
    let r = bench(&[
        "s2",
        "--connections",
        "200",
        "--rates",
        "5",
        "--step",
        "2s",
        "--drain",
        "3s",
    ]);
    assert_no_loss(&r, 200);
    assert_eq!(r["steps"][0]["fanout"], 200);
}

#[test]
fn ack_mode_acks_what_it_receives() {
    let r = bench(&[
        "s5",
        "--connections",
        "100",
        "--rates",
        "200",
        "--step",
        "2s",
        "--drain",
        "3s",
    ]);
    assert_no_loss(&r, 100);
    let acks = r["totals"]["acks_sent"].as_u64().expect("acks_sent");
    assert_eq!(
        Some(acks),
        r["steps"][0]["delivered"].as_u64(),
        "every push carries a messageId and is acked"
    );
}

#[test]
fn idle_and_storm_report_memory_and_rate() {
    let idle = bench(&["s3", "--levels", "100,200", "--settle", "1s"]);
    let levels = idle["idle"].as_array().expect("idle levels");
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[1]["connections"], 200);
    assert!(levels[1]["server_rss_bytes"].as_u64() > Some(0));
    assert!(levels[1]["marginal_bytes_per_connection"].is_number());
    let storm = bench(&["s4", "--connections", "300", "--in-flight", "50"]);
    assert_eq!(storm["connect"]["connected"], 300);
    assert!(storm["summary"]["connections_per_second"].as_f64() > Some(0.0));
}

#[test]
fn a_bad_target_fails_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .args(["s1", "--connections", "1"])
        .output()
        .expect("run gateway-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gateway-bin"));
}
