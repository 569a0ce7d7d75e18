//! The scenarios of the issue: S1/S5 unicast and S2 broadcast rate steps, S3 idle memory,
//! S4 connect storm. Each is bounded: by its steps, by each wait's timeout, and by the run's
//! deadline, checked before every step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{ConnectArgs, IdleArgs, RateArgs, StormArgs};
use crate::clients::{Fleet, FleetConfig};
use crate::gateway::Target;
use crate::payload;
use crate::procfs::Sample;
use crate::publisher::{Pick, Publisher, StepPlan};
use crate::report::{IdleLevel, Report, StepReport, Summary};
use crate::stats::Recorder;

/// The S1 steps, messages per second.
pub const S1_RATES: &[u64] = &[2_000, 5_000, 10_000, 20_000, 40_000, 80_000];
/// The S2 steps, publications per second (each reaches every connection).
pub const S2_RATES: &[u64] = &[1, 2, 5, 10, 20, 30, 40, 50];
/// The account every S2 connection subscribes to.
const BROADCAST_ACCOUNT: u64 = 0xb0ad_ca57;
/// Quiet time after connecting, so subscribe-time system notifications are out of the way.
const SETTLE: Duration = Duration::from_secs(1);

/// What a scenario needs from the run.
pub struct Run<'a> {
    pub target: &'a Target,
    pub deadline: Instant,
    pub report: &'a mut Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unicast,
    Broadcast,
}

// === Run ===

