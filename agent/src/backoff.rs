//! The one backoff used for every restart (cameras, broker links, workers):
//! exponential from `min` to `max`, with full jitter in the upper half, and a record
//! of why the last restart happened.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    /// Why the last restart happened, for status output.
    pub last_reason: Option<String>,
    /// Restarts so far.
    pub restarts: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            last_reason: None,
            restarts: 0,
        }
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u64.checked_shl(self.attempt.min(30)).unwrap_or(u64::MAX);
        let ms = (self.min.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next try:
    /// a random delay in `[ceiling/2, ceiling]`, never above `max`.
    pub fn next_delay(&mut self, reason: impl Into<String>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        self.restarts += 1;
        self.last_reason = Some(reason.into());
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// True after a failure and until [`Backoff::reset`].
    pub fn failing(&self) -> bool {
        self.attempt > 0
    }

    /// Called once the thing runs well again: the next failure starts from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_stay_under_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for i in 0..8 {
            let c = b.ceiling();
            let d = b.next_delay(format!("fail {i}"));
            assert!(
                d <= c && d >= c / 2,
                "delay {d:?} outside [{:?}, {c:?}]",
                c / 2
            );
            ceilings.push(c.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.restarts, 8);
        assert_eq!(b.last_reason.as_deref(), Some("fail 7"));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
