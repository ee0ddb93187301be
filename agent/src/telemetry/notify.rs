//! systemd notification: `READY=1` once cameras are set up, `WATCHDOG=1` pings, `STATUS=`
//! lines, `RELOADING=1` and `STOPPING=1`. Does nothing when `NOTIFY_SOCKET` is unset.
//!
//! The watchdog is pinged only while every stage makes progress: each stage that can
//! hang (a camera supervisor, the transport) keeps a [`Beat`], and the main loop pings
//! only when none of them is older than [`STALE_AFTER`]. A hung camera or transport
//! stops the pings and systemd restarts the agent, as a hung main loop does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::time::Instant;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        if super::metrics::should_log("sd_notify", Duration::from_secs(60)) {
            tracing::warn!(error = %e, "Could not notify systemd.");
        }
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
    ]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping: half of `WatchdogSec`, or `None` when the watchdog is off.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// A stage whose last turn is older than this is stuck: the watchdog is not pinged.
/// Above every bounded wait of a stage (a pipeline teardown, a backoff step).
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// A stage's sign of life: when its loop last turned. Cheap to clone and to beat.
#[derive(Clone, Debug)]
pub struct Beat(Arc<AtomicU64>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for Beat {
    fn default() -> Self {
        let b = Beat(Arc::new(AtomicU64::new(0)));
        b.beat();
        b
    }
}

impl Beat {
    /// Records a turn of the stage's loop now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(epoch()).as_millis() as u64;
        self.0.store(ms, Ordering::Relaxed);
    }

    /// Time from the last turn to `now`.
    pub fn age(&self, now: Instant) -> Duration {
        let at = epoch() + Duration::from_millis(self.0.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }
}

/// The stages (by name) whose last turn is older than `limit` at `now`, with their
/// ages.
pub fn stalled<'a>(
    stages: impl IntoIterator<Item = (&'a str, &'a Beat)>,
    now: Instant,
    limit: Duration,
) -> Vec<(String, Duration)> {
    stages
        .into_iter()
        .map(|(name, b)| (name, b.age(now)))
        .filter(|(_, age)| *age > limit)
        .map(|(name, age)| (name.to_string(), age))
        .collect()
}

/// Pings the watchdog when no stage is stalled; otherwise logs (once a minute) which
/// ones are, and does not ping. Returns the stalled stages.
pub fn watchdog_if_progress<'a>(
    stages: impl IntoIterator<Item = (&'a str, &'a Beat)>,
) -> Vec<(String, Duration)> {
    let stuck = stalled(stages, Instant::now(), STALE_AFTER);
    if stuck.is_empty() {
        watchdog();
    } else if super::metrics::should_log("watchdog-withheld", Duration::from_secs(60)) {
        tracing::warn!(lifecycle = "stalled", stalled = ?stuck, "Watchdog not pinged: a stage makes no progress.");
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_stops_beating_is_reported_and_the_others_are_not() {
        let (camera, transport) = (Beat::default(), Beat::default());
        let stages = || [("camera gate", &camera), ("transport", &transport)];
        let start = Instant::now() + Duration::from_secs(1);
        camera.beat_at(start);
        transport.beat_at(start);
        assert!(stalled(stages(), start, STALE_AFTER).is_empty());
        // The transport turns every second for 20 s; the camera never again.
        let mut now = start;
        for _ in 0..20 {
            now += Duration::from_secs(1);
            transport.beat_at(now);
        }
        let stuck = stalled(stages(), now, STALE_AFTER);
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!(stuck[0].0, "camera gate");
        assert!(stuck[0].1 >= Duration::from_secs(20), "{stuck:?}");
        // Just under the limit is not stale yet; a turn clears it.
        let under = start + STALE_AFTER - Duration::from_millis(10);
        assert!(stalled(stages(), under, STALE_AFTER).is_empty());
        camera.beat_at(now);
        assert!(stalled(stages(), now, STALE_AFTER).is_empty());
    }
}
