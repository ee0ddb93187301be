//! `edge-agent run`: builds every stage from the configuration, wires them with bounded
//! channels and runs until shutdown.
//!
//! cameras (ingest) → per-camera motion loop → escalator (owns the transport handle)
//! → broker → workers (child processes, started by the scaler) → results back here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::cli::ConfigArgs;
use crate::clock::Stamp;
use crate::config::resolved::{apply_live, restart_needed, workers_differ};
use crate::config::{resolved_text, Config, Loaded};
use crate::escalate::camera::{self as camera_loop, Candidate, EscalatedFrame, Escalation};
use crate::escalate::message::{FrameHeader, FrameMessage};
use crate::escalate::transport::AgentTransport;
use crate::escalate::{regions, TransportKind};
use crate::image;
use crate::ingest::{spawn_camera, CameraConfig, CameraHandle};
use crate::motion::MotionTransition;
use crate::scale::offload::{self, Offload};
use crate::scale::prewarm::CandidateStarts;
use crate::scale::{run_scaler, spawn_pool, PoolHandle, ScalingConfig, Wake, WorkerSpec};
use crate::shutdown::{Lifetime, Shutdown};
use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics};
use crate::telemetry::{gpu, http, notify, process};

/// The part of the stop deadline kept for the transport's flush and goodbye (at most a
/// quarter of the deadline).
const TRANSPORT_RESERVE: Duration = Duration::from_secs(3);

/// How long a camera stopped by a reload may take; past it, it is abandoned (its
/// pipeline teardown has its own, shorter bound).
const RETIRE_BOUND: Duration = Duration::from_secs(10);

struct Camera {
    cfg: CameraConfig,
    handle: Arc<CameraHandle>,
    stop: Shutdown,
    motion: tokio::task::JoinHandle<()>,
}

pub fn run(loaded: Loaded, args: &ConfigArgs) -> i32 {
    super::run_on_runtime(
        "edge-agent",
        None,
        "The agent stopped on an error.",
        run_agent(loaded, args.clone()),
    )
}

