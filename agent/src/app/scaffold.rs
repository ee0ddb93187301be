//! What the long-running commands (`run`, `scaler`) share around their stages: the
//! metrics and health endpoint, the workers' part of the health report, the main
//! loop's housekeeping (its tick, process and GPU sampling) and the stop against one
//! deadline.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::scale::{spawn_pool, PoolHandle, PoolStatus, ScalingConfig, WorkerSpec};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::{self, metrics};
use crate::telemetry::{gpu, http, notify, process};

/// Serves `/metrics` and `/health` on `listen` (empty: off); a command goes on without
/// them when it cannot.
pub(super) async fn serve_http(
    listen: &str,
    health: http::HealthFn,
    clips_dir: Option<std::path::PathBuf>,
    shutdown: &Shutdown,
) {
    if listen.is_empty() {
        return;
    }
    match http::serve_endpoints(
        listen,
        health,
        clips_dir,
        shutdown.clone(),
        http::Limits::default(),
    )
    .await
    {
        Ok(addr) => {
            info!(lifecycle = "serving", %addr, "Metrics on http://{addr}/metrics, health on /health.")
        }
        Err(e) => warn!(listen = %listen, error = %e, "Cannot serve metrics; going on without."),
    }
}

/// The pool of `edge-agent worker` processes: none until the scaler asks, each given
/// `scaling.grace_period` to finish at a stop, restarted with backoff after a failure.
pub(super) fn spawn_workers(
    spec: WorkerSpec,
    scaling: &ScalingConfig,
    shutdown: &Shutdown,
) -> PoolHandle {
    spawn_pool(
        spec,
        scaling.grace_period.get(),
        scaling.worker_ready_timeout.get(),
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        shutdown.clone(),
    )
}

/// The worker pool in a health report (`/health`, the heartbeat).
pub(super) fn workers_health(w: &PoolStatus) -> serde_json::Value {
    serde_json::json!({ "running": w.running, "ready": w.ready, "target": w.target,
        "draining": w.draining, "held": w.held, "providers": w.providers, "pids": w.pids,
        "started": w.started, "crashes": w.crashes, "start_failures": w.start_failures,
        "last_failure": w.last_failure })
}

/// The main loop's turn: at least once a second, and as often as the systemd watchdog
/// needs; process and GPU usage sampled every [`process::SAMPLE_EVERY`].
pub(super) struct Housekeeping {
    watchdog: Option<Duration>,
    sampler: process::Sampler,
    gpus: gpu::GpuSampler,
    last_sample: Instant,
}

impl Housekeeping {
    pub fn new() -> Housekeeping {
        Housekeeping {
            watchdog: notify::watchdog_interval(),
            sampler: process::Sampler::default(),
            gpus: gpu::GpuSampler::detect(),
            last_sample: Instant::now() - process::SAMPLE_EVERY,
        }
    }

    pub fn tick(&self) -> Duration {
        self.watchdog
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    /// True when systemd expects watchdog pings.
    pub fn watchdog(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Samples this process and its workers when it is time.
    pub async fn sample(&mut self, pool: &PoolHandle) {
        if self.last_sample.elapsed() >= process::SAMPLE_EVERY {
            let pids = pool.status().pids;
            self.sampler.sample(&pids);
            self.gpus.sample(&pids).await;
            self.last_sample = Instant::now();
        }
    }
}

/// A stop against one deadline: each stage gets until [`Stop::stages_until`], what
/// closes last (the broker link) the rest. What had to be abandoned is named and makes
/// the exit status [`crate::shutdown::EXIT_UNCLEAN_STOP`].
pub(super) struct Stop {
    name: &'static str,
    deadline: tokio::time::Instant,
    stages_until: tokio::time::Instant,
    abandoned: Vec<String>,
}

impl Stop {
    /// Starts the stop of `name` within `total`, keeping `reserve` of it for the last
    /// step; logs `plan` and tells systemd.
    pub fn begin(name: &'static str, total: Duration, reserve: Duration, plan: &str) -> Stop {
        info!(lifecycle = "stopping", deadline = ?total, "{plan}");
        notify::stopping();
        let deadline = tokio::time::Instant::now() + total;
        Stop {
            name,
            deadline,
            stages_until: deadline - reserve.min(total),
            abandoned: Vec::new(),
        }
    }

    pub fn stages_until(&self) -> tokio::time::Instant {
        self.stages_until
    }

    /// What is left of the whole deadline.
    pub fn left(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }

    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    pub fn abandoned(&mut self, what: impl Into<String>) {
        self.abandoned.push(what.into());
    }

    /// True while nothing has been abandoned.
    pub fn clean(&self) -> bool {
        self.abandoned.is_empty()
    }

    /// Waits for `step` until the stages' deadline; `None` past it.
    pub async fn within<F: std::future::Future>(&self, step: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.stages_until, step).await.ok()
    }

    /// Waits for `task` until the stages' deadline; past it, aborts it, logs `late`
    /// and names it abandoned.
    pub async fn join<T>(&mut self, what: &str, mut task: JoinHandle<T>, late: &str) {
        if self.within(&mut task).await.is_none() {
            task.abort();
            warn!("{late}");
            self.abandoned(what);
        }
    }

    /// Workers finish what they hold within `scaling.grace_period` (the pool kills them
    /// after it); whoever is left at `until` is killed now.
    pub async fn workers(&mut self, pool: &PoolHandle, until: tokio::time::Instant) {
        if tokio::time::timeout_at(until, pool.stopped()).await.is_ok() {
            return;
        }
        let pids = pool.status().pids;
        warn!(pids = ?pids, "Workers still running at the stop deadline; killing them (their frames are delivered again).");
        // The pool's tasks own the children and signal them: a pid read from a status
        // snapshot may already name another process.
        pool.kill_all();
        // SIGKILL takes effect at once; the wait only sees the owners reap them.
        let reaped = tokio::time::Instant::now() + Duration::from_secs(1);
        if tokio::time::timeout_at(self.deadline.max(reaped), pool.stopped())
            .await
            .is_err()
        {
            warn!(pids = ?pool.status().pids, "Killed workers not reaped yet.");
        }
        metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("workers", "pool"))
            .inc();
        self.abandoned(format!("workers {pids:?}"));
    }

    /// Logs the end of the stop; the exit status.
    pub fn finish(self) -> i32 {
        if self.abandoned.is_empty() {
            info!(lifecycle = "stopped", "{} stopped.", self.name);
            0
        } else {
            warn!(lifecycle = "stopped_unclean", abandoned = ?self.abandoned, "{} stopped; some stages were abandoned.", self.name);
            crate::shutdown::EXIT_UNCLEAN_STOP
        }
    }
}
