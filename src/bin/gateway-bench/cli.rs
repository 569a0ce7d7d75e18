//! Command line: where the gateway is, which scenario, and its parameters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Load generator for activity-gateway: real WebSocket wallets, the real publish API.
///
/// Pin the gateway and the generator to different cores, e.g.
/// `taskset -c 1 gateway-bench --gateway-bin target/release/activity-gateway --gateway-cpus 0 s1`.
#[derive(Debug, Parser)]
#[command(name = "gateway-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the JSON report here (the readable summary always goes to stdout).
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Hard limit for the whole run: past it the run stops and reports what it has.
    #[arg(long, global = true, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_duration: Duration,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The gateway to measure: spawn one, or attach to a running one.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Spawn this gateway binary on a loopback port (killed when the run ends).
    #[arg(long, global = true)]
    pub gateway_bin: Option<PathBuf>,
    /// CPU list for the spawned gateway (`taskset -c`), e.g. `0`.
    #[arg(long, global = true)]
    pub gateway_cpus: Option<String>,
    /// Extra environment for the spawned gateway, KEY=VALUE (repeatable).
    #[arg(long = "gateway-env", global = true)]
    pub gateway_env: Vec<String>,
    /// Attach: the gateway's address.
    #[arg(long, global = true)]
    pub addr: Option<SocketAddr>,
    /// Attach: the HS256 secret the gateway verifies tokens with.
    #[arg(long, global = true, env = "BENCH_HS256_SECRET")]
    pub secret: Option<String>,
    /// Attach: a publisher API key.
    #[arg(long, global = true, env = "BENCH_PUBLISHER_KEY")]
    pub publisher_key: Option<String>,
    /// Attach: the gateway's pid, for RSS and CPU from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// The server at `--addr` is the peer, nginx + Nchan, not a gateway: wallets subscribe
    /// with a WebSocket on `/sub/<account>` (no token, no handshake), and each publication is
    /// its own `POST /pub/<account>`. `--server-pid` is nginx's worker.
    #[arg(long, global = true)]
    pub nchan: bool,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// S1 unicast: each connection on its own account; publications to random accounts at
    /// stepped rates until fewer than 95 % arrive or p99 exceeds the limit.
    S1(RateArgs),
    /// S2 broadcast: every connection on one account; stepped publications per second.
    S2(RateArgs),
    /// S3 idle memory: server RSS per idle subscribed connection at each level.
    S3(IdleArgs),
    /// S4 connect storm: connect, authenticate, subscribe with a bounded number in flight.
    S4(StormArgs),
    /// S5: S1 in ack mode (`?ack=1`) with a client that acks every `messageId` it gets.
    S5(RateArgs),
    /// Reads two JSON reports of one scenario (the gateway's, then the peer's, from the same
    /// run) and prints a Markdown table of their figures side by side, with ratios.
    Compare(CompareArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The gateway's report (`--json` of a run).
    pub gateway: PathBuf,
    /// The peer's report, same scenario, same run.
    pub peer: PathBuf,
    /// The peer's name in the table.
    #[arg(long, default_value = "Nchan")]
    pub peer_name: String,
}

/// Connection set-up shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Number of WebSocket connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections being set up at once (TCP, upgrade, session-created, subscribe, reply).
    #[arg(long, default_value_t = 500)]
    pub in_flight: usize,
    /// Client read buffer per connection, bytes (tungstenite's default is 128 KiB).
    #[arg(long, default_value_t = 8192)]
    pub client_read_buffer: usize,
}

#[derive(Debug, Clone, Args)]
pub struct RateArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Rates to step through: messages/s for s1/s5, publications/s for s2.
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<u64>>,
    /// Length of each step.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// After a step, how long to wait for messages still in flight.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Publications per publish request (at most; fewer when the rate is low).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// How often the publisher sends what is due.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Publish requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub publish_concurrency: usize,
    /// A step passes when at least this fraction of its target arrives...
    #[arg(long, default_value_t = 0.95)]
    pub min_delivered: f64,
    /// ...and its p99 latency is at most this.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// Run every step even after one fails.
    #[arg(long)]
    pub keep_going: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Connection counts to measure at, ascending (`--connections` is ignored).
    #[arg(long, value_delimiter = ',', default_value = "10000,18000")]
    pub levels: Vec<usize>,
    /// Idle time before reading RSS at each level.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

// === RateArgs ===

impl RateArgs {
    /// The steps: S1 2k..80k messages/s; S2 1..50 publications/s.
    pub fn rates_or(&self, default: &[u64]) -> Vec<u64> {
        self.rates.clone().unwrap_or_else(|| default.to_vec())
    }
}