async fn run_agent(loaded: Loaded, args: ConfigArgs) -> anyhow::Result<i32> {
    // `cfg` is the configuration at start, for what only a restart changes; `running`
    // is what runs now, with what reloads applied (cameras, inference, scaling).
    let cfg = loaded.config.clone();
    let mut running = loaded.config.clone();
    let device = cfg.device.id.to_string();
    let lifetime = Lifetime::with_signals();
    let shutdown = lifetime.shutdown().clone();
    info!(device = %device, version = crate::VERSION, cameras = cfg.cameras.len(), transport = ?cfg.transport.kind, "edge-agent starting.");

    let transport = Arc::new(
        AgentTransport::connect(&cfg.transport, &device, lifetime.end())
            .await
            .with_context(|| format!("transport {:?}", cfg.transport.kind))?,
    );
    if let Some(addr) = transport.broker_addr() {
        info!(%addr, "Embedded MQTT broker listening on loopback.");
    }

    // Workers: this binary's `worker` subcommand with the agent's own configuration.
    let wake = Arc::new(Wake::default());
    let spec = worker_spec(&running, &transport)?;
    prepare_engines(&spec, &cfg.inference);
    let pool = spawn_pool(
        spec,
        cfg.scaling.grace_period.get(),
        cfg.scaling.worker_ready_timeout.get(),
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        shutdown.clone(),
    );
    // Frames waiting for local workers and held by them (AMQP: the local queue's ready
    // count plus what the workers report holding; MQTT: frames not yet answered), for
    // the offload decision; the escalator adds the frames it sends between two polls.
    let local_backlog = Arc::new(AtomicU64::new(0));
    // The remote queue, declared (same arguments as its consumers) before a frame goes
    // there, and polled for the log.
    let remote_probe = match &cfg.scaling.remote_queue {
        Some(q) => {
            let mut remote_cfg = cfg.transport.clone();
            remote_cfg.frames_queue = q.clone();
            Some(Arc::new(tokio::sync::Mutex::new(
                crate::escalate::amqp::QueueProbe::new(&remote_cfg).context("remote queue")?,
            )))
        }
        None => None,
    };
    // Scaling settings as reloads change them, for the scaler and the escalator.
    let (scaling_tx, scaling_rx) = watch::channel(cfg.scaling.clone());
    let scaler = {
        let t = transport.clone();
        let (local, p, remote) = (local_backlog.clone(), pool.clone(), remote_probe.clone());
        tokio::spawn(run_scaler(
            scaling_rx.clone(),
            pool.clone(),
            move || {
                let (t, local, p, remote) = (t.clone(), local.clone(), p.clone(), remote.clone());
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
    // worker is ready (from zero), frames waiting for an answer go out again at once
    // rather than after `redeliver_after`.
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

    // Cameras and their motion loops; the escalator owns publishing.
    let (esc_tx, esc_rx) = mpsc::channel::<Escalation>(64);
    let mut cameras: BTreeMap<String, Camera> = BTreeMap::new();
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        cameras.insert(
            cam.id.to_string(),
            start_camera(cam.clone(), esc_tx.clone(), &shutdown),
        );
    }
    let escalator = tokio::spawn(escalate(
        esc_rx,
        transport.clone(),
        device.clone(),
        wake.clone(),
        scaling_rx.clone(),
        pool.clone(),
        Offloader {
            cfg: scaling_rx.clone(),
            local_backlog: local_backlog.clone(),
            last: None,
        },
    ));
    // Results outlive the workers at stop: the answers to their last frames still
    // count, then live incidents end.
    let results_stop = tokio_util::sync::CancellationToken::new();
    let results = tokio::spawn(crate::results::run(
        transport.clone(),
        device.clone(),
        cfg.events.clone(),
        results_stop.clone(),
    ));

    // Health, as /health and the heartbeat report it. Cameras are held weakly (the
    // report must not keep a camera alive past its stop) and refreshed on reload.
    let watched = Arc::new(std::sync::Mutex::new(watch_list(&cameras)));
    // Settings changed in the files that only a restart applies, since the last reload.
    let pending_restart: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let health: http::HealthFn = {
        let watched = watched.clone();
        let pending = pending_restart.clone();
        let p = pool.clone();
        let t = transport.clone();
        Arc::new(move || {
            let cams: serde_json::Map<String, serde_json::Value> = lock(&watched)
                .iter()
                .filter_map(|(id, h)| h.upgrade().map(|h| (id, h)))
                .map(|(id, h)| {
                    let s = h.status();
                    (id.clone(), serde_json::json!({ "state": format!("{:?}", s.state), "restarts": s.restarts, "last_reason": s.last_reason, "frames": s.frames, "decoder": s.decoder, "decoder_fallback": s.decoder_fallback }))
                })
                .collect();
            let w = p.status();
            let restart = lock(&pending).clone();
            serde_json::json!({ "version": crate::VERSION, "broker_connected": t.is_connected(), "cameras": cams,
                "restart_needed": restart,
                "workers": { "running": w.running, "ready": w.ready, "target": w.target, "draining": w.draining, "providers": w.providers, "last_failure": w.last_failure } })
        })
    };
    if !cfg.telemetry.metrics_listen.is_empty() {
        match http::serve(
            &cfg.telemetry.metrics_listen,
            health.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(addr) => info!(%addr, "Metrics on http://{addr}/metrics, health on /health."),
            Err(e) => {
                warn!(listen = %cfg.telemetry.metrics_listen, error = %e, "Cannot serve metrics; going on without.")
            }
        }
    }
    let mut discovered: Vec<String> = Vec::new();
    if cfg.telemetry.home_assistant {
        discovered = announce(&transport, &cfg, &cameras, &discovered);
    }

    notify::ready(&format!("{} cameras", cameras.len()));
    info!(cameras = cameras.len(), "edge-agent running.");

    // Main loop: watchdog pings, heartbeat, resource sampling, reload on SIGHUP.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("SIGHUP handler")?;
    let watchdog = notify::watchdog_interval();
    let tick = watchdog
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut sampler = process::Sampler::default();
    let mut gpus = gpu::GpuSampler::detect();
    let mut last_sample = Instant::now() - process::SAMPLE_EVERY;
    let started_at = Instant::now();
    let heartbeat_every = cfg.telemetry.heartbeat_interval.get();
    let mut last_heartbeat: Option<Instant> = None;
    // Cameras a reload stopped, stopping in the background: a camera whose server is
    // frozen must not hold up this loop (and its watchdog pings) or the other cameras.
    let mut retiring: JoinSet<Option<String>> = JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            Some(done) = retiring.join_next(), if !retiring.is_empty() => {
                if let Ok(Some(name)) = done {
                    warn!(camera = %name, "Camera stopped by the reload was abandoned; its pipeline is left behind.");
                }
            }
            _ = hup.recv() => {
                notify::reloading();
                if let Some((next, restart)) = reload_config(&args, &running) {
                    let cams = restart_cameras(&next.cameras, &mut cameras, &esc_tx, &shutdown, &mut retiring);
                    let workers = apply_settings(&running, &next, &pool, &scaling_tx, &transport);
                    info!(kept = cams.kept, restarted = cams.restarted, started = cams.started, stopped = cams.stopped, workers_replaced = workers, restart_needed = restart.len(), "Configuration reloaded.");
                    if !restart.is_empty() {
                        warn!(keys = ?restart, "Reload: these settings need a restart.");
                    }
                    *lock(&pending_restart) = restart;
                    running = next;
                }
                *lock(&watched) = watch_list(&cameras);
                if cfg.telemetry.home_assistant {
                    discovered = announce(&transport, &cfg, &cameras, &discovered);
                }
                last_heartbeat = None;
                notify::ready(&format!("{} cameras", cameras.len()));
            }
            _ = shutdown.cancelled() => break,
        }
        if watchdog.is_some() {
            notify::watchdog_if_progress(
                cameras
                    .iter()
                    .map(|(id, c)| (id.as_str(), c.handle.beat()))
                    .chain([("transport", transport.beat())]),
            );
        }
        if !heartbeat_every.is_zero()
            && last_heartbeat.is_none_or(|t| t.elapsed() >= heartbeat_every)
        {
            last_heartbeat = Some(Instant::now());
            let beat = crate::telemetry::status::heartbeat(
                &device,
                health(),
                started_at.elapsed(),
                heartbeat_every,
                crate::clock::unix_ns_now() / 1_000_000,
            );
            if let Err(e) = transport.publish_device("health", Bytes::from(beat.to_string())) {
                if metrics::should_log("heartbeat", Duration::from_secs(300)) {
                    warn!(error = %e, "Heartbeat not published.");
                }
            }
        }
        if last_sample.elapsed() >= process::SAMPLE_EVERY {
            let pids = pool.status().pids;
            sampler.sample(&pids);
            gpus.sample(&pids).await;
            last_sample = Instant::now();
        }
    }

    let stop_timeout = cfg.device.stop_timeout.get();
    info!(deadline = ?stop_timeout, cameras = cameras.len(), "Stopping: cameras, then workers, then the transport.");
    notify::stopping();
    let deadline = tokio::time::Instant::now() + stop_timeout;
    // Everything before the transport must be done by `stages_until`; the transport
    // gets the rest.
    let stages_until = deadline - TRANSPORT_RESERVE.min(stop_timeout / 4);
    let mut abandoned: Vec<String> = Vec::new();

    // Cameras, all at once, each with its own bound; and those a reload was stopping.
    let stops = std::mem::take(&mut cameras)
        .into_values()
        .map(|cam| stop_camera(cam, stages_until));
    let not_stopped = futures::future::join_all(stops).await.into_iter().flatten();
    abandoned.extend(not_stopped.map(|id| format!("camera {id}")));
    while !retiring.is_empty() {
        match tokio::time::timeout_at(stages_until, retiring.join_next()).await {
            Ok(Some(Ok(Some(name)))) => abandoned.push(format!("camera {name}")),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                abandoned.push(format!("{} camera(s) stopped by a reload", retiring.len()));
                retiring.abort_all();
                break;
            }
        }
    }
    // The escalator ends when the motion loops (gone now) dropped their senders.
    drop(esc_tx);
    let mut escalator = escalator;
    if tokio::time::timeout_at(stages_until, &mut escalator)
        .await
        .is_err()
    {
        escalator.abort();
        warn!("The escalator did not finish in time; frames it held are not sent.");
        abandoned.push("escalator".into());
    }
    // Workers finish what they hold within `scaling.grace_period` (the pool kills them
    // after it); whoever is left at the deadline is killed now.
    if tokio::time::timeout_at(stages_until, pool.stopped())
        .await
        .is_err()
    {
        let pids = pool.status().pids;
        warn!(pids = ?pids, "Workers still running at the stop deadline; killing them (their frames are delivered again).");
        kill_workers(&pids);
        metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("workers", "pool"))
            .inc();
        abandoned.push(format!("workers {pids:?}"));
    }
    // Results end their live incidents (`end`, reason agent_stopped) before the
    // transport closes.
    results_stop.cancel();
    let mut results = results;
    if tokio::time::timeout_at(stages_until, &mut results)
        .await
        .is_err()
    {
        results.abort();
        warn!("Results did not finish in time; live incidents were not ended.");
        abandoned.push("results".into());
    }
    scaler.abort();
    ready_watcher.abort();
    // Whatever is left of the deadline, for the flush and a clean DISCONNECT.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !transport.close(left).await {
        warn!(within = ?left, "The transport did not flush and close in time; unsent messages are lost.");
        metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("transport", "broker"))
            .inc();
        abandoned.push("transport".into());
    }
    if abandoned.is_empty() {
        info!("edge-agent stopped.");
        Ok(0)
    } else {
        warn!(abandoned = ?abandoned, "edge-agent stopped; some stages were abandoned.");
        Ok(crate::shutdown::EXIT_UNCLEAN_STOP)
    }
}

