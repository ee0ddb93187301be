//! Samples this process's CPU and memory (and the workers', by pid) into metrics.

use std::time::Duration;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::metrics::metrics;

pub struct Sampler {
    /// None where the platform offers no process information.
    sys: Option<System>,
    me: Pid,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            sys: System::new().ok(),
            me: Pid::from_u32(std::process::id()),
        }
    }
}

impl Sampler {
    /// Refreshes this process and the given worker pids; returns (own rss, [(pid, rss)]).
    pub fn sample(&mut self, workers: &[u32]) -> (u64, Vec<(u32, u64)>) {
        let mut pids: Vec<Pid> = workers.iter().map(|&p| Pid::from_u32(p)).collect();
        pids.push(self.me);
        let Some(sys) = self.sys.as_mut() else {
            return (0, Vec::new());
        };
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let own = sys
            .process(self.me)
            .map(|p| (p.memory(), p.cpu_usage()))
            .unwrap_or((0, 0.0));
        metrics().process_memory.set(own.0 as i64);
        metrics().process_cpu.set(own.1 as i64);
        let per: Vec<(u32, u64)> = workers
            .iter()
            .map(|&pid| {
                (
                    pid,
                    sys.process(Pid::from_u32(pid))
                        .map(|p| p.memory())
                        .unwrap_or(0),
                )
            })
            .collect();
        metrics().worker_memory.clear();
        for (pid, rss) in &per {
            metrics()
                .worker_memory
                .get_or_create(&vec![("pid", pid.to_string())])
                .set(*rss as i64);
        }
        (own.0, per)
    }
}

/// The interval at which [`Sampler::sample`] is worth calling (CPU use needs a gap).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
