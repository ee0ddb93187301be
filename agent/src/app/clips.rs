//! The agent's clips: a recorder per running camera with clips on, kept in step with
//! the cameras and `[events.clips]` at start and on every reload, and the storage
//! budget over the clips and snapshot directories, enforced on a timer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::info;

use crate::camera::Cameras;
use crate::clips::{budget, FinishedClip, Recorders};
use crate::config::Config;
use crate::results::{ClipFeed, ClipsConfig};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crate::telemetry::http::ClipsDir;

/// Finished clips on their way to the results loop. Full policy: the recorder drops the
/// report and counts it (`clip_report`); the file stays.
const CLIP_REPORTS: usize = 32;
/// How often the storage budget is enforced.
const BUDGET_EVERY: Duration = Duration::from_secs(2);

/// What the budget task reads; a reload replaces it.
struct BudgetSettings {
    clips: ClipsConfig,
    dir: PathBuf,
    snapshots: Option<PathBuf>,
}

/// The clips side of the running agent.
pub(super) struct AgentClips {
    recorders: Arc<Recorders>,
    settings: Arc<Mutex<BudgetSettings>>,
    /// The directory `/clips` serves: the one clips are written to, also after a
    /// reload changed it.
    pub dir: ClipsDir,
}

impl AgentClips {
    /// The recorders (none running yet) and the results loop's end of their reports;
    /// the budget task runs until `shutdown`. Recorders stop under `end` (after the
    /// cameras, when results stop).
    pub fn start(cfg: &Config, end: &Shutdown, shutdown: &Shutdown) -> (Self, ClipFeed) {
        let (tx, rx) = mpsc::channel::<FinishedClip>(CLIP_REPORTS);
        let recorders = Arc::new(Recorders::new(tx, end.child_token()));
        let dir = cfg.events.clips.resolved_dir();
        if cfg.cameras.iter().any(|k| records(cfg, k)) {
            info!(dir = %dir.display(), "Clips of incidents are written to {}.", dir.display());
        }
        let settings = Arc::new(Mutex::new(BudgetSettings {
            clips: cfg.events.clips.clone(),
            dir: dir.clone(),
            snapshots: cfg.events.snapshot_dir.clone(),
        }));
        tokio::spawn(enforce_budget(
            settings.clone(),
            recorders.clone(),
            shutdown.clone(),
        ));
        let feed = ClipFeed {
            recorders: recorders.clone(),
            finished: rx,
        };
        (
            Self {
                recorders,
                settings,
                dir: ClipsDir::new(dir),
            },
            feed,
        )
    }

    /// Brings the recorders in step with the running cameras and `cfg` (at start and
    /// after a reload). Recorders taken out end their clips off the runtime.
    pub fn apply(&self, cfg: &Config, cameras: &Cameras) {
        let c = &cfg.events.clips;
        let dir = c.resolved_dir();
        let on: Vec<_> = cameras
            .watch_list()
            .into_iter()
            .filter_map(|(id, h)| h.upgrade().map(|h| (id, h)))
            .map(|(id, h)| {
                let enabled = cfg
                    .cameras
                    .iter()
                    .any(|k| k.id.as_str() == id && records(cfg, k));
                let settings = enabled.then(|| c.settings(dir.clone()));
                (id, h, settings)
            })
            .collect();
        let retired = self.recorders.apply(on);
        if !retired.is_empty() {
            tokio::task::spawn_blocking(move || drop(retired));
        }
        let mut s = lock(&self.settings);
        let any = cfg.cameras.iter().any(|k| records(cfg, k));
        if any && (s.dir != dir || !s.clips.enabled) {
            info!(dir = %dir.display(), "Clips of incidents are written to {}.", dir.display());
        }
        if s.dir != dir {
            // Files in the old directory stay there, no longer served nor budgeted.
            info!(dir = %dir.display(), old = %s.dir.display(), "/clips now serves {}.", dir.display());
        }
        self.dir.set(dir.clone());
        *s = BudgetSettings {
            clips: c.clone(),
            dir,
            snapshots: cfg.events.snapshot_dir.clone(),
        };
    }
}

/// Whether camera `k` records clips: `events.clips` and the camera's own `clips` on,
/// and an encoded stream to record (a `demo://` camera's synthetic frames are raw).
fn records(cfg: &Config, k: &crate::camera::CameraConfig) -> bool {
    cfg.events.clips.enabled && k.clips.enabled && k.url.scheme() != "demo"
}

/// Every [`BUDGET_EVERY`]: the oldest clips and snapshots go until the budget holds.
/// Runs while clips are on or snapshots are written.
async fn enforce_budget(
    settings: Arc<Mutex<BudgetSettings>>,
    recorders: Arc<Recorders>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(BUDGET_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (budget, dir, snapshots) = {
            let s = lock(&settings);
            if !s.clips.enabled && s.snapshots.is_none() {
                continue;
            }
            (s.clips.budget(), s.dir.clone(), s.snapshots.clone())
        };
        let writing = recorders.writing();
        let _ = tokio::task::spawn_blocking(move || {
            budget::enforce(&dir, snapshots.as_deref(), &writing, budget)
        })
        .await;
    }
}