impl Run<'_> {
    fn fleet(&self, c: &ConnectArgs, ack: bool, recorder: Arc<Recorder>) -> Fleet {
        Fleet::new(
            FleetConfig {
                addr: self.target.addr,
                secret: self.target.secret.clone(),
                ack,
                nchan: self.target.nchan,
                read_buffer: c.client_read_buffer,
                in_flight: c.in_flight,
            },
            recorder,
        )
    }

    fn server(&self) -> Sample {
        Sample::of(self.target.pid)
    }

    /// S1, S2, S5: connect, then step the publication rate up until a step fails.
    pub async fn rates(&mut self, shape: Shape, ack: bool, args: &RateArgs) -> anyhow::Result<()> {
        let defaults = match shape {
            Shape::Unicast => S1_RATES,
            Shape::Broadcast => S2_RATES,
        };
        let rates = args.rates_or(defaults);
        let recorder = Arc::new(Recorder::default());
        let mut fleet = self.fleet(&args.connect, ack, recorder.clone());
        let n = args.connect.connections as u64;
        let accounts: Vec<u64> = match shape {
            Shape::Unicast => (0..n).collect(),
            Shape::Broadcast => vec![BROADCAST_ACCOUNT; n as usize],
        };
        let publisher = Publisher::new(
            self.target.addr,
            self.target.publisher_key.clone(),
            args.publish_concurrency,
            self.target.nchan,
        )?;
        // The chain is up before the wallets come, as in a running deployment: otherwise the
        // first publication brings it up during step 0 and the gateway tells every connection
        // (a 10,000-frame broadcast inside the first step's latencies). Nchan has no chains.
        let heartbeat = match self.target.nchan {
            true => Ok(()),
            false => publisher.heartbeat(payload::CHAIN).await,
        };
        if let Err(why) = heartbeat {
            self.report.notes.push(format!(
                "{why}; the first publication brings the chain up during step 0"
            ));
        }
        let connect = fleet.connect(&accounts).await;
        self.report.connect = Some(connect);
        tokio::time::sleep(SETTLE).await;
        let max_p99_ms = args.max_p99.as_secs_f64() * 1000.0;
        for (step, &rate) in rates.iter().enumerate() {
            if Instant::now() + args.step + args.drain > self.deadline {
                self.report.aborted = Some(format!("--max-duration reached before step {step}"));
                break;
            }
            recorder.ensure_steps(step + 1);
            let alive = fleet.alive();
            let fanout = match shape {
                Shape::Unicast => 1,
                Shape::Broadcast => alive as u64,
            };
            let (srv0, gen0, t0) = (self.server(), Sample::of(None), Instant::now());
            let plan = StepPlan {
                step,
                rate,
                duration: args.step,
                batch: args.batch,
                tick: args.tick,
                pick: match shape {
                    Shape::Unicast => Pick::Random(n),
                    Shape::Broadcast => Pick::One(BROADCAST_ACCOUNT),
                },
            };
            let published = publisher.run_step(plan).await;
            let expected = published.accepted * fanout;
            let drain_until = Instant::now() + args.drain;
            while recorder.received(step) < expected && Instant::now() < drain_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let wall = t0.elapsed().as_secs_f64();
            let delivered = recorder.received(step);
            let latency = recorder.percentiles(step);
            let target_deliveries = (rate as f64 * args.step.as_secs_f64()) as u64 * fanout;
            let delivered_fraction = if target_deliveries > 0 {
                delivered as f64 / target_deliveries as f64
            } else {
                0.0
            };
            let passed = delivered_fraction >= args.min_delivered && latency.p99_ms <= max_p99_ms;
            let report = StepReport {
                step,
                publications_per_second: rate,
                fanout,
                seconds: args.step.as_secs_f64(),
                published,
                target_deliveries,
                expected_deliveries: expected,
                delivered,
                lost: expected as i64 - delivered as i64,
                delivered_fraction,
                deliveries_per_second: delivered as f64 / args.step.as_secs_f64(),
                latency,
                server: self.server().usage_since(&srv0, wall),
                generator: Sample::of(None).usage_since(&gen0, wall),
                connections_alive: fleet.alive(),
                passed,
            };
            eprintln!("{}", one_line(&report));
            self.report.steps.push(report);
            if !passed && !args.keep_going {
                break;
            }
        }
        fleet.close().await;
        self.report.totals = Some(recorder.totals());
        let s = &mut self.report.summary;
        let passing = self.report.steps.iter().filter(|s| s.passed);
        if let Some(best) = passing.max_by_key(|s| s.publications_per_second) {
            s.highest_passing_publications_per_second = Some(best.publications_per_second);
            s.highest_passing_deliveries_per_second = Some(best.deliveries_per_second);
        }
        s.first_step_p99_ms = self.report.steps.first().map(|s| s.latency.p99_ms);
        s.total_lost = self.report.steps.iter().map(|s| s.lost).sum();
        // Deliveries are counted by the step stamped in them, so more than the accepted
        // publications account for is never spill-over from another step.
        for st in self.report.steps.iter().filter(|s| s.lost < 0) {
            self.report.notes.push(format!(
                "step {}: {} deliveries more than the accepted publications account for: the \
                 gateway delivered publications whose publish request failed ({:?}), or \
                 delivered some twice",
                st.step, -st.lost, st.published.failures
            ));
        }
        if ack {
            let acks = self.report.totals.as_ref().map_or(0, |t| t.acks_sent);
            if acks == 0 {
                self.report.notes.push(
                    "ack mode: no push carried a messageId, so nothing was acked: acknowledged delivery is not active on this gateway (S5 pending)".into(),
                );
            }
        }
        Ok(())
    }

    /// S3: RSS per idle subscribed connection at each level.
    pub async fn idle(&mut self, args: &IdleArgs) -> anyhow::Result<()> {
        let recorder = Arc::new(Recorder::default());
        let mut fleet = self.fleet(&args.connect, false, recorder.clone());
        tokio::time::sleep(SETTLE).await;
        let baseline = self.server().rss_bytes;
        self.report.summary = Summary {
            server_baseline_rss_bytes: Some(baseline),
            ..Summary::default()
        };
        let mut open = 0usize;
        let mut previous: Option<(usize, u64)> = None;
        for &level in &args.levels {
            if level <= open {
                continue;
            }
            if Instant::now() + args.settle > self.deadline {
                self.report.aborted = Some(format!("--max-duration reached before level {level}"));
                break;
            }
            let accounts: Vec<u64> = (open as u64..level as u64).collect();
            let connect = fleet.connect(&accounts).await;
            open = level;
            tokio::time::sleep(args.settle).await;
            let rss = self.server().rss_bytes;
            let alive = fleet.alive();
            let per = rss.saturating_sub(baseline) as f64 / alive.max(1) as f64;
            let marginal = previous
                .map(|(n0, r0)| (rss as f64 - r0 as f64) / (alive as f64 - n0 as f64).max(1.0));
            previous = Some((alive, rss));
            let level_report = IdleLevel {
                connections: alive,
                server_rss_bytes: rss,
                bytes_per_connection: per,
                marginal_bytes_per_connection: marginal,
                connect,
            };
            eprintln!(
                "idle {alive} conns: RSS {} MiB, {per:.0} B/conn, marginal {marginal:?}",
                rss >> 20
            );
            if self.report.connect.is_none() {
                self.report.connect = Some(level_report.connect.clone());
            }
            self.report.idle.push(level_report);
        }
        fleet.close().await;
        self.report.totals = Some(recorder.totals());
        Ok(())
    }

    /// S4: a connect storm against a fresh gateway.
    pub async fn storm(&mut self, args: &StormArgs) -> anyhow::Result<()> {
        let recorder = Arc::new(Recorder::default());
        let mut fleet = self.fleet(&args.connect, false, recorder.clone());
        let accounts: Vec<u64> = (0..args.connect.connections as u64).collect();
        let (srv0, gen0, t0) = (self.server(), Sample::of(None), Instant::now());
        let connect = fleet.connect(&accounts).await;
        let wall = t0.elapsed().as_secs_f64();
        let server = self.server().usage_since(&srv0, wall);
        let generator = Sample::of(None).usage_since(&gen0, wall);
        self.report.summary.connections_per_second = Some(connect.per_second);
        self.report.summary.server_cpu_seconds = Some(server.cpu_seconds);
        self.report.notes.push(format!(
            "during the storm: server {:.2} cores ({:.2} CPU s), generator {:.2} cores ({:.2} CPU s), server RSS {} MiB",
            server.cores,
            server.cpu_seconds,
            generator.cores,
            generator.cpu_seconds,
            server.rss_bytes >> 20
        ));
        self.report.connect = Some(connect);
        fleet.close().await;
        self.report.totals = Some(recorder.totals());
        Ok(())
    }
}

fn one_line(s: &StepReport) -> String {
    format!(
        "step {} {} pub/s: {}/{} delivered, lost {}, p99 {:.2} ms, server {:.2} cores, generator {:.2} cores, {}",
        s.step,
        s.publications_per_second,
        s.delivered,
        s.target_deliveries,
        s.lost,
        s.latency.p99_ms,
        s.server.cores,
        s.generator.cores,
        if s.passed { "pass" } else { "fail" }
    )
}
