//! A token bucket per caller (per token name, or per client IP for tokenless callers): `burst`
//! requests at once, refilled at `rate_per_s`. Time is a parameter, so the arithmetic is tested
//! without a clock. The table of buckets is bounded: when it grows past its cap, buckets that
//! have refilled completely (indistinguishable from new ones) are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most callers tracked before full buckets are evicted.
const MAX_BUCKETS: usize = 10_000;

/// Per-caller token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `burst` requests at once, `rate_per_s` sustained (both at least 1).
    pub fn new(rate_per_s: u32, burst: u32) -> Self {
        Self {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket at `now`, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate_per_s, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
            if buckets.len() >= MAX_BUCKETS {
                // Every tracked caller is active: refuse newcomers rather than grow without bound.
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = bucket.refilled(now, self.rate_per_s, self.burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate_per_s))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let rl = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.check("a", t0), Ok(()));
        }
        let wait = rl.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another caller has its own bucket.
        assert_eq!(rl.check("b", t0), Ok(()));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(rl.check("a", t1), Ok(()));
        assert!(rl.check("a", t1).is_err());
        // A long pause refills to `burst`, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(rl.check("a", t2), Ok(()));
        }
        assert!(rl.check("a", t2).is_err());
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let rl = RateLimiter::new(1, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(rl.check("a", t0), Ok(()));
        assert!(rl.check("a", t0 - Duration::from_secs(5)).is_err());
    }

    #[test]
    fn full_buckets_are_evicted_when_the_table_is_full() {
        let rl = RateLimiter::new(1000, 1);
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            assert_eq!(rl.check(&i.to_string(), t0), Ok(()));
        }
        // Every bucket is empty at t0: a newcomer is refused rather than grow the table.
        assert!(rl.check("new", t0).is_err());
        // Later every bucket has refilled: they are dropped and the newcomer gets in.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rl.check("new", t1), Ok(()));
        assert_eq!(rl.buckets.lock().unwrap().len(), 1);
    }
}
