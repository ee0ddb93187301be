//! Which frames of a motion event go to the detector: the first motion frame at once,
//! then at most `max_frames` per event, at least `min_interval` apart. Pure: frame
//! times in, decisions out.

use std::time::{Duration, SystemTime};

use super::EscalationConfig;

#[derive(Debug, Clone)]
pub struct EscalationPolicy {
    enabled: bool,
    max_frames: u32,
    min_interval: Duration,
    event: Option<String>,
    sent: u32,
    last: Option<SystemTime>,
    /// Frames of active events not sent because the event's budget was spent.
    pub over_budget: u64,
}

impl EscalationPolicy {
    pub fn new(cfg: &EscalationConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            max_frames: cfg.max_frames.as_u32(),
            min_interval: cfg.min_interval.get(),
            event: None,
            sent: 0,
            last: None,
            over_budget: 0,
        }
    }

    /// Called for each analysis frame that belongs to motion event `event_id`;
    /// true when this frame should be escalated.
    pub fn should_send(&mut self, event_id: &str, at: SystemTime) -> bool {
        if !self.enabled {
            return false;
        }
        if self.event.as_deref() != Some(event_id) {
            self.event = Some(event_id.to_string());
            self.sent = 0;
            self.last = None;
        }
        if self.sent >= self.max_frames {
            self.over_budget += 1;
            return false;
        }
        if let Some(last) = self.last {
            if at.duration_since(last).unwrap_or_default() < self.min_interval {
                return false;
            }
        }
        self.sent += 1;
        self.last = Some(at);
        true
    }

    /// Frames sent for the current event.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{Dur, IntIn};

    fn policy(max: i64, interval_ms: u64) -> EscalationPolicy {
        EscalationPolicy::new(&EscalationConfig {
            max_frames: IntIn::new(max).unwrap(),
            min_interval: Dur::ms(interval_ms),
            ..EscalationConfig::default()
        })
    }

    #[test]
    fn first_frame_goes_at_once_then_spaced_and_bounded_per_event() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = policy(3, 200);
        let sent: Vec<bool> = [0, 100, 200, 300, 400, 600, 800]
            .iter()
            .map(|&ms| p.should_send("ev1", at(ms)))
            .collect();
        assert_eq!(sent, [true, false, true, false, true, false, false]);
        assert_eq!(p.over_budget, 2);
        assert!(
            p.should_send("ev2", at(900)),
            "a new event has a fresh budget"
        );
        assert_eq!(p.sent(), 1);
    }

    #[test]
    fn disabled_escalation_sends_nothing() {
        let mut p = EscalationPolicy::new(&EscalationConfig {
            enabled: false,
            ..EscalationConfig::default()
        });
        assert!(!p.should_send("ev", SystemTime::now()));
    }
}
