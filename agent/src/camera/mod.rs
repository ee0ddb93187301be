//! The cameras, from the agent's side. Each camera is two stages started and stopped
//! together: its ingest pipeline ([`crate::ingest`], GStreamer, grey frames out on a
//! bounded channel) and its analysis loop ([`analysis`]: motion detection, then the
//! frames worth escalating, out to the escalator). [`Cameras`] is the set the agent
//! runs: started from the configuration, changed by a reload, stopped at shutdown.

pub mod analysis;
pub mod config;

pub use config::CameraConfig;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::warn;

use crate::escalate::escalator::Escalation;
use crate::escalate::verify::VerifyRequest;
use crate::ingest::{spawn_camera, CameraHandle};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::{self, metrics, DropReason};

/// Grey frames from a camera's pipeline to its analysis loop. Full policy: the
/// pipeline drops the frame and counts it (`ingest`), so a slow detector never holds
/// up decoding.
pub const GREY_CHANNEL: usize = 4;

/// Verification requests to one camera's loop. Full policy: the request is dropped and
/// counted; results asks again a check interval later (one pending request per camera
/// already merges what comes meanwhile).
const CHECKS_CHANNEL: usize = 8;

/// Each running camera's verification channel, by id: results' requests are routed
/// through it ([`route_checks`]); reloads keep it current.
pub type CheckRoutes = Arc<std::sync::Mutex<BTreeMap<String, mpsc::Sender<VerifyRequest>>>>;

/// Hands each verification request to its camera's loop until `requests` closes. A
/// camera not running, or whose channel is full, loses it (counted by the sender's
/// side when its own queue is full; here logged once a minute).
pub async fn route_checks(mut requests: mpsc::Receiver<VerifyRequest>, routes: CheckRoutes) {
    while let Some(req) = requests.recv().await {
        let camera = req.camera.clone();
        let tx = crate::sync::lock(&routes).get(&camera).cloned();
        let sent = tx.is_some_and(|tx| tx.try_send(req).is_ok());
        if !sent {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(&camera, DropReason::VerifyQueueFull))
                .inc();
            if metrics::should_log(&format!("checks-{camera}"), Duration::from_secs(60)) {
                warn!(camera = %camera, "Verification request dropped: camera not running or busy.");
            }
        }
    }
}

/// How long a camera stopped by a reload may take; past it, it is abandoned (its
/// pipeline teardown has its own, shorter bound).
const RETIRE_BOUND: Duration = Duration::from_secs(10);

struct Camera {
    cfg: CameraConfig,
    handle: Arc<CameraHandle>,
    stop: Shutdown,
    motion: tokio::task::JoinHandle<()>,
    seen: watch::Receiver<analysis::LastMotion>,
}

/// One camera as the page shows it: its configuration (masks, zones), its handle
/// (state, newest frame), held weakly like the [`WatchList`], and its newest motion.
#[derive(Clone)]
pub struct CameraView {
    pub cfg: CameraConfig,
    pub handle: Weak<CameraHandle>,
    pub motion: watch::Receiver<analysis::LastMotion>,
}

/// What a reload did to the cameras.
pub struct CameraChanges {
    pub kept: usize,
    pub restarted: usize,
    pub started: usize,
    pub stopped: usize,
}

/// The cameras a health report reads, by id, held weakly (see [`Cameras::watch_list`]).
pub type WatchList = Vec<(String, Weak<CameraHandle>)>;

/// The running cameras, each under its own child of the shutdown token.
pub struct Cameras {
    running: BTreeMap<String, Camera>,
    /// Cameras a reload stopped, stopping in the background: a camera whose server is
    /// frozen must not hold up the main loop (and its watchdog pings) or the others.
    retiring: JoinSet<Option<String>>,
    escalations: mpsc::Sender<Escalation>,
    checks: CheckRoutes,
    shutdown: Shutdown,
}

