//! `gateway-bench compare`: two reports of one scenario, the gateway's and the peer's from the
//! same run, as one Markdown table with the ratio of each figure (gateway / peer).
//!
//! Reports are read as JSON values, so a report written by an older generator still compares
//! where it has the figure.

use std::fmt::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::CompareArgs;

/// One row: a figure of both servers.
struct Row {
    figure: String,
    gateway: Option<f64>,
    peer: Option<f64>,
    /// Decimals to print the figures with.
    decimals: usize,
}

/// Reads both reports and renders the table.
pub fn run(args: &CompareArgs) -> Result<String> {
    let gateway = read(&args.gateway)?;
    let peer = read(&args.peer)?;
    let scenario = gateway["scenario"].as_str().unwrap_or_default().to_owned();
    if peer["scenario"].as_str() != Some(scenario.as_str()) {
        bail!(
            "the reports are of different scenarios ({scenario:?} and {:?}): compare one scenario's runs",
            peer["scenario"]
        );
    }
    let rows = match scenario.as_str() {
        "s1" | "s2" | "s5" => rate_rows(&gateway, &peer),
        "s3" => idle_rows(&gateway, &peer),
        "s4" => storm_rows(&gateway, &peer),
        other => bail!("unknown scenario {other:?} in {}", args.gateway.display()),
    };
    Ok(render(&scenario, &args.peer_name, &rows))
}

fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the report {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a gateway-bench JSON report", path.display()))
}

/// S1, S2, S5: the ceiling, the server's CPU per delivery there, and p99 at every rate both ran.
fn rate_rows(g: &Value, p: &Value) -> Vec<Row> {
    let mut rows = vec![
        Row {
            figure: "ceiling: deliveries/s of the highest passing step".into(),
            gateway: g["summary"]["highest_passing_deliveries_per_second"].as_f64(),
            peer: p["summary"]["highest_passing_deliveries_per_second"].as_f64(),
            decimals: 0,
        },
        Row {
            figure: "server CPU per delivery at its highest passing step, µs".into(),
            gateway: cpu_per_delivery_us(g),
            peer: cpu_per_delivery_us(p),
            decimals: 1,
        },
        Row {
            figure: "deliveries lost (accepted, never delivered)".into(),
            gateway: g["summary"]["total_lost"].as_f64(),
            peer: p["summary"]["total_lost"].as_f64(),
            decimals: 0,
        },
    ];
    for step in steps(g) {
        let rate = step["publications_per_second"].as_u64();
        let other = steps(p)
            .iter()
            .find(|s| s["publications_per_second"].as_u64() == rate)
            .cloned();
        let Some(other) = other else { continue };
        rows.push(Row {
            figure: format!("p99 at {} publications/s, ms", rate.unwrap_or(0)),
            gateway: step["latency"]["p99_ms"].as_f64(),
            peer: other["latency"]["p99_ms"].as_f64(),
            decimals: 2,
        });
    }
    rows
}

fn steps(report: &Value) -> Vec<Value> {
    report["steps"].as_array().cloned().unwrap_or_default()
}

/// Server CPU seconds per delivered message at the highest passing step, in µs.
fn cpu_per_delivery_us(report: &Value) -> Option<f64> {
    let best = steps(report)
        .into_iter()
        .filter(|s| s["passed"].as_bool() == Some(true))
        .max_by_key(|s| s["publications_per_second"].as_u64().unwrap_or(0))?;
    let delivered = best["delivered"].as_f64()?;
    let cpu = best["server"]["cpu_seconds"].as_f64()?;
    (delivered > 0.0).then(|| cpu * 1e6 / delivered)
}

/// S3: bytes per idle subscribed connection at each level.
fn idle_rows(g: &Value, p: &Value) -> Vec<Row> {
    let levels = |r: &Value| r["idle"].as_array().cloned().unwrap_or_default();
    levels(g)
        .iter()
        .zip(levels(p).iter())
        .map(|(a, b)| Row {
            figure: format!(
                "RSS per idle subscribed connection at {} connections, bytes",
                a["connections"].as_u64().unwrap_or(0)
            ),
            gateway: a["bytes_per_connection"].as_f64(),
            peer: b["bytes_per_connection"].as_f64(),
            decimals: 0,
        })
        .collect()
}

/// S4: connections set up per second, and the server's CPU per connection.
fn storm_rows(g: &Value, p: &Value) -> Vec<Row> {
    let per_connection = |r: &Value| {
        let cpu = r["summary"]["server_cpu_seconds"].as_f64()?;
        let n = r["connect"]["connected"].as_f64()?;
        (n > 0.0).then(|| cpu * 1e6 / n)
    };
    vec![
        Row {
            figure: "connections set up per second".into(),
            gateway: g["summary"]["connections_per_second"].as_f64(),
            peer: p["summary"]["connections_per_second"].as_f64(),
            decimals: 0,
        },
        Row {
            figure: "server CPU per connection, µs".into(),
            gateway: per_connection(g),
            peer: per_connection(p),
            decimals: 1,
        },
        Row {
            figure: "set-up p99, ms".into(),
            gateway: g["connect"]["setup_latency"]["p99_ms"].as_f64(),
            peer: p["connect"]["setup_latency"]["p99_ms"].as_f64(),
            decimals: 1,
        },
    ]
}

fn render(scenario: &str, peer_name: &str, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {scenario} | gateway | {peer_name} | gateway / {peer_name} |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for r in rows {
        let cell = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.*}", r.decimals));
        let ratio = match (r.gateway, r.peer) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} |",
            r.figure,
            cell(r.gateway),
            cell(r.peer)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rate_reports_compare_ceiling_cpu_and_the_p99_of_shared_rates() {
        let report = |dps: f64, cpu: f64, p99: f64| {
            json!({
                "scenario": "s1",
                "summary": {"highest_passing_deliveries_per_second": dps, "total_lost": 0},
                "steps": [
                    {"publications_per_second": 2000, "passed": true, "delivered": 30000,
                     "server": {"cpu_seconds": cpu}, "latency": {"p99_ms": p99}},
                    {"publications_per_second": 5000, "passed": false, "delivered": 1,
                     "server": {"cpu_seconds": 9.0}, "latency": {"p99_ms": 500.0}}
                ]
            })
        };
        let rows = rate_rows(&report(2000.0, 3.0, 4.0), &report(4000.0, 1.5, 2.0));
        let table = render("s1", "Nchan", &rows);
        assert!(
            table.contains(
                "| ceiling: deliveries/s of the highest passing step | 2000 | 4000 | 0.50x |"
            ),
            "{table}"
        );
        assert!(table.contains("| server CPU per delivery at its highest passing step, µs | 100.0 | 50.0 | 2.00x |"), "{table}");
        assert!(
            table.contains("| p99 at 5000 publications/s, ms | 500.00 | 500.00 | 1.00x |"),
            "{table}"
        );
    }

    #[test]
    fn a_missing_figure_is_a_dash_not_a_zero() {
        let rows = storm_rows(
            &json!({"summary": {}}),
            &json!({"summary": {"connections_per_second": 5.0}}),
        );
        let table = render("s4", "Nchan", &rows);
        assert!(
            table.contains("| connections set up per second | – | 5 | – |"),
            "{table}"
        );
    }
}
