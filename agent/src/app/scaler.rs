//! `edge-agent scaler`: for a GPU server that serves many boxes from one shared AMQP
//! frames queue. No cameras: it watches the queue and keeps `edge-agent worker`
//! children at the count the backlog asks for (the same pool and decision as
//! `edge-agent run`), with the same READY/WATCHDOG notifications, metrics endpoint and
//! graceful SIGTERM.
//!
//! The backlog is `ready + held`:
//! - `ready`: a passive declare of the frames queue. It does not count messages
//!   delivered to a consumer and not yet acked (see NOTES.md).
//! - `held`: what this scaler's own workers report holding (each prints its count of
//!   delivered, unsettled frames on stdout when it changes). This is exact for our
//!   workers, unlike `consumers * prefetch`, which counts an idle worker as a full
//!   prefetch of work and so would never let the pool return to zero. Consumers that
//!   are not ours (another scaler, a KEDA deployment) hold frames we cannot see; their
//!   frames are theirs to scale for. Between the broker's delivery and the worker's
//!   report a frame is briefly in neither count; scale-in follows the highest target of
//!   the whole cooldown window, so such a dip never stops a worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{Loaded, EXIT_CONFIG};
use crate::escalate::amqp::QueueProbe;
use crate::escalate::TransportKind;
use crate::scale::{run_scaler, spawn_pool, Wake, WorkerSpec};
use crate::shutdown::{install_signal_handlers, Shutdown};
use crate::telemetry::metrics::{self, metrics};
use crate::telemetry::{gpu, http, notify, process};

/// Time for the queue probe's goodbye after the workers stopped.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// The configuration error when the transport is not AMQP, or None.
pub fn transport_error(kind: TransportKind) -> Option<String> {
    match kind {
        TransportKind::Amqp => None,
        other => Some(format!(
            "transport.kind: edge-agent scaler serves workers from a shared AMQP queue, so it needs kind = \"amqp\" (with transport.amqp_url and transport.frames_queue); got {:?}\n",
            format!("{other:?}").to_lowercase()
        )),
    }
}

pub fn run(loaded: Loaded) -> i32 {
    if let Some(e) = transport_error(loaded.config.transport.kind) {
        eprint!("{e}");
        return EXIT_CONFIG;
    }
    super::run_on_runtime(
        "edge-scaler",
        Some(2),
        "The scaler stopped on an error.",
        run_scaler_cmd(loaded),
    )
}

