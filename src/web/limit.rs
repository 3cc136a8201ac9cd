//! `rate_limit`: the token bucket of Go's `golang.org/x/time/rate.Limiter` as exporter-toolkit
//! uses it (`Allow`, one token per request): `burst` tokens to start with, one more every
//! `interval`, never more than `burst`.

use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug)]
pub struct Bucket {
    interval: Duration,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens, refilled one per `interval`.
    pub fn new(interval: Duration, burst: u64, now: Instant) -> Bucket {
        Bucket {
            interval,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long from `now` until there is a token (zero when there is one).
    pub fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        let tokens =
            (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.burst);
        if tokens >= 1.0 || self.burst < 1.0 {
            Duration::ZERO
        } else {
            self.interval.mul_f64(1.0 - tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = Bucket::new(s, 3, t0);
        assert_eq!(
            (0..4).map(|_| b.allow(t0)).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert!(!b.allow(t0 + s / 2));
        assert!(b.allow(t0 + s));
        assert!(!b.allow(t0 + s));
        // A long pause refills to the burst, not beyond.
        let later = t0 + 100 * s;
        assert_eq!((0..4).filter(|_| b.allow(later)).count(), 3);
    }

    #[test]
    fn a_burst_of_zero_refuses_everything() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Duration::from_millis(1), 0, t0);
        assert!(!b.allow(t0));
        assert!(!b.allow(t0 + Duration::from_secs(10)));
    }
}
