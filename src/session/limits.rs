//! Per-connection abuse limits: a token bucket for requests and a sliding-window error budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Requests allowed at `rate` per second with bursts up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most `max` errors within any `window`; the one over the budget is refused.
#[derive(Debug)]
pub struct ErrorBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl ErrorBudget {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::with_capacity(max.min(64) + 1),
        }
    }

    /// Records an error; false when the budget is exceeded (the connection must be closed).
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20.0, 50);
        assert_eq!((0..60).filter(|_| b.try_take(t0)).count(), 50);
        assert!(!b.try_take(t0));
        assert!(
            b.try_take(t0 + Duration::from_millis(50)),
            "one token per 50 ms at 20/s"
        );
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn budget_slides() {
        let t0 = Instant::now();
        let mut e = ErrorBudget::new(2, Duration::from_secs(60));
        assert!(e.record(t0) && e.record(t0));
        assert!(!e.record(t0 + Duration::from_secs(1)));
        assert!(
            e.record(t0 + Duration::from_secs(61)),
            "old errors leave the window"
        );
    }
}
