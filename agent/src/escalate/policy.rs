//! Which motion frames go to the detector: for as long as a motion event lasts, frames
//! at least `min_interval` apart, within a per-camera budget of `budget` frames per
//! `budget_window` (a token bucket: a burst of `budget` at once, then the window's
//! rate). The first motion frame after a quiet spell goes at once, since the bucket
//! refilled meanwhile. Pure: frame times in, decisions out.
//!
//! Deciding and spending are two steps: [`EscalationPolicy::wants`] says whether a frame
//! may go, [`EscalationPolicy::spent`] records one that really went. A frame whose colour
//! copy is gone or that finds the escalation queue full costs no budget.

use std::time::{Duration, SystemTime};

use super::EscalationConfig;

/// A token bucket on frame times: `capacity` tokens, refilled at `capacity / window`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    /// The latest time seen; earlier times (a clock step back) refill nothing.
    at: Option<SystemTime>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, window: Duration) -> Self {
        let capacity = f64::from(capacity.max(1));
        let secs = window.as_secs_f64();
        Self {
            capacity,
            per_sec: if secs > 0.0 {
                capacity / secs
            } else {
                f64::INFINITY
            },
            tokens: capacity,
            at: None,
        }
    }

    fn refill(&mut self, at: SystemTime) {
        match self.at {
            Some(prev) => {
                if let Ok(d) = at.duration_since(prev) {
                    self.tokens = (self.tokens + d.as_secs_f64() * self.per_sec).min(self.capacity);
                    self.at = Some(at);
                }
            }
            None => self.at = Some(at),
        }
    }

    /// True when a token is there at `at`.
    pub fn available(&mut self, at: SystemTime) -> bool {
        self.refill(at);
        self.tokens >= 1.0
    }

    /// Takes a token at `at` (none left: stays empty).
    pub fn take(&mut self, at: SystemTime) {
        self.refill(at);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

#[derive(Debug, Clone)]
pub struct EscalationPolicy {
    enabled: bool,
    min_interval: Duration,
    bucket: TokenBucket,
    last: Option<SystemTime>,
    sent: u64,
    /// Motion frames not sent because the budget was spent.
    pub over_budget: u64,
}

impl EscalationPolicy {
    pub fn new(cfg: &EscalationConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            min_interval: cfg.min_interval.get(),
            bucket: TokenBucket::new(cfg.budget.as_u32(), cfg.budget_window.get()),
            last: None,
            sent: 0,
            over_budget: 0,
        }
    }

    /// For a motion frame captured `at`: true when it may be escalated. Spends nothing;
    /// call [`EscalationPolicy::spent`] once it really went.
    pub fn wants(&mut self, at: SystemTime) -> bool {
        if !self.enabled {
            return false;
        }
        if let Some(last) = self.last {
            if at.duration_since(last).unwrap_or_default() < self.min_interval {
                return false;
            }
        }
        if !self.bucket.available(at) {
            self.over_budget += 1;
            return false;
        }
        true
    }

    /// Records a frame captured `at` as escalated: it spends budget and starts the
    /// interval.
    pub fn spent(&mut self, at: SystemTime) {
        self.bucket.take(at);
        self.last = Some(at);
        self.sent += 1;
    }

    /// Frames escalated so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Dur, IntIn};

    fn policy(budget: i64, window_ms: u64, interval_ms: u64) -> EscalationPolicy {
        EscalationPolicy::new(&EscalationConfig {
            budget: IntIn::new(budget).unwrap(),
            budget_window: Dur::ms(window_ms),
            min_interval: Dur::ms(interval_ms),
            ..EscalationConfig::default()
        })
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(ms)
    }

    /// Offers a frame every `step` ms from `from` to `to` and sends each one wanted.
    fn run(p: &mut EscalationPolicy, from: u64, to: u64, step: u64) -> Vec<u64> {
        let mut sent = Vec::new();
        for ms in (from..to).step_by(step as usize) {
            if p.wants(t(ms)) {
                p.spent(t(ms));
                sent.push(ms);
            }
        }
        sent
    }

    #[test]
    fn first_frame_goes_at_once_then_spaced_within_the_burst() {
        let mut p = policy(3, 3000, 200);
        let sent = run(&mut p, 0, 900, 100);
        assert_eq!(sent, [0, 200, 400], "burst of 3, 200 ms apart");
        assert_eq!(p.over_budget, 3, "600, 700 and 800 were over budget");
    }

    #[test]
    fn a_long_event_keeps_escalating_at_the_budget_rate() {
        // 3 frames per 3 s: after the burst, one a second, for as long as motion lasts.
        let mut p = policy(3, 3000, 200);
        let sent = run(&mut p, 0, 60_000, 100);
        assert_eq!(&sent[..3], [0, 200, 400]);
        assert!(
            sent.last().is_some_and(|&l| l >= 59_000),
            "still escalating after a minute: {sent:?}"
        );
        // Budget over any 3 s window: at most 3 + 3 (a full bucket plus its refill).
        for w in sent.windows(7) {
            assert!(w[6] - w[0] >= 3000, "7 frames within 3 s: {w:?}");
        }
        let n = sent.len();
        assert!((60..=63).contains(&n), "about 3 + 59 frames, got {n}");
    }

    #[test]
    fn a_quiet_spell_refills_the_budget() {
        let mut p = policy(2, 10_000, 0);
        assert_eq!(run(&mut p, 0, 1000, 100), [0, 100]);
        // 10 s later the bucket is full again: two at once.
        assert_eq!(run(&mut p, 11_000, 11_300, 100), [11_000, 11_100]);
    }

    #[test]
    fn a_frame_not_sent_spends_no_budget() {
        let mut p = policy(1, 60_000, 0);
        // Wanted ten times but never handed on (no colour copy, queue full).
        for ms in 0..10 {
            assert!(p.wants(t(ms)), "frame {ms}");
        }
        p.spent(t(10));
        assert!(
            !p.wants(t(20)),
            "the one token is spent by the frame that went"
        );
        assert_eq!(p.sent(), 1);
    }

    #[test]
    fn a_clock_step_back_neither_refills_nor_panics() {
        let mut p = policy(1, 1000, 0);
        assert!(p.wants(t(5000)));
        p.spent(t(5000));
        assert!(!p.wants(t(0)), "earlier time refills nothing");
        assert!(p.wants(t(6000)));
    }

    #[test]
    fn disabled_escalation_sends_nothing() {
        let mut p = EscalationPolicy::new(&EscalationConfig {
            enabled: false,
            ..EscalationConfig::default()
        });
        assert!(!p.wants(SystemTime::now()));
    }
}
