//! `edge-agent run`: builds every stage from the configuration, wires them with bounded
//! channels and runs until shutdown. README's "Architecture" shows the picture:
//!
//! cameras (ingest → analysis) → escalations → escalator → broker → workers (child
//! processes, sized by the scaler) → broker → results (tracks, incidents) here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::clips::AgentClips;
use super::local_workers::Workers;
use super::page;
use super::scaffold::{self, Housekeeping, Stop};
use crate::camera::{Cameras, WatchList};
use crate::cli::ConfigArgs;
use crate::config::resolved::{apply_live, restart_needed};
use crate::config::{Config, Loaded};
use crate::escalate::escalator::{self, Escalation};
use crate::scale::demand::Demand;
use crate::scale::PoolHandle;
use crate::shutdown::Lifetime;
use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics};
use crate::telemetry::{http, notify};
use crate::transport::AgentTransport;
use crate::uplink::{Events, Outlet};

/// The part of the stop deadline kept for the transport's flush and goodbye (at most a
/// quarter of the deadline).
const TRANSPORT_RESERVE: Duration = Duration::from_secs(3);

/// What the cameras' analysis loops hand the escalator. Full policy: a frame is
/// dropped and counted (`escalation_queue_full`, no budget spent); motion transitions
/// wait for room.
const ESCALATIONS: usize = 64;

/// Verification requests from results to the cameras. Full policy: dropped and
/// counted (`verify_queue_full`); the tracks are asked for again a check interval later.
const CHECKS: usize = 16;

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
    info!(lifecycle = "starting", device = %device, version = crate::VERSION, cameras = cfg.cameras.len(), transport = ?cfg.transport.kind, "edge-agent starting.");
    for (key, message) in cfg.warnings() {
        warn!(key = %key, "{message}");
    }

    let mut stages = Stages::start(&cfg, &lifetime).await?;

    // Health, as /health and the heartbeat report it.
    let watched = Arc::new(std::sync::Mutex::new(stages.cameras.watch_list()));
    // Settings changed in the files that only a restart applies, since the last reload.
    let pending_restart: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let health = health_report(
        &watched,
        &pending_restart,
        &stages.workers.pool,
        &stages.transport,
        &stages.events,
    );
    let views = Arc::new(std::sync::Mutex::new(stages.cameras.views()));
    let endpoints = http::Endpoints {
        health: health.clone(),
        clips_dir: Some(stages.clips.dir.clone()),
        page: Some(Arc::new(page::AgentPage::new(
            &device,
            views.clone(),
            stages.recent.clone(),
            cfg.events.snapshot_dir.clone(),
        ))),
        page_token: cfg.telemetry.page_token.clone(),
    };
    scaffold::serve_endpoints(&cfg.telemetry.metrics_listen, endpoints, &shutdown).await;
    let mut discovered: Vec<String> = Vec::new();
    if cfg.telemetry.home_assistant {
        discovered = announce(&stages.transport, &cfg, &stages.cameras, &discovered);
    }

    notify::ready(&format!("{} cameras", stages.cameras.len()));
    info!(
        lifecycle = "running",
        cameras = stages.cameras.len(),
        "edge-agent running."
    );

    // Main loop: watchdog pings, heartbeat, resource sampling, reload on SIGHUP.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("SIGHUP handler")?;
    let mut housekeeping = Housekeeping::new();
    let mut heartbeat = Heartbeat::new(cfg.telemetry.heartbeat_interval.get());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(housekeeping.tick()) => {}
            name = stages.cameras.next_abandoned() => {
                warn!(camera = %name, "Camera stopped by the reload was abandoned; its pipeline is left behind.");
            }
            _ = hup.recv() => {
                notify::reloading();
                if let Some((next, restart)) = reload_config(&args, &running) {
                    let cams = stages.cameras.reload(&next.cameras);
                    let replaced = stages.workers.reload(&running, &next, &stages.transport);
                    stages.clips.apply(&next, &stages.cameras);
                    info!(lifecycle = "reloaded", kept = cams.kept, restarted = cams.restarted, started = cams.started, stopped = cams.stopped, workers_replaced = replaced, restart_needed = restart.len(), "Configuration reloaded.");
                    if !restart.is_empty() {
                        warn!(lifecycle = "restart_needed", keys = ?restart, "Reload: these settings need a restart.");
                    }
                    *lock(&pending_restart) = restart;
                    running = next;
                }
                *lock(&watched) = stages.cameras.watch_list();
                *lock(&views) = stages.cameras.views();
                if cfg.telemetry.home_assistant {
                    discovered = announce(&stages.transport, &cfg, &stages.cameras, &discovered);
                }
                heartbeat.now();
                notify::ready(&format!("{} cameras", stages.cameras.len()));
            }
            _ = shutdown.cancelled() => break,
        }
        if housekeeping.watchdog() {
            notify::watchdog_if_progress(
                stages
                    .cameras
                    .beats()
                    .chain([("transport", stages.transport.beat())]),
            );
        }
        if heartbeat.due() {
            heartbeat.publish(&stages.events, &device, health());
        }
        housekeeping.sample(&stages.workers.pool).await;
    }

    Ok(stages.stop(cfg.device.stop_timeout.get()).await)
}

