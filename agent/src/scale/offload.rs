//! Local first, remote when needed: whether an escalated frame goes to the remote
//! queue instead of the local one. Plain data in, a decision out.
//!
//! A frame is offloaded when a remote queue is configured and either
//! - local workers are absent: the last one failed (to start, or crashed) and none has
//!   been ready since (no GPU, missing runtime, bad model), or
//! - local workers are saturated: as many run as `max_workers` allows and the local
//!   backlog is above `offload_backlog`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use super::{PoolStatus, ScalingConfig};
use crate::telemetry::metrics::metrics;

/// Why a frame goes remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// Local workers cannot run.
    LocalAbsent,
    /// Local workers are at `max_workers` with the backlog above `offload_backlog`.
    LocalSaturated,
}

impl Offload {
    pub fn label(self) -> &'static str {
        match self {
            Offload::LocalAbsent => "local_absent",
            Offload::LocalSaturated => "local_saturated",
        }
    }
}

/// `local_backlog`: frames waiting for local workers plus those they hold.
pub fn decide(cfg: &ScalingConfig, pool: &PoolStatus, local_backlog: u64) -> Option<Offload> {
    cfg.remote_queue.as_ref()?;
    if pool.failing && pool.ready == 0 {
        return Some(Offload::LocalAbsent);
    }
    let max = cfg.max_workers.get() as u32;
    if pool.running >= max && local_backlog > cfg.offload_backlog.get() as u64 {
        return Some(Offload::LocalSaturated);
    }
    None
}

/// Local first, remote when needed, frame by frame: [`decide`] on the pool's status and
/// the local backlog, with each change of mind logged once and each frame counted.
pub struct Offloader {
    /// `remote_queue` in it never changes while running (a restart applies it).
    pub cfg: watch::Receiver<ScalingConfig>,
    pub local_backlog: Arc<AtomicU64>,
    /// The decision for the last frame, to log changes only.
    pub last: Option<Offload>,
}

impl Offloader {
    /// The queue for the next frame: None for the local one.
    pub fn route(&mut self, pool: &PoolStatus) -> Option<String> {
        let backlog = self.local_backlog.load(Ordering::Relaxed);
        let cfg = self.cfg.borrow().clone();
        let now = decide(&cfg, pool, backlog);
        if now != self.last {
            match now {
                Some(why) => info!(
                    lifecycle = "offload_remote",
                    reason = why.label(),
                    workers = pool.running,
                    ready = pool.ready,
                    backlog,
                    offload_backlog = cfg.offload_backlog.get(),
                    "Offloading frames to the remote queue."
                ),
                None => info!(
                    lifecycle = "offload_local",
                    workers = pool.running,
                    backlog,
                    "Frames go to local workers again."
                ),
            }
            self.last = now;
        }
        now.and(cfg.remote_queue)
    }

    /// Counts a frame sent where [`Offloader::route`] said.
    pub fn sent(&self, camera: &str) {
        match self.last {
            Some(why) => {
                metrics()
                    .offloaded
                    .get_or_create(&vec![
                        ("camera", camera.to_string()),
                        ("reason", why.label().to_string()),
                    ])
                    .inc();
            }
            // Until the next poll, a frame sent locally is local backlog.
            None => {
                self.local_backlog.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::IntIn;

    #[test]
    fn frames_go_remote_only_when_local_workers_are_absent_or_saturated() {
        let cfg = ScalingConfig {
            max_workers: IntIn::new(2).unwrap(),
            offload_backlog: IntIn::new(4).unwrap(),
            remote_queue: Some("centre.frames".into()),
            ..ScalingConfig::default()
        };
        let pool = |running: u32, ready: u32, failing: bool| PoolStatus {
            running,
            ready,
            failing,
            ..PoolStatus::default()
        };
        let rows = [
            // (running, ready, failing, backlog, want)
            (0, 0, false, 100, None), // from zero: start local workers first
            (1, 1, false, 100, None), // below max_workers: scale out locally
            (2, 2, false, 4, None),   // at max, backlog at the threshold
            (2, 2, false, 5, Some(Offload::LocalSaturated)),
            (2, 1, false, 5, Some(Offload::LocalSaturated)),
            (0, 0, true, 1, Some(Offload::LocalAbsent)), // workers cannot start
            (1, 0, true, 0, Some(Offload::LocalAbsent)), // the retry is not ready yet
            (2, 1, true, 0, None),                       // one crashed, another still serves
        ];
        for (running, ready, failing, backlog, want) in rows {
            assert_eq!(
                decide(&cfg, &pool(running, ready, failing), backlog),
                want,
                "running {running} ready {ready} failing {failing} backlog {backlog}"
            );
        }
        let no_remote = ScalingConfig {
            remote_queue: None,
            ..cfg.clone()
        };
        assert_eq!(decide(&no_remote, &pool(2, 2, false), 100), None);
        assert_eq!(decide(&no_remote, &pool(0, 0, true), 100), None);
    }
}