/// SIGKILL for worker processes still running at the stop deadline.
pub(super) fn kill_workers(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory effects; these are our unreaped children.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn watch_list(cameras: &BTreeMap<String, Camera>) -> Vec<(String, Weak<CameraHandle>)> {
    cameras
        .iter()
        .map(|(k, c)| (k.clone(), Arc::downgrade(&c.handle)))
        .collect()
}

/// Publishes Home Assistant discovery for the running cameras and clears it for those
/// announced before and gone now; returns the ids announced. MQTT transports only.
fn announce(
    transport: &AgentTransport,
    cfg: &crate::config::Config,
    cameras: &BTreeMap<String, Camera>,
    before: &[String],
) -> Vec<String> {
    if !transport.is_mqtt() {
        warn!("telemetry.home_assistant needs an MQTT transport (embedded or mqtt); no discovery published.");
        return Vec::new();
    }
    let device = cfg.device.id.as_str();
    let prefix = &cfg.transport.topic_prefix;
    let mut published = 0;
    for id in before.iter().filter(|id| !cameras.contains_key(*id)) {
        for (topic, _) in crate::telemetry::status::discovery(prefix, device, id) {
            published += transport.publish_retained(&topic, Bytes::new()).is_ok() as usize;
        }
    }
    for id in cameras.keys() {
        for (topic, config) in crate::telemetry::status::discovery(prefix, device, id) {
            match transport.publish_retained(&topic, Bytes::from(config.to_string())) {
                Ok(()) => published += 1,
                Err(e) => {
                    warn!(camera = %id, error = %e, "Home Assistant discovery not published.")
                }
            }
        }
    }
    info!(
        cameras = cameras.len(),
        messages = published,
        "Home Assistant discovery published."
    );
    cameras.keys().cloned().collect()
}

/// Starts `edge-agent prepare` in the background when ONNX Runtime has TensorRT (its
/// provider library lies next to libonnxruntime.so), so the engine is built at boot and
/// not by the first worker after the first motion. It holds the engine cache's lock
/// while it builds: a worker started meanwhile waits for it, then loads the engine.
fn prepare_engines(spec: &WorkerSpec, inference: &crate::infer::InferenceConfig) {
    use crate::infer::config::Provider;
    if !inference.providers.contains(&Provider::Tensorrt) {
        return;
    }
    let Ok(lib) = crate::infer::session::find_library(inference.ort_library.as_deref()) else {
        return;
    };
    let has_trt = lib
        .parent()
        .is_some_and(|d| d.join("libonnxruntime_providers_tensorrt.so").is_file());
    if !has_trt {
        return;
    }
    let mut cmd = tokio::process::Command::new(&spec.program);
    // The worker's arguments with the subcommand swapped: same configuration.
    cmd.arg("prepare")
        .args(spec.args.iter().skip(1))
        .envs(spec.env.iter().cloned())
        .stdin(spec.stdin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let spec = spec.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let out = match cmd.spawn() {
            Ok(mut child) => {
                spec.feed(&mut child);
                child.wait_with_output().await
            }
            Err(e) => Err(e),
        };
        match out {
            Ok(out) => {
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() {
                    info!(result = %line, took = ?started.elapsed(), "TensorRT engine prepared.");
                } else {
                    warn!(result = %line, status = %out.status, "TensorRT engine not prepared; workers build or skip it.");
                }
            }
            Err(e) => warn!(error = %e, "Cannot run edge-agent prepare."),
        }
    });
}