/// The retained health message every `telemetry.heartbeat_interval` ("0s": none).
struct Heartbeat {
    every: Duration,
    last: Option<Instant>,
    started_at: Instant,
}

impl Heartbeat {
    fn new(every: Duration) -> Heartbeat {
        Heartbeat {
            every,
            last: None,
            started_at: Instant::now(),
        }
    }

    /// The next turn sends one (after a reload: what runs changed).
    fn now(&mut self) {
        self.last = None;
    }

    fn due(&self) -> bool {
        !self.every.is_zero() && self.last.is_none_or(|t| t.elapsed() >= self.every)
    }

    fn publish(&mut self, events: &Events, device: &str, health: serde_json::Value) {
        self.last = Some(Instant::now());
        let beat = crate::telemetry::status::heartbeat(
            device,
            health,
            self.started_at.elapsed(),
            self.every,
            crate::clock::unix_ns_now() / 1_000_000,
        );
        if let Err(e) = events.publish_device("health", Bytes::from(beat.to_string())) {
            if metrics::should_log("heartbeat", Duration::from_secs(300)) {
                warn!(error = %e, "Heartbeat not published.");
            }
        }
    }
}

/// The agent's stages, started in the order a frame meets them and stopped in the same
/// order (what feeds a stage stops before it), and the channels between them.
struct Stages {
    /// The broker link, owned by one task; everyone else holds this handle.
    transport: Arc<AgentTransport>,
    /// Where events go: the uplink's spool, or the frames transport.
    events: Arc<Events>,
    workers: Workers,
    cameras: Cameras,
    /// The cameras' recorders and the storage budget.
    clips: AgentClips,
    escalator: tokio::task::JoinHandle<()>,
    results: tokio::task::JoinHandle<()>,
    /// Results outlive the workers at stop (the answers to their last frames still
    /// count, then live incidents end): under the root token, stopped explicitly.
    results_stop: tokio_util::sync::CancellationToken,
    /// The newest incidents, for the page.
    recent: Arc<crate::results::RecentIncidents>,
}

impl Stages {
    async fn start(cfg: &Config, lifetime: &Lifetime) -> anyhow::Result<Stages> {
        let device = cfg.device.id.to_string();
        let shutdown = lifetime.shutdown();
        // Offloaded frames take a link of their own when the GPU pool is elsewhere.
        let offload = cfg.scaling.remote_transport(&cfg.transport);
        let transport = Arc::new(
            AgentTransport::connect_with_offload(
                &cfg.transport,
                offload.as_ref(),
                &device,
                lifetime.end(),
            )
            .await
            .with_context(|| format!("transport {:?}", cfg.transport.kind))?,
        );
        if let Some(addr) = transport.broker_addr() {
            info!(lifecycle = "broker_listening", %addr, "Embedded MQTT broker listening on loopback.");
        }
        let events = Arc::new(
            Events::start(&cfg.uplink, transport.clone(), &device, lifetime.end())
                .await
                .with_context(|| format!("uplink {:?}", cfg.uplink.kind))?,
        );
        let workers = Workers::start(cfg, &transport, shutdown)?;
        let (escalations, escalations_rx) = mpsc::channel::<Escalation>(ESCALATIONS);
        let cameras = Cameras::start(&cfg.cameras, escalations, shutdown);
        let demand = Demand::new(
            workers.wake.clone(),
            workers.pool.clone(),
            workers.scaling(),
            workers.offloader(),
        );
        let escalator = tokio::spawn(escalator::run(
            escalations_rx,
            Outlet {
                frames: transport.clone(),
                events: events.clone(),
            },
            device.clone(),
            demand,
        ));
        let (clips, clip_feed) = AgentClips::start(cfg, lifetime.end(), shutdown);
        clips.apply(cfg, &cameras);
        // Verification frames for stationary objects: results → cameras.
        let (checks, checks_rx) = mpsc::channel(CHECKS);
        tokio::spawn(crate::camera::route_checks(
            checks_rx,
            cameras.check_routes(),
        ));
        let results_stop = lifetime.end().child_token();
        let recent = Arc::new(crate::results::RecentIncidents::new(
            cfg.events.snapshot_memory.0,
        ));
        let results = tokio::spawn(crate::results::run(
            transport.clone(),
            device,
            cfg.events.clone(),
            cfg.cameras
                .iter()
                .map(|c| {
                    (
                        c.id.as_str().to_string(),
                        crate::results::zones::Scene::new(&c.zones, &c.objects),
                    )
                })
                .collect(),
            crate::results::Outlets {
                events: events.clone(),
                recent: recent.clone(),
                clips: Some(clip_feed),
                checks,
            },
            results_stop.clone(),
        ));
        Ok(Stages {
            transport,
            events,
            workers,
            cameras,
            clips,
            escalator,
            results,
            results_stop,
            recent,
        })
    }

