//! The emulated account quota: one token bucket per model id.
//!
//! A bucket holds at most `burst` tokens and refills at `requests_per_second`. A call takes one
//! token; a call that finds less than one token is answered with `ThrottlingException` at once.
//! A new bucket (first call for a model, or after the quota changed) starts full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::lock;

/// Token-bucket quota applied per model id.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Refill rate in tokens (calls) per second. `<= 0` means no refill.
    pub requests_per_second: f64,
    /// Bucket capacity (the most calls allowed back to back). Values below 1 act as 1.
    pub burst: f64,
}

impl Quota {
    /// A quota with `burst` equal to the rate (at least 1).
    pub fn per_second(requests_per_second: f64) -> Quota {
        Quota {
            requests_per_second,
            burst: requests_per_second.max(1.0),
        }
    }

    fn capacity(&self) -> f64 {
        if self.burst.is_finite() {
            self.burst.max(1.0)
        } else {
            1.0
        }
    }

    fn rate(&self) -> f64 {
        if self.requests_per_second.is_finite() {
            self.requests_per_second.max(0.0)
        } else {
            0.0
        }
    }
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn full(quota: &Quota, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: quota.capacity(),
            last: now,
        }
    }

    fn try_take(&mut self, quota: &Quota, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * quota.rate()).min(quota.capacity());
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// All buckets, keyed by decoded model id. The lock is held only for the arithmetic.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    map: Mutex<HashMap<String, TokenBucket>>,
}

impl Buckets {
    /// Takes one token from `model`'s bucket; false means "throttle this call".
    pub(crate) fn try_take(&self, model: &str, quota: &Quota) -> bool {
        let now = Instant::now();
        let mut map = lock(&self.map);
        if let Some(bucket) = map.get_mut(model) {
            return bucket.try_take(quota, now);
        }
        let mut bucket = TokenBucket::full(quota, now);
        let granted = bucket.try_take(quota, now);
        map.insert(model.to_owned(), bucket);
        granted
    }

    /// Forgets every bucket (they start full again).
    pub(crate) fn reset(&self) {
        lock(&self.map).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let q = Quota {
            requests_per_second: 10.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(&q, t0);
        assert!(b.try_take(&q, t0));
        assert!(b.try_take(&q, t0));
        assert!(!b.try_take(&q, t0));
        assert!(!b.try_take(&q, t0 + Duration::from_millis(50)));
        assert!(b.try_take(&q, t0 + Duration::from_millis(101)));
        // Capacity caps the refill.
        let later = t0 + Duration::from_secs(60);
        assert!(b.try_take(&q, later));
        assert!(b.try_take(&q, later));
        assert!(!b.try_take(&q, later));
    }

    #[test]
    fn tiny_burst_acts_as_one() {
        let q = Quota {
            requests_per_second: 0.0,
            burst: 0.1,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(&q, t0);
        assert!(b.try_take(&q, t0));
        assert!(!b.try_take(&q, t0 + Duration::from_secs(100)));
    }
}
