//! `edge-agent scaler`: for a GPU server that serves many boxes from one shared AMQP
//! frames queue. No cameras: it watches the queue and keeps `edge-agent worker`
//! children at the count the backlog asks for (the same pool and decision as
//! `edge-agent run`), with the same READY/WATCHDOG notifications, metrics endpoint and
//! graceful SIGTERM.
//!
//! The backlog is `ready + held`:
//! - `ready`: a passive declare of the frames queue. It does not count messages
//!   delivered to a consumer and not yet acked: RabbitMQ returns only the ready count,
//!   the blind spot KEDA's RabbitMQ scaler has too unless it reads the management API.
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
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::scaffold::{self, Housekeeping, Stop};
use crate::config::{Loaded, EXIT_CONFIG};
use crate::scale::{run_scaler, Wake, WorkerSpec};
use crate::shutdown::Lifetime;
use crate::telemetry::metrics::{self, metrics};
use crate::telemetry::{http, notify};
use crate::transport::amqp::QueueProbe;
use crate::transport::TransportKind;

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
    let lifetime = Lifetime::with_signals();
    let shutdown = lifetime.shutdown().clone();
    let queue = cfg.transport.frames_queue.clone();
    info!(lifecycle = "starting", version = crate::VERSION, queue = %queue, max_workers = cfg.scaling.max_workers.get(), "edge-agent scaler starting.");
    let probe = Arc::new(Mutex::new(
        QueueProbe::new(&cfg.transport).context("transport")?,
    ));

    // Workers run on this scaler's configuration, handed over on stdin.
    let text = crate::config::resolved_text(&cfg).context("the workers' configuration")?;
    let spec =
        WorkerSpec::this_binary(text).context("cannot find this executable to start workers")?;
    let pool = scaffold::spawn_workers(spec, &cfg.scaling, &shutdown);
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
                                warn!(queue = %q, error = %crate::values::secret::redact_text(&e.to_string()), "Cannot read the backlog; workers stay as they are.");
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

    let health: http::HealthFn = {
        let (p, last) = (pool.clone(), last_backlog.clone());
        let q = queue.clone();
        Arc::new(move || {
            serde_json::json!({ "version": crate::VERSION, "queue": q, "backlog": last.load(Ordering::Relaxed),
                "workers": scaffold::workers_health(&p.status()) })
        })
    };
    scaffold::serve_http(&cfg.telemetry.metrics_listen, health, None, &shutdown).await;

    notify::ready(&format!("scaling workers on {queue}"));
    info!(lifecycle = "running", queue = %queue, "edge-agent scaler running.");
    let mut housekeeping = Housekeeping::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(housekeeping.tick()) => {}
            _ = shutdown.cancelled() => break,
        }
        notify::watchdog();
        housekeeping.sample(&pool).await;
    }

    // Workers get `grace_period` (then the pool kills them); the stop ends after it
    // whatever happens, with a non-zero status when something was left.
    let mut stop = Stop::begin(
        "edge-agent scaler",
        cfg.scaling.grace_period.get() + CLOSE_BOUND,
        CLOSE_BOUND / 2,
        "Stopping: workers finish the frames they hold.",
    );
    scaler.abort();
    let until = stop.stages_until();
    stop.workers(&pool, until).await;
    let close = async { probe.lock().await.close().await };
    if tokio::time::timeout_at(stop.deadline(), close)
        .await
        .is_err()
    {
        warn!(queue = %queue, "The queue connection did not close in time.");
        stop.abandoned(format!("queue {queue}"));
    }
    Ok(stop.finish())
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
