//! The `activity-gateway` binary: `serve` (default), `token`, `tail`, `migrate`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use activity_gateway::app::Gateway;
use activity_gateway::client::{Client, ClientConfig, Event};
use activity_gateway::config::Settings;
use activity_gateway::{auth, dev, shutdown};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// jemalloc: glibc's allocator took ~27 % of the gateway's CPU under load (malloc_consolidate,
/// unlink_chunk) and fragments across the sqlx worker threads' arenas (docs/benchmarks-log.md,
/// second pass).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "activity-gateway",
    version,
    about = "MetaMask-compatible WebSocket gateway for real-time account activity"
)]
struct Cli {
    /// TOML configuration file (environment variables GATEWAY__SECTION__KEY override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve {
        /// Development mode: generated secret and keys, common chains, a ready token.
        #[arg(long)]
        dev: bool,
    },
    /// Print the notifications of one account as they arrive (one JSON line each).
    Tail {
        /// CAIP-10 account, e.g. eip155:0:0xd14b… (chain 0: every chain of the namespace).
        #[arg(long)]
        address: String,
        /// Acknowledged delivery: ack, de-duplicate, and resume after reconnecting.
        #[arg(long)]
        ack: bool,
        /// WebSocket URL of the gateway.
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1")]
        url: String,
        /// Client token; by default one is minted with the configured HS256 secret.
        #[arg(long, env = "GATEWAY_TOKEN")]
        token: Option<String>,
    },
    /// Run the history store's migrations (they also run at start) and exit.
    Migrate,
    /// Mint a client token with the configured HS256 secret.
    Token {
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let loaded = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve { dev: false }) {
        Command::Token { sub, ttl } => {
            let Some(secret) = loaded.settings.auth.hs256_secret.as_deref() else {
                bail!("no HS256 secret configured: set auth.hs256_secret (GATEWAY__AUTH__HS256_SECRET)");
            };
            println!("{}", auth::mint_hs256(secret, &sub, ttl)?);
            Ok(())
        }
        Command::Tail {
            address,
            ack,
            url,
            token,
        } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let Some(secret) = loaded.settings.auth.hs256_secret.as_deref() else {
                        bail!("no token: pass --token (or GATEWAY_TOKEN), or configure auth.hs256_secret to mint one");
                    };
                    auth::mint_hs256(secret, "tail", Duration::from_secs(24 * 3600))?
                }
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            runtime.block_on(tail(url, token, ack, address))
        }
        Command::Migrate => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            runtime.block_on(activity_gateway::history::migrate(&loaded.settings.storage))?;
            println!(
                "migrations applied to {}",
                activity_gateway::config::redact::url(&loaded.settings.storage.url)
            );
            Ok(())
        }
        Command::Serve { dev: dev_flag } => {
            let mut settings = loaded.settings;
            init_tracing(&settings.log.format);
            let dev_mode = dev_flag || settings.server.dev.unwrap_or(!loaded.configured);
            if dev_mode {
                dev::apply(&mut settings);
            } else {
                dev::require_production_keys(&settings).map_err(anyhow::Error::msg)?;
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            runtime.block_on(serve(settings, dev_mode))
        }
    }
}

async fn serve(settings: Settings, dev_mode: bool) -> Result<()> {
    let banner_settings = dev_mode.then(|| settings.clone());
    let gateway = Gateway::start(settings).await?;
    let addr = gateway.addr;
    // Installed before `listening on` is printed, so a signal sent on seeing it is caught.
    let mut signals = shutdown::Signals::new().context("cannot install the signal handlers")?;
    let mut stdout = std::io::stdout().lock();
    if let Some(s) = banner_settings {
        writeln!(stdout, "{}", dev::banner(&s, &addr.to_string()))?;
    }
    if let Some(metrics) = gateway.metrics_addr {
        writeln!(stdout, "metrics listening on {metrics}")?;
    }
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, dev = dev_mode, "Gateway listening.");
    signals.recv().await;
    tokio::select! {
        _ = gateway.drain() => Ok(()),
        _ = signals.recv() => {
            // The operator will not wait for the drain. Account activity is answered only once
            // committed, so nothing acknowledged is lost; the clients still connected see
            // their connection drop and reconnect.
            tracing::warn!("Second signal during the drain: exiting now, without closing the remaining connections.");
            std::process::exit(1)
        }
    }
}

async fn tail(url: String, token: String, ack: bool, address: String) -> Result<()> {
    let channel = format!("account-activity.v1.{address}");
    activity_gateway::protocol::Channel::parse(&channel)
        .map_err(|e| anyhow::anyhow!("--address: {e}"))?;
    let mut config = ClientConfig::new(url, token);
    config.ack = ack;
    let mut client = Client::connect(config).await?;
    client.subscribe(std::slice::from_ref(&channel)).await?;
    eprintln!("subscribed to {channel}");
    loop {
        tokio::select! {
            _ = shutdown::signal() => return Ok(()),
            event = client.next_event() => {
                let line = match event? {
                    Event::Notification(n) => serde_json::json!({"channel": n.channel, "messageId": n.message_id,
                        "position": n.position, "redelivered": n.redelivered, "data": n.data}),
                    Event::System { channel, chain_ids, up } => serde_json::json!({"system": channel,
                        "status": if up { "up" } else { "down" }, "chainIds": chain_ids}),
                    Event::Resumed { recovered } => serde_json::json!({"resumed": recovered}),
                };
                println!("{line}");
            }
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
