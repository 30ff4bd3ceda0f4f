//! A token bucket refilled lazily from the clock: no timer per bucket, so an
//! idle site or address costs nothing.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        self.updated = now;
    }

    /// Takes `n` tokens, or none and says how long until they are there.
    pub fn take(&mut self, n: u32, rate: u32, burst: u32, now: Instant) -> Result<(), f64> {
        self.refill(rate, burst, now);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err((n - self.tokens) / f64::from(rate.max(1)))
        }
    }

    /// Whether the bucket is full again, so forgetting it changes nothing.
    pub fn is_full(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= f64::from(burst.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3);
        for _ in 0..3 {
            assert!(bucket.take(1, 2, 3, start).is_ok());
        }
        let wait = bucket.take(1, 2, 3, start).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(
            bucket
                .take(1, 2, 3, start + Duration::from_millis(500))
                .is_ok()
        );
        assert!(!bucket.is_full(2, 3, start + Duration::from_millis(500)));
        assert!(bucket.is_full(2, 3, start + Duration::from_secs(10)));
        assert!(
            bucket
                .take(4, 2, 3, start + Duration::from_secs(10))
                .is_err()
        );
    }
}
