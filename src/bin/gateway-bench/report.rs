//! The run's report: JSON for tools, a short readable summary for people.

use std::fmt::Write;

use serde::Serialize;

use crate::clients::ConnectReport;
use crate::procfs::{Sample, Usage};
use crate::publisher::Published;
use crate::stats::{Percentiles, Totals};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: String,
    /// The command line, to rerun it.
    pub command: Vec<String>,
    pub started_unix: u64,
    pub machine: Machine,
    pub target: TargetInfo,
    /// The initial connection batch (for S3: the first level).
    pub connect: Option<ConnectReport>,
    pub steps: Vec<StepReport>,
    pub idle: Vec<IdleLevel>,
    pub summary: Summary,
    pub totals: Option<Totals>,
    pub server_end: Sample,
    pub generator_end: Sample,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub addr: String,
    pub server_pid: Option<u32>,
    pub spawned: bool,
    pub gateway_cpus: Option<String>,
}

/// One rate step of S1, S2 or S5.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    /// Publications per second asked for.
    pub publications_per_second: u64,
    /// Recipients of each publication (1 unicast, the connection count broadcast).
    pub fanout: u64,
    pub seconds: f64,
    pub published: Published,
    /// Deliveries the step should have produced at its target rate.
    pub target_deliveries: u64,
    /// Deliveries the accepted publications should have produced.
    pub expected_deliveries: u64,
    pub delivered: u64,
    /// `expected - delivered`: accepted but never seen (negative would mean duplicates).
    pub lost: i64,
    pub delivered_fraction: f64,
    pub deliveries_per_second: f64,
    pub latency: Percentiles,
    pub server: Usage,
    pub generator: Usage,
    pub connections_alive: usize,
    pub passed: bool,
}

/// One level of S3.
#[derive(Debug, Clone, Serialize)]
pub struct IdleLevel {
    pub connections: usize,
    pub server_rss_bytes: u64,
    pub bytes_per_connection: f64,
    /// Against the previous level: what one more connection costs.
    pub marginal_bytes_per_connection: Option<f64>,
    pub connect: ConnectReport,
}

/// The figures that the targets are about.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub highest_passing_publications_per_second: Option<u64>,
    pub highest_passing_deliveries_per_second: Option<f64>,
    pub first_step_p99_ms: Option<f64>,
    pub total_lost: i64,
    pub connections_per_second: Option<f64>,
    /// S4: the server's CPU seconds during the storm.
    pub server_cpu_seconds: Option<f64>,
    pub server_baseline_rss_bytes: Option<u64>,
}

// === Report ===

impl Report {
    /// A few lines per step or level.
    pub fn readable(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "gateway-bench {} on {} cpus, load {:.2}/{:.2}/{:.2} -> {:.2}",
            self.scenario,
            m.nproc,
            m.loadavg_start[0],
            m.loadavg_start[1],
            m.loadavg_start[2],
            m.loadavg_end[0]
        );
        if let Some(c) = &self.connect {
            let _ = writeln!(
                s,
                "connect: {}/{} in {:.2} s = {:.0}/s (failed {}), setup p50 {:.1} ms p99 {:.1} ms",
                c.connected,
                c.requested,
                c.seconds,
                c.per_second,
                c.failed,
                c.setup_latency.p50_ms,
                c.setup_latency.p99_ms
            );
        }
        for st in &self.steps {
            let _ = writeln!(
                s,
                "step {} {:>6} pub/s x{:<5}: delivered {}/{} ({:.1} %) {:.0}/s lost {} | p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms | server {:.2} cores {} MiB | gen {:.2} cores | {}",
                st.step,
                st.publications_per_second,
                st.fanout,
                st.delivered,
                st.target_deliveries,
                st.delivered_fraction * 100.0,
                st.deliveries_per_second,
                st.lost,
                st.latency.p50_ms,
                st.latency.p90_ms,
                st.latency.p99_ms,
                st.latency.p999_ms,
                st.latency.max_ms,
                st.server.cores,
                st.server.rss_bytes >> 20,
                st.generator.cores,
                if st.passed { "PASS" } else { "FAIL" }
            );
        }
        for l in &self.idle {
            let _ = writeln!(
                s,
                "idle {:>6} conns: server RSS {} MiB, {:.0} B/conn{}",
                l.connections,
                l.server_rss_bytes >> 20,
                l.bytes_per_connection,
                l.marginal_bytes_per_connection
                    .map(|b| format!(", marginal {b:.0} B/conn"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            s,
            "summary: {}",
            serde_json::to_string(&self.summary).unwrap_or_default()
        );
        if let Some(t) = &self.totals {
            let _ = writeln!(
                s,
                "totals: {}",
                serde_json::to_string(t).unwrap_or_default()
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if let Some(a) = &self.aborted {
            let _ = writeln!(s, "ABORTED: {a}");
        }
        s
    }
}