/// How to start a worker on the configuration the agent runs: handed over on stdin
/// (the worker reads no file), with the embedded broker's port filled in.
pub(super) fn worker_spec(
    running: &Config,
    transport: &AgentTransport,
) -> anyhow::Result<WorkerSpec> {
    let mut c = running.clone();
    if let (TransportKind::Embedded, Some(addr)) = (c.transport.kind, transport.broker_addr()) {
        c.transport.embedded_port = crate::config::types::IntIn::lit(i64::from(addr.port()));
    }
    WorkerSpec::this_binary(resolved_text(&c))
        .context("cannot find this executable to start workers")
}

fn start_camera(
    cam: CameraConfig,
    esc_tx: mpsc::Sender<Escalation>,
    shutdown: &Shutdown,
) -> Camera {
    let stop = shutdown.child_token();
    let (grey_tx, grey_rx) = mpsc::channel(4);
    let handle = Arc::new(spawn_camera(cam.clone(), grey_tx, stop.clone()));
    let motion = tokio::spawn(camera_loop::run(
        cam.clone(),
        handle.clone(),
        grey_rx,
        esc_tx,
        stop.clone(),
    ));
    Camera {
        cfg: cam,
        handle,
        stop,
        motion,
    }
}

/// Stops one camera: its motion loop, then its pipeline (whose teardown has its own
/// bound); gives up at `until`. The camera's name when it had to be abandoned.
async fn stop_camera(cam: Camera, until: tokio::time::Instant) -> Option<String> {
    let id = cam.cfg.id.to_string();
    cam.stop.cancel();
    let stop = async {
        let _ = cam.motion.await;
        match Arc::try_unwrap(cam.handle) {
            Ok(h) => h.stopped().await,
            Err(_) => {
                warn!(camera = %id, "Camera handle still shared at stop; its pipeline stops with its token.");
                false
            }
        }
    };
    match tokio::time::timeout_at(until, stop).await {
        Ok(true) => None,
        Ok(false) => Some(id),
        Err(_) => {
            warn!(camera = %id, "Camera did not stop in time; abandoned.");
            Some(id)
        }
    }
}

