//! The scaling decision, KEDA's semantics in plain data: backlog in, worker count out.
//!
//! - Activation: from zero, workers start only once the backlog reaches
//!   `activation_backlog`.
//! - Target: `ceil(backlog / backlog_per_worker)`, clamped to `min_workers..=max_workers`.
//! - Scale-out is immediate; scale-in follows the highest target seen during the last
//!   `cooldown_period` (HPA's stabilisation window), so a short lull does not stop a
//!   worker that has just loaded its model, and the count reaches `min_workers` (zero
//!   by default) only after `cooldown_period` without work.
//! - Pre-warm: a motion candidate (motion not yet confirmed as an event) asks for at
//!   least one worker, activation or not, so the worker loads its model while the
//!   event is being confirmed; it counts as work for the cooldown window, so a worker
//!   started for a candidate that never became an event goes after `cooldown_period`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ScalingConfig;

#[derive(Debug, Clone)]
pub struct Decider {
    min: u32,
    max: u32,
    activation: u64,
    per_worker: u64,
    cooldown: Duration,
    /// Targets computed within the cooldown window, oldest first.
    window: VecDeque<(Instant, u32)>,
}

impl Decider {
    pub fn new(cfg: &ScalingConfig) -> Self {
        Self {
            min: cfg.min_workers.get() as u32,
            max: cfg.max_workers.get() as u32,
            activation: cfg.activation_backlog.get() as u64,
            per_worker: cfg.backlog_per_worker.get() as u64,
            cooldown: cfg.cooldown_period.get(),
            window: VecDeque::new(),
        }
    }

    /// New bounds and thresholds (a reload); the targets seen within the cooldown
    /// window still count, so a reload does not stop a worker early.
    pub fn reconfigure(&mut self, cfg: &ScalingConfig) {
        let window = std::mem::take(&mut self.window);
        *self = Self {
            window,
            ..Self::new(cfg)
        };
    }

    /// The instantaneous target for a backlog, before the cooldown window.
    pub fn raw_target(&self, backlog: u64, current: u32) -> u32 {
        if current == 0 && backlog < self.activation {
            return self.min;
        }
        let want = backlog.div_ceil(self.per_worker).min(u64::from(u32::MAX)) as u32;
        want.clamp(self.min, self.max)
    }

    /// The worker count to run now, given the backlog (frames waiting plus frames
    /// being processed), the current count and whether a motion candidate was seen
    /// since the last decision.
    pub fn decide(&mut self, now: Instant, backlog: u64, current: u32, candidate: bool) -> u32 {
        let mut raw = self.raw_target(backlog, current);
        if candidate {
            raw = raw.max(1).min(self.max);
        }
        while let Some(&(t, _)) = self.window.front() {
            if now.duration_since(t) > self.cooldown {
                self.window.pop_front();
            } else {
                break;
            }
        }
        self.window.push_back((now, raw));
        let held = self.window.iter().map(|&(_, n)| n).max().unwrap_or(raw);
        // Without anything waiting, never start workers just to honour the window.
        if current == 0 && raw == self.min {
            return self.min;
        }
        held.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Dur, IntIn};

    fn cfg(min: i64, max: i64, activation: i64, per_worker: i64, cooldown_s: u64) -> ScalingConfig {
        ScalingConfig {
            min_workers: IntIn::new(min).unwrap(),
            max_workers: IntIn::new(max).unwrap(),
            activation_backlog: IntIn::new(activation).unwrap(),
            backlog_per_worker: IntIn::new(per_worker).unwrap(),
            cooldown_period: Dur::secs(cooldown_s),
            ..ScalingConfig::default()
        }
    }

    #[test]
    fn target_is_backlog_over_per_worker_rounded_up_and_clamped() {
        let d = Decider::new(&cfg(0, 4, 1, 4, 30));
        let rows = [
            (0, 0, 0),
            (1, 0, 1),
            (4, 1, 1),
            (5, 1, 2),
            (16, 2, 4),
            (100, 4, 4),
            (0, 3, 0),
        ];
        for (backlog, current, want) in rows {
            assert_eq!(
                d.raw_target(backlog, current),
                want,
                "backlog {backlog} current {current}"
            );
        }
        let floor = Decider::new(&cfg(1, 3, 1, 2, 30));
        assert_eq!(floor.raw_target(0, 1), 1, "min_workers is a floor");
    }