async fn run_scaler_cmd(loaded: Loaded) -> anyhow::Result<i32> {
    let cfg = loaded.config;
    let shutdown = Shutdown::new();
    install_signal_handlers(shutdown.clone());
    let queue = cfg.transport.frames_queue.clone();
    info!(version = crate::VERSION, queue = %queue, max_workers = cfg.scaling.max_workers.get(), "edge-agent scaler starting.");
    let probe = Arc::new(Mutex::new(
        QueueProbe::new(&cfg.transport).context("transport")?,
    ));

    // Workers run on this scaler's configuration, handed over on stdin.
    let spec = WorkerSpec::this_binary(crate::config::resolved_text(&cfg))
        .context("cannot find this executable to start workers")?;
    let pool = spawn_pool(
        spec,
        cfg.scaling.grace_period.get(),
        cfg.scaling.worker_ready_timeout.get(),
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        shutdown.clone(),
    );
    // Last backlog seen, for /health.
    let last_backlog = Arc::new(AtomicU64::new(0));
    let scaler = {
        let (probe, pool2, last) = (probe.clone(), pool.clone(), last_backlog.clone());
        let q = queue.clone();
        tokio::spawn(run_scaler(
            tokio::sync::watch::channel(cfg.scaling.clone()).1,
            pool.clone(),
            move || {
                let (probe, pool, last, q) =
                    (probe.clone(), pool2.clone(), last.clone(), q.clone());
                async move {
                    match probe.lock().await.counts().await {
                        Ok((ready, _consumers)) => {
                            let b = ready + pool.status().held;
                            metrics().backlog.set(b as i64);
                            last.store(b, Ordering::Relaxed);
                            Some(b)
                        }
                        Err(e) => {
                            if metrics::should_log("scaler-backlog", Duration::from_secs(30)) {
                                warn!(queue = %q, error = %crate::config::secret::redact_text(&e.to_string()), "Cannot read the backlog; workers stay as they are.");
                            }
                            None
                        }
                    }
                }
            },
            // Nothing escalates here: the poll is the only trigger.
            Arc::new(Wake::default()),
            shutdown.clone(),
        ))
    };

    if !cfg.telemetry.metrics_listen.is_empty() {
        let (p, last) = (pool.clone(), last_backlog.clone());
        let q = queue.clone();
        let health: http::HealthFn = Arc::new(move || {
            let w = p.status();
            serde_json::json!({ "version": crate::VERSION, "queue": q, "backlog": last.load(Ordering::Relaxed),
                "workers": { "running": w.running, "ready": w.ready, "target": w.target, "held": w.held, "providers": w.providers,
                    "pids": w.pids, "started": w.started, "crashes": w.crashes, "start_failures": w.start_failures,
                    "last_failure": w.last_failure } })
        });
        match http::serve(&cfg.telemetry.metrics_listen, health, shutdown.clone()).await {
            Ok(addr) => info!(%addr, "Metrics on http://{addr}/metrics, health on /health."),
            Err(e) => {
                warn!(listen = %cfg.telemetry.metrics_listen, error = %e, "Cannot serve metrics; going on without.")
            }
        }
    }

    notify::ready(&format!("scaling workers on {queue}"));
    info!(queue = %queue, "edge-agent scaler running.");
    let watchdog = notify::watchdog_interval();
    let tick = watchdog
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut sampler = process::Sampler::default();
    let mut gpus = gpu::GpuSampler::detect();
    let mut last_sample = Instant::now() - process::SAMPLE_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => break,
        }
        notify::watchdog();
        if last_sample.elapsed() >= process::SAMPLE_EVERY {
            let pids = pool.status().pids;
            sampler.sample(&pids);
            gpus.sample(&pids).await;
            last_sample = Instant::now();
        }
    }

    // Workers get `grace_period` (then the pool kills them); the stop ends after it
    // whatever happens, with a non-zero status when something was left.
    let stop_timeout = cfg.scaling.grace_period.get() + CLOSE_BOUND;
    info!(deadline = ?stop_timeout, "Stopping: workers finish the frames they hold.");
    notify::stopping();
    let deadline = tokio::time::Instant::now() + stop_timeout;
    let mut clean = true;
    scaler.abort();
    if tokio::time::timeout_at(deadline - CLOSE_BOUND / 2, pool.stopped())
        .await
        .is_err()
    {
        let pids = pool.status().pids;
        warn!(pids = ?pids, "Workers still running at the stop deadline; killing them (their frames are delivered again).");
        super::run::kill_workers(&pids);
        clean = false;
    }
    let close = async { probe.lock().await.close().await };
    if tokio::time::timeout_at(deadline, close).await.is_err() {
        warn!(queue = %queue, "The queue connection did not close in time.");
        clean = false;
    }
    if clean {
        info!("edge-agent scaler stopped.");
        Ok(0)
    } else {
        warn!("edge-agent scaler stopped; some stages were abandoned.");
        Ok(crate::shutdown::EXIT_UNCLEAN_STOP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_amqp_is_accepted_and_the_error_names_transport_kind() {
        assert_eq!(transport_error(TransportKind::Amqp), None);
        for (kind, name) in [
            (TransportKind::Mqtt, "\"mqtt\""),
            (TransportKind::Embedded, "\"embedded\""),
        ] {
            let e = transport_error(kind).unwrap();
            assert!(e.starts_with("transport.kind:") && e.contains(name), "{e}");
        }
    }
}
