//! The agent's local workers as one stage: the pool of `edge-agent worker` processes,
//! the scaler that sizes it from the backlog, and the resend of frames published while
//! no worker was subscribed. Started and stopped here; reloads respec it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::scaffold::{self, Stop};
use crate::config::resolved::workers_differ;
use crate::config::{resolved_text, Config};
use crate::scale::offload::Offloader;
use crate::scale::{run_owned, run_scaler, PoolHandle, ScalingConfig, Wake, WorkerSpec};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::{self, metrics};
use crate::transport::AgentTransport;

pub(super) struct Workers {
    pub pool: PoolHandle,
    /// Wakes the scaler at once when a frame or a motion candidate goes out.
    pub wake: Arc<Wake>,
    /// Scaling settings as reloads change them, for the scaler and the escalator.
    scaling: watch::Sender<ScalingConfig>,
    /// Frames waiting for local workers and held by them (AMQP: the local queue's
    /// ready count plus what the workers report holding; MQTT: frames not yet
    /// answered), for the offload decision; the escalator adds the frames it sends
    /// between two polls.
    local_backlog: Arc<AtomicU64>,
    scaler: JoinHandle<()>,
    ready_watcher: JoinHandle<()>,
    /// The latest `edge-agent prepare` run (it kills its child at shutdown), and the
    /// token that stops it.
    prepare: std::sync::Mutex<Option<JoinHandle<()>>>,
    shutdown: Shutdown,
}