    #[test]
    fn a_reload_applies_new_bounds_at_once_and_keeps_the_cooldown_window() {
        let mut d = Decider::new(&cfg(0, 4, 1, 1, 10));
        let t0 = Instant::now();
        assert_eq!(d.decide(t0, 3, 0, false), 3);
        // A lower maximum caps the very next decision; the burst still holds what is
        // left of the window (no early scale-in because of the reload).
        d.reconfigure(&cfg(0, 2, 1, 1, 10));
        assert_eq!(d.decide(t0 + Duration::from_secs(1), 0, 3, false), 2);
        d.reconfigure(&cfg(0, 4, 1, 1, 10));
        assert_eq!(d.decide(t0 + Duration::from_secs(2), 0, 2, false), 3);
        // A new floor applies with nothing waiting.
        d.reconfigure(&cfg(1, 4, 1, 1, 1));
        assert_eq!(d.decide(t0 + Duration::from_secs(20), 0, 0, false), 1);
    }

    #[test]
    fn activation_backlog_gates_the_start_from_zero_only() {
        let d = Decider::new(&cfg(0, 4, 3, 1, 30));
        assert_eq!(d.raw_target(2, 0), 0, "below activation: stay at zero");
        assert_eq!(d.raw_target(3, 0), 3);
        assert_eq!(
            d.raw_target(2, 1),
            2,
            "once active, the plain target applies"
        );
    }

    #[test]
    fn scale_in_waits_for_the_cooldown_and_scale_out_is_immediate() {
        let mut d = Decider::new(&cfg(0, 4, 1, 1, 10));
        let t0 = Instant::now();
        assert_eq!(d.decide(t0, 3, 0, false), 3, "scale out at once");
        assert_eq!(
            d.decide(t0 + Duration::from_secs(1), 0, 3, false),
            3,
            "a lull keeps the workers"
        );
        assert_eq!(d.decide(t0 + Duration::from_secs(9), 1, 3, false), 3);
        assert_eq!(
            d.decide(t0 + Duration::from_secs(11), 1, 3, false),
            1,
            "the burst left the window"
        );
        assert_eq!(
            d.decide(t0 + Duration::from_secs(15), 0, 1, false),
            1,
            "still within cooldown of the last work"
        );
        assert_eq!(
            d.decide(t0 + Duration::from_secs(22), 0, 1, false),
            0,
            "back to zero after the cooldown"
        );
        assert_eq!(
            d.decide(t0 + Duration::from_secs(23), 0, 0, false),
            0,
            "and stays there"
        );
    }

    #[test]
    fn a_candidate_starts_one_worker_and_it_goes_after_the_cooldown() {
        // activation_backlog 3: frames alone would not start a worker from zero.
        let mut d = Decider::new(&cfg(0, 4, 3, 1, 10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(d.decide(t0, 0, 0, false), 0, "nothing moves: zero");
        assert_eq!(
            d.decide(at(1), 0, 0, true),
            1,
            "a candidate starts one worker"
        );
        assert_eq!(
            d.decide(at(2), 0, 1, false),
            1,
            "the candidate never became an event: the worker waits out the cooldown"
        );
        assert_eq!(
            d.decide(at(11), 0, 1, false),
            1,
            "still within the cooldown"
        );
        assert_eq!(d.decide(at(12), 0, 1, false), 0, "then it goes");
        assert_eq!(
            d.decide(at(13), 8, 2, true),
            4,
            "with a backlog, the plain target"
        );
        let mut capped = Decider::new(&cfg(2, 2, 1, 1, 10));
        assert_eq!(
            capped.decide(t0, 0, 2, true),
            2,
            "min_workers above one is kept"
        );
    }
}
