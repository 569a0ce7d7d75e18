//! `gateway-bench`: the load generator of activity-gateway.
//!
//! # Layout
//! - `cli`: the command line (target, scenario, parameters).
//! - `gateway`: spawning (pinned, time-bounded) or attaching to the gateway under test.
//! - `payload`: accounts, channels, the ~600-byte payload and its send-time stamp.
//! - `clients`: the wallets: connect, authenticate, subscribe, read and time pushes.
//! - `publisher`: the publish API at a stepped rate, batched, bounded in flight.
//! - `stats`: per-step counters and HDR latency histograms.
//! - `procfs`: RSS and CPU seconds of the gateway (and of the generator) from /proc.
//! - `report`: the JSON report and the readable summary.
//! - `scenarios`: S1–S5.
//! - `compare`: the gateway's and the peer's reports of one scenario, side by side.
//!
//! The generator is single-threaded on purpose: pinned to one core with `taskset`, it leaves
//! the other core to the gateway, and its own CPU use is reported so a run can tell when the
//! generator, not the gateway, was the limit.
mod cli;
mod clients;
mod compare;
mod gateway;
mod payload;
mod procfs;
mod publisher;
mod report;
mod scenarios;
mod stats;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Cli, Scenario};
use gateway::Target;
use report::{Machine, Report, Summary, TargetInfo};
use scenarios::{Run, Shape};

/// Extra time the whole process may take beyond `--max-duration` (connect and close).
const GRACE: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Scenario::Compare(args) = &cli.scenario {
        print!("{}", compare::run(args)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(async {
        tokio::time::timeout(cli.max_duration + GRACE, run(&cli))
            .await
            .context("the run overran --max-duration by more than a minute")?
    })?;
    print!("{}", report.readable());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Connections and the gateway are gone; do not wait for stray tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn run(cli: &Cli) -> Result<Report> {
    let started = Instant::now();
    let deadline = started + cli.max_duration;
    let target = Target::open(&cli.target, cli.max_duration + GRACE * 2)?;
    let name = match &cli.scenario {
        Scenario::S1(_) => "s1",
        Scenario::S2(_) => "s2",
        Scenario::S3(_) => "s3",
        Scenario::S4(_) => "s4",
        Scenario::S5(_) => "s5",
        Scenario::Compare(_) => bail!("compare reads reports; it runs no scenario"),
    };
    let mut report = Report {
        tool: "gateway-bench",
        version: env!("CARGO_PKG_VERSION"),
        scenario: name.to_owned(),
        command: std::env::args().collect(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        machine: Machine {
            nproc: procfs::cpus_online(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            loadavg_start: procfs::loadavg(),
            loadavg_end: [0.0; 3],
        },
        target: TargetInfo {
            addr: target.addr.to_string(),
            server_pid: target.pid,
            spawned: cli.target.gateway_bin.is_some(),
            gateway_cpus: cli.target.gateway_cpus.clone(),
        },
        connect: None,
        steps: Vec::new(),
        idle: Vec::new(),
        summary: Summary::default(),
        totals: None,
        server_end: procfs::Sample::default(),
        generator_end: procfs::Sample::default(),
        aborted: None,
        notes: Vec::new(),
    };
    let mut run = Run {
        target: &target,
        deadline,
        report: &mut report,
    };
    match &cli.scenario {
        Scenario::S1(a) => run.rates(Shape::Unicast, false, a).await?,
        Scenario::S2(a) => run.rates(Shape::Broadcast, false, a).await?,
        Scenario::S3(a) => run.idle(a).await?,
        Scenario::S4(a) => run.storm(a).await?,
        Scenario::S5(a) => run.rates(Shape::Unicast, true, a).await?,
        Scenario::Compare(_) => {}
    }
    report.server_end = procfs::Sample::of(target.pid);
    report.generator_end = procfs::Sample::of(None);
    report.machine.loadavg_end = procfs::loadavg();
    drop(target);
    Ok(report)
}
