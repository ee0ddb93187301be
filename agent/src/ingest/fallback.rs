//! Hardware decode that falls back: when the Jetson decoder gets a camera's stream and
//! the run ends with no decoded frame (an error, or nothing within the stall timeout)
//! twice in a row, the camera decodes in software, and tries the hardware again only
//! after [`HW_RETRY_AFTER`]. Plain state and instants in, decisions out.

use std::time::{Duration, Instant};

/// Hardware runs in a row that must fail before the camera falls back.
pub(crate) const FAILURES_TO_FALL_BACK: u32 = 2;
/// How long a camera stays on software decode before trying the hardware again: long
/// enough that a broken decoder costs two failed starts per half hour, not per minute.
pub(crate) const HW_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default)]
pub(crate) struct HwFallback {
    failures: u32,
    /// Since when the camera decodes in software, and why.
    fallen_back: Option<(Instant, String)>,
}

/// What the supervisor should report after a decision.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    /// Switched to software decode, for this reason.
    FellBack(String),
    /// The retry interval is over: the next run tries the hardware again.
    Retrying,
}

impl HwFallback {
    /// Whether the next run may use the hardware decoder.
    pub(crate) fn hardware_allowed(&mut self, now: Instant) -> (bool, Change) {
        match &self.fallen_back {
            Some((since, _)) if now.duration_since(*since) < HW_RETRY_AFTER => {
                (false, Change::None)
            }
            Some(_) => {
                self.fallen_back = None;
                self.failures = 0;
                (true, Change::Retrying)
            }
            None => (true, Change::None),
        }
    }

    /// After a run on the hardware decoder: `failure` is why it produced no frame from a
    /// stream that reached the decoder, None when it decoded frames (or never got data,
    /// which says nothing about the decoder).
    pub(crate) fn record(&mut self, failure: Option<String>, now: Instant) -> Change {
        let Some(reason) = failure else {
            self.failures = 0;
            return Change::None;
        };
        self.failures += 1;
        if self.failures < FAILURES_TO_FALL_BACK {
            return Change::None;
        }
        let why = format!(
            "hardware decoder failed {} times in a row (last: {reason}); software decode until {} min from the fallback",
            self.failures,
            HW_RETRY_AFTER.as_secs() / 60
        );
        self.fallen_back = Some((now, why.clone()));
        self.failures = 0;
        Change::FellBack(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_failed_hardware_runs_in_a_row_fall_back_until_the_retry_interval_is_over() {
        let t0 = Instant::now();
        let mut f = HwFallback::default();
        assert_eq!(f.hardware_allowed(t0), (true, Change::None));
        assert_eq!(f.record(Some("not-negotiated".into()), t0), Change::None);
        // A run that decoded frames breaks the streak.
        assert_eq!(f.record(None, t0), Change::None);
        assert_eq!(f.record(Some("not-negotiated".into()), t0), Change::None);
        assert_eq!(f.hardware_allowed(t0), (true, Change::None));
        let Change::FellBack(why) = f.record(Some("stalled".into()), t0) else {
            panic!("no fallback after two failures in a row");
        };
        assert!(
            why.contains("failed 2 times in a row (last: stalled)"),
            "{why}"
        );
        let later = t0 + HW_RETRY_AFTER - Duration::from_secs(1);
        assert_eq!(f.hardware_allowed(later), (false, Change::None));
        let after = t0 + HW_RETRY_AFTER;
        assert_eq!(f.hardware_allowed(after), (true, Change::Retrying));
        // The retry starts a fresh count: one more failure does not fall back at once.
        assert_eq!(f.record(Some("stalled".into()), after), Change::None);
        assert_eq!(f.hardware_allowed(after), (true, Change::None));
    }
}
