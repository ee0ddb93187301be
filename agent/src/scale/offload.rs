//! Local first, remote when needed: whether an escalated frame goes to the remote
//! queue instead of the local one. Plain data in, a decision out.
//!
//! A frame is offloaded when a remote queue is configured and either
//! - local workers are absent: the last one failed (to start, or crashed) and none has
//!   been ready since (no GPU, missing runtime, bad model), or
//! - local workers are saturated: as many run as `max_workers` allows and the local
//!   backlog is above `offload_backlog`.

use super::{PoolStatus, ScalingConfig};

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
