//! The `activity-gateway` binary: `serve` (default), `token`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use activity_gateway::app::Gateway;
use activity_gateway::config::Settings;
use activity_gateway::{auth, dev, shutdown};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "activity-gateway", version, about = "MetaMask-compatible WebSocket gateway for real-time account activity")]
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
        Command::Serve { dev: dev_flag } => {
            let mut settings = loaded.settings;
            init_tracing(&settings.log.format);
            let dev_mode = dev_flag || settings.server.dev.unwrap_or(!loaded.configured);
            if dev_mode {
                dev::apply(&mut settings);
            } else {
                dev::require_production_keys(&settings).map_err(anyhow::Error::msg)?;
            }
            let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            runtime.block_on(serve(settings, dev_mode))
        }
    }
}

async fn serve(settings: Settings, dev_mode: bool) -> Result<()> {
    let banner_settings = dev_mode.then(|| settings.clone());
    let gateway = Gateway::start(settings).await?;
    let addr = gateway.addr;
    let mut stdout = std::io::stdout().lock();
    if let Some(s) = banner_settings {
        writeln!(stdout, "{}", dev::banner(&s, &addr.to_string()))?;
    }
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, dev = dev_mode, "Gateway listening.");
    shutdown::signal().await;
    gateway.drain().await;
    Ok(())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