/// Re-reads the configuration for a reload: the configuration to run from now on
/// (the new cameras, inference and scaling settings; the rest as it runs) and the keys
/// that changed and need a restart. None when the new configuration is invalid.
fn reload_config(args: &ConfigArgs, running: &Config) -> Option<(Config, Vec<String>)> {
    let refuse = |errors: &dyn std::fmt::Display| {
        error!(errors = %errors, "Reload refused: the new configuration is invalid; keeping the running one.");
    };
    let new = match super::load_config(args, true) {
        Ok(l) => l.config,
        Err(e) => {
            refuse(&e);
            return None;
        }
    };
    let next = apply_live(running, &new);
    // Valid on its own, the new configuration may still not fit what keeps running
    // (new settings against the transport at start).
    let errs = next.check();
    if !errs.is_empty() {
        let text: Vec<String> = errs.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        refuse(&text.join("; "));
        return None;
    }
    Some((next, restart_needed(running, &new)))
}

/// What a reload did to the cameras.
struct CameraChanges {
    kept: usize,
    restarted: usize,
    started: usize,
    stopped: usize,
}

/// Unchanged cameras keep streaming, changed ones restart, removed ones stop, new ones
/// start. Never waits on a camera: those it stops go to `retiring`.
fn restart_cameras(
    new: &[CameraConfig],
    cameras: &mut BTreeMap<String, Camera>,
    esc_tx: &mpsc::Sender<Escalation>,
    shutdown: &Shutdown,
    retiring: &mut JoinSet<Option<String>>,
) -> CameraChanges {
    let wanted: BTreeMap<String, CameraConfig> = new
        .iter()
        .filter(|c| c.enabled)
        .map(|c| (c.id.to_string(), c.clone()))
        .collect();
    let (mut kept, mut restarted, mut started, mut stopped) = (0, 0, 0, 0);
    let ids: Vec<String> = cameras.keys().cloned().collect();
    for id in ids {
        let same = wanted
            .get(&id)
            .is_some_and(|w| cameras.get(&id).is_some_and(|c| &c.cfg == w));
        if same {
            kept += 1;
        } else if let Some(cam) = cameras.remove(&id) {
            // In the background: a new camera with this id starts at once.
            retiring.spawn(stop_camera(cam, tokio::time::Instant::now() + RETIRE_BOUND));
            if wanted.contains_key(&id) {
                restarted += 1;
            } else {
                stopped += 1;
            }
        }
    }
    for (id, cfg) in wanted {
        if let std::collections::btree_map::Entry::Vacant(slot) = cameras.entry(id) {
            slot.insert(start_camera(cfg, esc_tx.clone(), shutdown));
            started += 1;
        }
    }
    started -= restarted.min(started);
    CameraChanges {
        kept,
        restarted,
        started,
        stopped,
    }
}

