//! The server under test: a gateway spawned by the generator (pinned, bounded in time, killed
//! at the end) or attached to by address, pid and keys; or the peer, nginx + Nchan, attached
//! to by address and pid.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::TargetArgs;

/// The chains the spawned gateway knows (publications go to `payload::CHAIN`).
const KNOWN_CHAINS: &str = "eip155:1,eip155:8453,eip155:137";

/// Where the gateway is and how to talk to it.
pub struct Target {
    pub addr: SocketAddr,
    pub secret: String,
    pub publisher_key: String,
    /// The server's own pid, for /proc sampling.
    pub pid: Option<u32>,
    /// The server is nginx + Nchan (`--nchan`): its own subscribe and publish URLs, no
    /// token, no publish batches, no chain heartbeat.
    pub nchan: bool,
    /// The spawned process tree, killed on drop.
    spawned: Option<Spawned>,
}

/// `timeout -s KILL <limit> [taskset -c CPUS] <gateway>`: the gateway dies by itself at
/// `limit` even if the generator is killed before it can clean up.
struct Spawned {
    timeout: Child,
    gateway_pid: u32,
    /// The gateway's own history database (SQLite), removed at the end.
    data_dir: PathBuf,
}

// === Target ===

impl Target {
    /// Spawns or attaches, as the arguments say.
    pub fn open(args: &TargetArgs, lifetime: Duration) -> Result<Target> {
        match &args.gateway_bin {
            Some(_) if args.nchan => {
                bail!("--nchan attaches to a running nginx: give --addr and --server-pid, not --gateway-bin")
            }
            Some(bin) => spawn(bin, args, lifetime),
            None if args.nchan => {
                let Some(addr) = args.addr else {
                    bail!("--nchan needs --addr (nginx's listen address) and --server-pid (its worker)");
                };
                Ok(Target {
                    addr,
                    secret: String::new(),
                    publisher_key: String::new(),
                    pid: args.server_pid,
                    nchan: true,
                    spawned: None,
                })
            }
            None => {
                let (Some(addr), Some(secret), Some(publisher_key)) =
                    (args.addr, args.secret.clone(), args.publisher_key.clone())
                else {
                    bail!("give --gateway-bin to spawn a gateway, or --addr, --secret and --publisher-key to attach to one");
                };
                Ok(Target {
                    addr,
                    secret,
                    publisher_key,
                    pid: args.server_pid,
                    nchan: false,
                    spawned: None,
                })
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(s) = &mut self.spawned {
            // SIGKILL to `timeout` is not forwarded: kill the gateway by its own pid first.
            // SAFETY: kill(2) with a pid this generator spawned and a valid signal number.
            unsafe {
                libc::kill(s.gateway_pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = s.timeout.kill();
            let _ = s.timeout.wait();
            let _ = std::fs::remove_dir_all(&s.data_dir);
        }
    }
}

fn spawn(bin: &std::path::Path, args: &TargetArgs, lifetime: Duration) -> Result<Target> {
    let secret = format!("bench-secret-{}", uuid::Uuid::new_v4());
    let publisher_key = format!("bench-pub-{}", uuid::Uuid::new_v4());
    // A fresh history per run, so no run replays or trims another's (override with
    // --gateway-env GATEWAY__STORAGE__URL=...).
    let data_dir = std::env::temp_dir().join(format!("gateway-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &format!("{}s", lifetime.as_secs().max(1))]);
    if let Some(cpus) = &args.gateway_cpus {
        cmd.args(["taskset", "-c", cpus]);
    }
    cmd.arg(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__AUTH__HS256_SECRET", &secret)
        .env("GATEWAY__PUBLISH__API_KEYS", &publisher_key)
        .env(
            "GATEWAY__ADMIN__API_KEYS",
            format!("bench-admin-{}", uuid::Uuid::new_v4()),
        )
        .env("GATEWAY__CHAINS__KNOWN", KNOWN_CHAINS)
        // Every simulated wallet connects from loopback: one address, far past the default
        // per-address limit.
        .env("GATEWAY__SERVER__MAX_CONNECTIONS_PER_IP", "1000000")
        .env(
            "GATEWAY__STORAGE__URL",
            format!("sqlite://{}/gateway.db", data_dir.display()),
        );
    for kv in &args.gateway_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--gateway-env takes KEY=VALUE, got {kv:?}");
        };
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut timeout = cmd
        .spawn()
        .context("cannot spawn `timeout` (coreutils) with the gateway")?;
    let stdout = timeout.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = timeout.kill();
            let _ = timeout.wait();
            let _ = std::fs::remove_dir_all(&data_dir);
            bail!("the gateway did not print `listening on ADDR` within 20 s");
        }
    };
    let gateway_pid = child_of(timeout.id()).unwrap_or(timeout.id());
    let target = Target {
        addr: addr
            .parse()
            .with_context(|| format!("gateway printed a bad address {addr:?}"))?,
        secret,
        publisher_key,
        pid: Some(gateway_pid),
        nchan: false,
        spawned: Some(Spawned {
            timeout,
            gateway_pid,
            data_dir,
        }),
    };
    Ok(target)
}

/// The single child of `pid` (`timeout` forks the gateway; `taskset` execs it in place).
fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}