impl Workers {
    /// Starts the pool (empty: the scaler starts workers when there is a backlog),
    /// the scaler and the resend watcher. Workers run this binary's `worker`
    /// subcommand with the agent's own configuration.
    pub fn start(
        cfg: &Config,
        transport: &Arc<AgentTransport>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Workers> {
        let wake = Arc::new(Wake::default());
        let spec = worker_spec(cfg, transport)?;
        let prepare = prepare_engines(&spec, &cfg.inference, shutdown);
        let pool = scaffold::spawn_workers(spec, &cfg.scaling, shutdown);
        let local_backlog = Arc::new(AtomicU64::new(0));
        // The remote queue, declared (same arguments as its consumers) before a frame
        // goes there, and polled for the log.
        // It is on the pool's broker with `remote_url`, else on the frames transport's.
        let remote_probe = match &cfg.scaling.remote_queue {
            Some(q) => {
                let remote_cfg =
                    cfg.scaling
                        .remote_transport(&cfg.transport)
                        .unwrap_or_else(|| crate::transport::TransportConfig {
                            frames_queue: q.clone(),
                            ..cfg.transport.clone()
                        });
                Some(Arc::new(tokio::sync::Mutex::new(
                    crate::transport::amqp::QueueProbe::new(&remote_cfg).context("remote queue")?,
                )))
            }
            None => None,
        };
        let (scaling, scaling_rx) = watch::channel(cfg.scaling.clone());
        let scaler = {
            let t = transport.clone();
            let (local, p, remote) = (local_backlog.clone(), pool.clone(), remote_probe.clone());
            tokio::spawn(run_scaler(
                scaling_rx,
                pool.clone(),
                move || {
                    let (t, local, p, remote) =
                        (t.clone(), local.clone(), p.clone(), remote.clone());
                    async move {
                        if let Some(r) = remote {
                            if let Err(e) = r.lock().await.counts().await {
                                if metrics::should_log("remote-queue", Duration::from_secs(60)) {
                                    warn!(error = %e, "Cannot reach the remote queue; offloaded frames wait in the outbox.");
                                }
                            }
                        }
                        match t.backlog().await {
                            Ok(b) => {
                                metrics().backlog.set(b.unanswered as i64);
                                let here = match b.ready {
                                    Some(ready) => ready + p.status().held,
                                    None => b.unanswered,
                                };
                                local.store(here, Ordering::Relaxed);
                                Some(b.unanswered.max(b.ready.unwrap_or(0)))
                            }
                            Err(e) => {
                                if metrics::should_log("backlog", Duration::from_secs(60)) {
                                    warn!(error = %e, "Cannot read the backlog.");
                                }
                                None
                            }
                        }
                    }
                },
                wake.clone(),
                shutdown.clone(),
            ))
        };
        // MQTT keeps no frame published while no worker is subscribed: when the first
        // worker is ready (from zero), frames waiting for an answer go out again at
        // once rather than after `redeliver_after`.
        let ready_watcher = {
            let t = transport.clone();
            let mut ready = pool.ready_changes();
            tokio::spawn(async move {
                let mut before = 0;
                while ready.changed().await.is_ok() {
                    let now = *ready.borrow_and_update();
                    if before == 0 && now > 0 {
                        let n = t.resend_unanswered();
                        if n > 0 {
                            info!(frames = n, "First worker ready: frames published while none was subscribed sent again.");
                        }
                    }
                    before = now;
                }
            })
        };
        Ok(Workers {
            pool,
            wake,
            scaling,
            local_backlog,
            scaler,
            ready_watcher,
            prepare: std::sync::Mutex::new(prepare),
            shutdown: shutdown.clone(),
        })
    }

    /// The scaling settings as reloads change them.
    pub fn scaling(&self) -> watch::Receiver<ScalingConfig> {
        self.scaling.subscribe()
    }

    /// The escalator's choice between the local and the remote frames queue.
    pub fn offloader(&self) -> Offloader {
        Offloader {
            cfg: self.scaling(),
            local_backlog: self.local_backlog.clone(),
            last: None,
        }
    }

    /// Applies a reload's scaling and inference settings: the scaler and escalator get
    /// the new scaling settings; workers started from now on get the whole new
    /// configuration, and when a setting they use changed, those running are drained
    /// and replaced. Whether workers are replaced.
    pub fn reload(&self, running: &Config, next: &Config, transport: &AgentTransport) -> bool {
        let (pool, scaling) = (&self.pool, &self.scaling);
        scaling.send_if_modified(|s| {
            let changed = *s != next.scaling;
            *s = next.scaling.clone();
            changed
        });
        if running == next {
            return false;
        }
        let spec = match worker_spec(next, transport) {
            Ok(spec) => spec,
            Err(e) => {
                warn!(error = %e, "Workers keep the configuration they were started with.");
                return false;
            }
        };
        let replace = workers_differ(running, next);
        if running.inference != next.inference {
            if let Some(run) = prepare_engines(&spec, &next.inference, &self.shutdown) {
                // An older run still building waits on the cache lock or finishes;
                // only the latest is awaited at stop, the others end with shutdown.
                *crate::sync::lock(&self.prepare) = Some(run);
            }
        }
        pool.respec(
            spec,
            next.scaling.grace_period.get(),
            next.scaling.worker_ready_timeout.get(),
            replace,
        );
        replace
    }

    /// Workers finish what they hold (see [`Stop::workers`]); then the scaler and the
    /// watcher end.
    pub async fn stop(self, stop: &mut Stop) {
        let until = stop.stages_until();
        stop.workers(&self.pool, until).await;
        self.scaler.abort();
        self.ready_watcher.abort();
        let prepare = crate::sync::lock(&self.prepare).take();
        if let Some(run) = prepare {
            stop.join("prepare", run, "edge-agent prepare did not stop in time.")
                .await;
        }
    }
}

/// Starts `edge-agent prepare` in the background when ONNX Runtime has TensorRT (its
/// provider library lies next to libonnxruntime.so), so the engine is built at boot and
/// not by the first worker after the first motion. It holds the engine cache's lock
/// while it builds: a worker started meanwhile waits for it, then loads the engine.
fn prepare_engines(
    spec: &WorkerSpec,
    inference: &crate::infer::InferenceConfig,
    shutdown: &Shutdown,
) -> Option<JoinHandle<()>> {
    use crate::infer::config::Provider;
    if !inference.providers.contains(&Provider::Tensorrt) {
        return None;
    }
    let lib = crate::infer::session::find_library(inference.ort_library.as_deref()).ok()?;
    let has_trt = lib
        .parent()
        .is_some_and(|d| d.join("libonnxruntime_providers_tensorrt.so").is_file());
    if !has_trt {
        return None;
    }
    let mut cmd = tokio::process::Command::new(&spec.program);
    // The worker's arguments with the subcommand swapped: same configuration.
    cmd.arg("prepare")
        .args(spec.args.iter().skip(1))
        .envs(spec.env.iter().cloned())
        .stdin(spec.stdin());
    let spec = spec.clone();
    let shutdown = shutdown.clone();
    Some(tokio::spawn(async move {
        let started = Instant::now();
        match run_owned(cmd, |child| spec.feed(child), &shutdown).await {
            Ok(Some(out)) => {
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() {
                    info!(result = %line, took = ?started.elapsed(), "TensorRT engine prepared.");
                } else {
                    warn!(result = %line, status = %out.status, "TensorRT engine not prepared; workers build or skip it.");
                }
            }
            Ok(None) => info!("edge-agent prepare stopped for shutdown."),
            Err(e) => warn!(error = %e, "Cannot run edge-agent prepare."),
        }
    }))
}

/// How to start a worker on the configuration the agent runs: handed over on stdin
/// (the worker reads no file), with the embedded broker's port and credentials filled in.
fn worker_spec(running: &Config, transport: &AgentTransport) -> anyhow::Result<WorkerSpec> {
    let mut c = running.clone();
    c.transport = transport.worker_config(&c.transport);
    let text = resolved_text(&c).context("the workers' configuration")?;
    WorkerSpec::this_binary(text).context("cannot find this executable to start workers")
}
