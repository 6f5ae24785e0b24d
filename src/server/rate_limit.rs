//! Token buckets keyed by who asks (a source address, a TPM's EK): what an
//! unauthenticated caller may make the server spend.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets forgotten once this many are held (full ones first).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Up to `burst` requests at once per key, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key` at `now`; when none is left, how long
    /// until one is.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| refill(*b, now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(*bucket, now, self.per_second, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

fn refill(b: Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_refill() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let t = Instant::now();
        for _ in 0..3 {
            limiter.take(&"a", t).unwrap();
        }
        let wait = limiter.take(&"a", t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another key has its own bucket.
        limiter.take(&"b", t).unwrap();
        // Half a second later one more request passes, and only one.
        let later = t + Duration::from_millis(500);
        limiter.take(&"a", later).unwrap();
        assert!(limiter.take(&"a", later).is_err());
    }
}

/// The meters on `/v1/enroll/begin`.
#[derive(Debug)]
pub struct EnrolmentLimiter {
    pub by_address: RateLimiter<std::net::IpAddr>,
    pub by_ek: RateLimiter<String>,
    pub open_per_ek: u32,
}

impl EnrolmentLimiter {
    pub fn new(limits: &crate::config::EnrolmentLimits) -> Self {
        Self {
            by_address: RateLimiter::new(limits.per_address, 2.0 * limits.per_address),
            by_ek: RateLimiter::new(limits.per_ek_per_minute / 60.0, 5.0),
            open_per_ek: limits.open_per_ek,
        }
    }
}