    /// Stops every stage within `timeout`; the exit status.
    async fn stop(self, timeout: Duration) -> i32 {
        let mut stop = Stop::begin(
            "edge-agent",
            timeout,
            TRANSPORT_RESERVE.min(timeout / 4),
            "Stopping: cameras, then workers, then the transport.",
        );
        for name in self.cameras.stop(stop.stages_until()).await {
            stop.abandoned(name);
        }
        // The escalator ends when the analysis loops (gone now) dropped their senders.
        stop.join(
            "escalator",
            self.escalator,
            "The escalator did not finish in time; frames it held are not sent.",
        )
        .await;
        self.workers.stop(&mut stop).await;
        // Results end their live incidents (`end`, reason agent_stopped) before the
        // transport closes.
        self.results_stop.cancel();
        stop.join(
            "results",
            self.results,
            "Results did not finish in time; live incidents were not ended.",
        )
        .await;
        // The uplink first, with half of what is left: what it does not send in time
        // stays in its spool for the next start, nothing is lost.
        let half = stop.left() / 2;
        if !self.events.close(half).await {
            warn!(within = ?half, "The uplink did not flush in time; unsent events stay in its spool.");
        }
        // Whatever is left of the deadline, for the flush and a clean DISCONNECT.
        let left = stop.left();
        if !self.transport.close(left).await {
            warn!(within = ?left, "The transport did not flush and close in time; unsent messages are lost.");
            metrics()
                .abandoned
                .get_or_create(&metrics::abandoned("transport", "broker"))
                .inc();
            stop.abandoned("transport");
        }
        stop.finish()
    }
}

/// The agent's health report (`/health`, the heartbeat). Cameras are held weakly (the
/// report must not keep a camera alive past its stop) and refreshed on reload.
fn health_report(
    watched: &Arc<std::sync::Mutex<WatchList>>,
    pending_restart: &Arc<std::sync::Mutex<Vec<String>>>,
    pool: &PoolHandle,
    transport: &Arc<AgentTransport>,
    events: &Arc<Events>,
) -> http::HealthFn {
    let (watched, pending) = (watched.clone(), pending_restart.clone());
    let (p, t, e) = (pool.clone(), transport.clone(), events.clone());
    Arc::new(move || {
        let cams: serde_json::Map<String, serde_json::Value> = lock(&watched)
            .iter()
            .filter_map(|(id, h)| h.upgrade().map(|h| (id, h)))
            .map(|(id, h)| {
                let s = h.status();
                (id.clone(), serde_json::json!({ "state": format!("{:?}", s.state), "restarts": s.restarts, "last_reason": s.last_reason, "frames": s.frames, "decoder": s.decoder, "decoder_fallback": s.decoder_fallback }))
            })
            .collect();
        let restart = lock(&pending).clone();
        let mut report = serde_json::json!({ "version": crate::VERSION, "broker_connected": t.is_connected(), "cameras": cams,
            "restart_needed": restart, "workers": scaffold::workers_health(&p.status()), "uplink": e.health() });
        // The link to a central GPU pool (`scaling.remote_url`), when there is one.
        if let Some(up) = t.offload_connected() {
            report["offload_connected"] = up.into();
        }
        report
    })
}

/// Publishes Home Assistant discovery for the running cameras and clears it for those
/// announced before and gone now; returns the ids announced. MQTT transports only.
fn announce(
    transport: &AgentTransport,
    cfg: &crate::config::Config,
    cameras: &Cameras,
    before: &[String],
) -> Vec<String> {
    if !transport.is_mqtt() {
        warn!("telemetry.home_assistant needs an MQTT transport (embedded or mqtt); no discovery published.");
        return Vec::new();
    }
    let device = cfg.device.id.as_str();
    let prefix = &cfg.transport.topic_prefix;
    let mut published = 0;
    for id in before.iter().filter(|id| !cameras.contains(id)) {
        for (topic, _) in crate::telemetry::status::discovery(prefix, device, id) {
            published += transport.publish_retained(&topic, Bytes::new()).is_ok() as usize;
        }
    }
    for id in cameras.ids() {
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
    cameras.ids().cloned().collect()
}

/// Re-reads the configuration for a reload: the configuration to run from now on
/// (the new cameras, inference and scaling settings; the rest as it runs) and the keys
/// that changed and need a restart. None when the new configuration is invalid.
fn reload_config(args: &ConfigArgs, running: &Config) -> Option<(Config, Vec<String>)> {
    let refuse = |errors: &dyn std::fmt::Display| {
        error!(lifecycle = "reload_refused", errors = %errors, "Reload refused: the new configuration is invalid; keeping the running one.");
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