impl Cameras {
    /// Starts every enabled camera of `configs`; their analysis loops send to
    /// `escalations`.
    pub fn start(
        configs: &[CameraConfig],
        escalations: mpsc::Sender<Escalation>,
        shutdown: &Shutdown,
    ) -> Cameras {
        let mut cameras = Cameras {
            running: BTreeMap::new(),
            retiring: JoinSet::new(),
            escalations,
            checks: CheckRoutes::default(),
            shutdown: shutdown.clone(),
        };
        for cam in configs.iter().filter(|c| c.enabled) {
            let started = cameras.start_one(cam.clone());
            cameras.running.insert(cam.id.to_string(), started);
        }
        cameras
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Where verification requests for the running cameras go (see [`route_checks`]).
    pub fn check_routes(&self) -> CheckRoutes {
        self.checks.clone()
    }

    /// The ids of the running cameras, in order.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.running.keys()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// The cameras for a health report, held weakly: the report must not keep a camera
    /// alive past its stop.
    pub fn watch_list(&self) -> WatchList {
        self.running
            .iter()
            .map(|(k, c)| (k.clone(), Arc::downgrade(&c.handle)))
            .collect()
    }

    /// The cameras for the page, in order of id.
    pub fn views(&self) -> Vec<CameraView> {
        self.running
            .values()
            .map(|c| CameraView {
                cfg: c.cfg.clone(),
                handle: Arc::downgrade(&c.handle),
                motion: c.seen.clone(),
            })
            .collect()
    }

    /// Each camera's sign of life, for the watchdog.
    pub fn beats(&self) -> impl Iterator<Item = (&str, &crate::telemetry::notify::Beat)> {
        self.running
            .iter()
            .map(|(id, c)| (id.as_str(), c.handle.beat()))
    }

    /// The next camera a reload stopped that had to be abandoned; pending while none
    /// is (cancel-safe, for a `select!`).
    pub async fn next_abandoned(&mut self) -> String {
        loop {
            match self.retiring.join_next().await {
                Some(Ok(Some(name))) => return name,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    }

    /// Applies a reload: unchanged cameras keep streaming, changed ones restart,
    /// removed ones stop, new ones start. Never waits on a camera: those it stops
    /// stop in the background.
    pub fn reload(&mut self, new: &[CameraConfig]) -> CameraChanges {
        let wanted: BTreeMap<String, CameraConfig> = new
            .iter()
            .filter(|c| c.enabled)
            .map(|c| (c.id.to_string(), c.clone()))
            .collect();
        let (mut kept, mut restarted, mut started, mut stopped) = (0, 0, 0, 0);
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            let same = wanted
                .get(&id)
                .is_some_and(|w| self.running.get(&id).is_some_and(|c| &c.cfg == w));
            if same {
                kept += 1;
            } else if let Some(cam) = self.running.remove(&id) {
                crate::sync::lock(&self.checks).remove(&id);
                // In the background: a new camera with this id starts at once.
                self.retiring
                    .spawn(stop_camera(cam, tokio::time::Instant::now() + RETIRE_BOUND));
                if wanted.contains_key(&id) {
                    restarted += 1;
                } else {
                    stopped += 1;
                }
            }
        }
        for (id, cfg) in wanted {
            if !self.running.contains_key(&id) {
                let cam = self.start_one(cfg);
                self.running.insert(id, cam);
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

    /// Stops every camera at once, each with its own bound, and those a reload was
    /// stopping; gives up at `until`. Then the escalator's channel closes (its last
    /// sender goes with this). What had to be abandoned, by name.
    pub async fn stop(mut self, until: tokio::time::Instant) -> Vec<String> {
        let stops = std::mem::take(&mut self.running)
            .into_values()
            .map(|cam| stop_camera(cam, until));
        let not_stopped = futures::future::join_all(stops).await.into_iter().flatten();
        let mut abandoned: Vec<String> = not_stopped.map(|id| format!("camera {id}")).collect();
        while !self.retiring.is_empty() {
            match tokio::time::timeout_at(until, self.retiring.join_next()).await {
                Ok(Some(Ok(Some(name)))) => abandoned.push(format!("camera {name}")),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    abandoned.push(format!(
                        "{} camera(s) stopped by a reload",
                        self.retiring.len()
                    ));
                    self.retiring.abort_all();
                    break;
                }
            }
        }
        abandoned
    }

    fn start_one(&self, cam: CameraConfig) -> Camera {
        let stop = self.shutdown.child_token();
        let (grey_tx, grey_rx) = mpsc::channel(GREY_CHANNEL);
        let (checks_tx, checks_rx) = mpsc::channel(CHECKS_CHANNEL);
        crate::sync::lock(&self.checks).insert(cam.id.to_string(), checks_tx);
        let handle = Arc::new(spawn_camera(cam.source(), grey_tx, stop.clone()));
        let (seen_tx, seen) = watch::channel(analysis::LastMotion::default());
        let motion = tokio::spawn(analysis::run_with(
            cam.clone(),
            handle.clone(),
            grey_rx,
            checks_rx,
            self.escalations.clone(),
            seen_tx,
            stop.clone(),
        ));
        Camera {
            cfg: cam,
            handle,
            stop,
            motion,
            seen,
        }
    }
}

/// Stops one camera: its analysis loop, then its pipeline (whose teardown has its own
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
