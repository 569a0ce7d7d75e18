//! The publisher: the real publish API at a target rate, batched, with a bounded number of
//! requests in flight. Each publication is stamped with its send time just before its batch
//! is posted. Against nginx + Nchan each publication is its own `POST /pub/<account>` whose
//! body is the payload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::payload::{self, now_us, Stamp};

/// Which accounts a step publishes to.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// A uniformly random account among `0..n` (S1: unicast).
    Random(u64),
    /// Always this account (S2: broadcast).
    One(u64),
}

/// One step of publishing.
#[derive(Debug, Clone, Copy)]
pub struct StepPlan {
    pub step: usize,
    /// Publications per second.
    pub rate: u64,
    pub duration: Duration,
    pub batch: usize,
    pub tick: Duration,
    pub pick: Pick,
}

/// What the publisher did in one step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// Publications put in a request.
    pub attempted: u64,
    /// Publications the gateway answered as accepted.
    pub accepted: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub failures: BTreeMap<String, u64>,
    /// Time from the first request to the last response.
    pub seconds: f64,
}

/// Posts batches to `/v1/publish`.
pub struct Publisher {
    http: reqwest::Client,
    /// `http://addr`.
    base: String,
    key: String,
    concurrency: usize,
    /// Publish to Nchan (`/pub/<account>`, one publication per request) instead.
    nchan: bool,
    rng: Mutex<u64>,
}

#[derive(Deserialize)]
struct Answer {
    accepted: u64,
}

// === Publisher ===

impl Publisher {
    pub fn new(
        addr: SocketAddr,
        key: String,
        concurrency: usize,
        nchan: bool,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: format!("http://{addr}"),
            key,
            concurrency: concurrency.max(1),
            nchan,
            rng: Mutex::new(0x9e37_79b9_7f4a_7c15),
        })
    }

    /// Tells the gateway that `chain` is alive (`POST /v1/chains/{chain}/heartbeat`), as an
    /// indexer does long before wallets connect; returns why not when it was refused.
    pub async fn heartbeat(&self, chain: &str) -> Result<(), String> {
        let response = self
            .http
            .post(format!("{}/v1/chains/{chain}/heartbeat", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| format!("heartbeat for {chain} failed: {e}"))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!(
                "heartbeat for {chain} refused: HTTP {}",
                s.as_u16()
            )),
        }
    }

    /// Publishes at `plan.rate` for `plan.duration`, then waits for the requests in flight.
    /// Falls behind (and says so in `attempted`) when the gateway answers too slowly.
    pub async fn run_step(&self, plan: StepPlan) -> Published {
        let out = Arc::new(Mutex::new(Published::default()));
        let url: Arc<str> = format!("{}/v1/publish", self.base).into();
        let batch = if self.nchan { 1 } else { plan.batch.max(1) };
        let gate = Arc::new(Semaphore::new(self.concurrency));
        let started = Instant::now();
        let mut ticker = tokio::time::interval(plan.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent: u64 = 0;
        let mut seq: u64 = 0;
        // What the step should publish in total; a publication is due at the start of its
        // slot, so a 1/s step publishes at 0 s, 1 s, ... and reaches its total in time.
        let total = (plan.rate as f64 * plan.duration.as_secs_f64()).round() as u64;
        // A publisher that fell behind (the gateway answers slowly) gives up at this point.
        let give_up = plan.duration + plan.duration / 10;
        while sent < total && started.elapsed() < give_up {
            ticker.tick().await;
            let elapsed = started.elapsed().as_secs_f64();
            let due = ((plan.rate as f64 * elapsed).ceil() as u64).min(total);
            while sent < due && started.elapsed() < give_up {
                let n = (due - sent).min(batch as u64);
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let (url, body) = match self.nchan {
                    true => self.nchan_publication(plan, &mut seq),
                    false => (url.clone(), self.batch(plan, &mut seq, n)),
                };
                sent += n;
                let (http, key, out, nchan) =
                    (self.http.clone(), self.key.clone(), out.clone(), self.nchan);
                tokio::spawn(async move {
                    let result = post(&http, &url, &key, body, nchan).await;
                    drop(permit);
                    let mut o = out.lock();
                    o.attempted += n;
                    o.requests += 1;
                    match result {
                        Ok(accepted) => o.accepted += accepted,
                        Err(kind) => {
                            o.failed_requests += 1;
                            *o.failures.entry(kind).or_insert(0) += 1;
                        }
                    }
                });
            }
        }
        // Every request has ended once all permits are back (each is bounded by the timeout).
        let _ = gate.acquire_many(self.concurrency as u32).await;
        let mut o = out.lock().clone();
        o.seconds = started.elapsed().as_secs_f64();
        o
    }

    /// One request body of `n` stamped publications.
    fn batch(&self, plan: StepPlan, seq: &mut u64, n: u64) -> String {
        let mut body = String::with_capacity(32 + n as usize * 720);
        body.push_str(r#"{"publications":["#);
        let sent_us = now_us();
        for k in 0..n {
            if k > 0 {
                body.push(',');
            }
            let account = self.pick(plan.pick);
            let stamp = Stamp {
                step: plan.step,
                seq: *seq,
                sent_us,
            };
            *seq += 1;
            payload::write_publication(
                &mut body,
                &payload::publish_channel(account),
                &payload::address(account),
                stamp,
            );
        }
        body.push_str("]}");
        body
    }

    /// One stamped publication for Nchan: its `/pub/<account>` URL and the payload.
    fn nchan_publication(&self, plan: StepPlan, seq: &mut u64) -> (Arc<str>, String) {
        let account = self.pick(plan.pick);
        let stamp = Stamp {
            step: plan.step,
            seq: *seq,
            sent_us: now_us(),
        };
        *seq += 1;
        let mut body = String::with_capacity(720);
        payload::write_data(&mut body, &payload::address(account), stamp);
        let url = format!("{}/pub/{}", self.base, payload::nchan_channel(account));
        (url.into(), body)
    }

    fn pick(&self, pick: Pick) -> u64 {
        match pick {
            Pick::Random(n) => self.next_random() % n.max(1),
            Pick::One(a) => a,
        }
    }

    /// xorshift64*: uniform enough to spread publications over accounts, and cheap.
    fn next_random(&self) -> u64 {
        let mut s = self.rng.lock();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Posts one request; the publications the server accepted. Nchan answers a stored
/// publication with 201 or 202 and a description of the channel, not the gateway's count.
async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: String,
    nchan: bool,
) -> Result<u64, String> {
    let response = http
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_owned()
            } else {
                "connection".to_owned()
            }
        })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|_| "body".to_owned())?;
    if !status.is_success() {
        return Err(format!("http_{}", status.as_u16()));
    }
    if nchan {
        return Ok(1);
    }
    serde_json::from_slice::<Answer>(&bytes)
        .map(|a| a.accepted)
        .map_err(|_| "bad_answer".to_owned())
}
