//! Counters and HDR latency histograms, per step, shared by every client task.
//!
//! The generator runs on one thread, so the mutex is never contended; it exists so client
//! tasks can be ordinary `Send` tasks.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, with 3 significant figures.
const MAX_US: u64 = 60_000_000;

/// Everything the clients observe, indexed by step.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    steps: Vec<StepCounts>,
    /// Pushes without a stamp, or with a step the recorder does not know.
    unstamped: u64,
    /// Other frames: replies, system notifications.
    other_frames: u64,
    /// Connections that ended while the scenario still needed them, by close code (0: no frame).
    unexpected_closes: std::collections::BTreeMap<u16, u64>,
    acks_sent: u64,
}

/// What arrived for one step.
pub struct StepCounts {
    pub received: u64,
    pub latency: Histogram<u64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

// === Recorder ===

impl Recorder {
    /// Prepares `n` steps (earlier counts are kept).
    pub fn ensure_steps(&self, n: usize) {
        let mut inner = self.inner.lock();
        while inner.steps.len() < n {
            inner.steps.push(StepCounts::default());
        }
    }

    pub fn delivered(&self, step: usize, latency_us: u64) {
        let mut inner = self.inner.lock();
        match inner.steps.get_mut(step) {
            Some(s) => {
                s.received += 1;
                s.latency.saturating_record(latency_us.clamp(1, MAX_US));
            }
            None => inner.unstamped += 1,
        }
    }

    pub fn unstamped(&self) {
        self.inner.lock().unstamped += 1;
    }

    pub fn other_frame(&self) {
        self.inner.lock().other_frames += 1;
    }

    pub fn unexpected_close(&self, code: u16) {
        *self.inner.lock().unexpected_closes.entry(code).or_default() += 1;
    }

    pub fn ack_sent(&self) {
        self.inner.lock().acks_sent += 1;
    }

    pub fn received(&self, step: usize) -> u64 {
        self.inner.lock().steps.get(step).map_or(0, |s| s.received)
    }

    pub fn percentiles(&self, step: usize) -> Percentiles {
        let inner = self.inner.lock();
        match inner.steps.get(step) {
            Some(s) => Percentiles::of(&s.latency),
            None => Percentiles::of(&new_histogram()),
        }
    }

    pub fn totals(&self) -> Totals {
        let inner = self.inner.lock();
        Totals {
            unstamped: inner.unstamped,
            other_frames: inner.other_frames,
            unexpected_closes: inner
                .unexpected_closes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            acks_sent: inner.acks_sent,
        }
    }
}

/// Scenario-wide counters for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub unstamped: u64,
    pub other_frames: u64,
    pub unexpected_closes: std::collections::BTreeMap<String, u64>,
    pub acks_sent: u64,
}

// === StepCounts ===

impl Default for StepCounts {
    fn default() -> Self {
        Self {
            received: 0,
            latency: new_histogram(),
        }
    }
}

// === Percentiles ===

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
                mean_ms: 0.0,
            };
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// A histogram of microseconds from 1 µs to a minute.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: an error here is a programming error.
    Histogram::new_with_bounds(1, MAX_US, 3)
        .expect("1 µs..60 s with 3 significant figures is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_steps_count_as_unstamped_and_percentiles_are_in_ms() {
        let r = Recorder::default();
        r.ensure_steps(1);
        for us in [1000, 2000, 3000] {
            r.delivered(0, us);
        }
        r.delivered(5, 10);
        assert_eq!(r.received(0), 3);
        assert_eq!(r.totals().unstamped, 1);
        let p = r.percentiles(0);
        assert_eq!(p.count, 3);
        assert!((p.p50_ms - 2.0).abs() < 0.01, "{p:?}");
        assert_eq!(r.percentiles(9).count, 0);
    }
}