/// Applies a reload's scaling and inference settings: the scaler and escalator get the
/// new scaling settings; workers started from now on get the whole new configuration,
/// and when a setting they use changed, those running are drained and replaced.
/// Whether workers are replaced.
fn apply_settings(
    running: &Config,
    next: &Config,
    pool: &PoolHandle,
    scaling: &watch::Sender<ScalingConfig>,
    transport: &AgentTransport,
) -> bool {
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
        prepare_engines(&spec, &next.inference);
    }
    pool.respec(
        spec,
        next.scaling.grace_period.get(),
        next.scaling.worker_ready_timeout.get(),
        replace,
    );
    replace
}

/// Owns publishing: motion transitions become motion messages, escalated frames are
/// encoded and published as frame messages, and the scaler is woken at once.
async fn escalate(
    mut rx: mpsc::Receiver<Escalation>,
    transport: Arc<AgentTransport>,
    device: String,
    wake: Arc<Wake>,
    scaling: watch::Receiver<ScalingConfig>,
    pool: crate::scale::PoolHandle,
    mut offloader: Offloader,
) {
    let mut starts = CandidateStarts::default();
    while let Some(item) = rx.recv().await {
        match item {
            Escalation::Candidate { camera, change } if scaling.borrow().prewarm_on_motion => {
                match change {
                    Candidate::Seen => {
                        if starts.seen(&camera, pool.status().running) {
                            metrics()
                                .prewarm_starts
                                .get_or_create(&metrics::camera(&camera))
                                .inc();
                        }
                        wake.candidate();
                    }
                    Candidate::Dropped => {
                        if starts.dropped(&camera) {
                            metrics()
                                .false_starts
                                .get_or_create(&metrics::camera(&camera))
                                .inc();
                        }
                    }
                }
            }
            Escalation::Candidate { .. } => {}
            Escalation::Motion(t) => {
                if let MotionTransition::Started(e) = &t {
                    starts.confirmed(&e.camera);
                }
                let (state, e) = match &t {
                    MotionTransition::Started(e) => ("start", e),
                    MotionTransition::Continued(e) => ("update", e),
                    MotionTransition::Ended(e) => ("end", e),
                };
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["state"] = state.into();
                v["device"] = device.clone().into();
                // schemas/motion.v1.json
                v["version"] = 1.into();
                if let Err(e) =
                    transport.publish_result(&e.camera, "motion", Bytes::from(v.to_string()))
                {
                    warn!(camera = %e_camera(&t), error = %e, "Motion message not published.");
                }
            }
            Escalation::Frame(f) => {
                let cold = pool.status().ready == 0;
                let camera = f.colour.camera.to_string();
                match tokio::task::spawn_blocking(move || encode_frame(f, cold)).await {
                    Ok(Ok(mut msg)) => {
                        msg.header.device = device.clone();
                        msg.header.stamp("published");
                        if let Some(d) = msg
                            .header
                            .stamps
                            .iter()
                            .find(|s| s.stage == "motion")
                            .map(|s| s.at_unix_ns)
                        {
                            let now = crate::clock::unix_ns_now();
                            metrics()
                                .stage_latency
                                .get_or_create(&metrics::stage("motion_to_publish"))
                                .observe(now.saturating_sub(d) as f64 / 1e9);
                        }
                        let queue = offloader.route(&pool.status());
                        match transport.publish_frame_to(msg, queue.as_deref()) {
                            Ok(()) => {
                                metrics()
                                    .escalations
                                    .get_or_create(&metrics::camera(&camera))
                                    .inc();
                                offloader.sent(&camera);
                                if queue.is_none() {
                                    wake.frame();
                                }
                            }
                            Err(e) => warn!(camera = %camera, error = %e, "Frame not escalated."),
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(camera = %camera, error = %e, "Frame could not be encoded.")
                    }
                    Err(e) => warn!(camera = %camera, error = %e, "Encoder task failed."),
                }
            }
        }
    }
}

/// Local first, remote when needed (`scale::offload`), for the escalator.
struct Offloader {
    /// `remote_queue` in it never changes while running (a restart applies it).
    cfg: watch::Receiver<ScalingConfig>,
    local_backlog: Arc<AtomicU64>,
    /// The decision for the last frame, to log changes only.
    last: Option<Offload>,
}

impl Offloader {
    /// The queue for the next frame: None for the local one.
    fn route(&mut self, pool: &crate::scale::PoolStatus) -> Option<String> {
        let backlog = self.local_backlog.load(Ordering::Relaxed);
        let cfg = self.cfg.borrow().clone();
        let now = offload::decide(&cfg, pool, backlog);
        if now != self.last {
            match now {
                Some(why) => info!(
                    reason = why.label(),
                    workers = pool.running,
                    ready = pool.ready,
                    backlog,
                    offload_backlog = cfg.offload_backlog.get(),
                    "Offloading frames to the remote queue."
                ),
                None => info!(
                    workers = pool.running,
                    backlog, "Frames go to local workers again."
                ),
            }
            self.last = now;
        }
        now.and(cfg.remote_queue)
    }

    /// Counts a frame sent where [`Offloader::route`] said.
    fn sent(&self, camera: &str) {
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

fn e_camera(t: &MotionTransition) -> &str {
    &t.event().camera
}

/// The frame message of an escalated frame: one JPEG holding the whole frame and, below
/// it, its crops (`escalate::regions::layout`).
fn encode_frame(f: EscalatedFrame, cold_start: bool) -> Result<FrameMessage, image::ImageError> {
    let c = &f.colour;
    let (regions, data) = if c.crops.is_empty() {
        let data = image::encode_rgb(&c.rgb, c.width, c.height, f.jpeg_quality)?;
        (Vec::new(), data)
    } else {
        let crops: Vec<_> = c.crops.iter().map(|k| (k.frame, &k.rgb[..])).collect();
        let (regions, payload, (pw, ph)) = regions::compose(&c.rgb, (c.width, c.height), &crops);
        (
            regions,
            image::encode_rgb(&payload, pw, ph, f.jpeg_quality)?,
        )
    };
    let ns = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let mut header = FrameHeader {
        version: crate::escalate::message::VERSION,
        device: String::new(),
        camera: c.camera.to_string(),
        event_id: f.event_id.clone(),
        seq: c.seq,
        captured: ns(c.captured),
        width: c.width,
        height: c.height,
        source_width: c.source_width,
        source_height: c.source_height,
        regions,
        boxes: f.boxes.iter().map(|b| [b.x, b.y, b.w, b.h]).collect(),
        stamps: vec![Stamp {
            stage: "motion".into(),
            at_unix_ns: ns(f.motion_at),
        }],
        cold_start,
    };
    header.stamp("encoded");
    Ok(FrameMessage {
        header,
        jpeg: Bytes::from(data),
    })
}
