//! The agent's recorders: one per camera with clips on, kept in step with the running
//! cameras and the clip settings (a reload), and the calls the incidents make on them
//! by camera id. Finished files of every recorder arrive on one channel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ClipSettings, FinishedClip, Recorder};
use crate::ingest::CameraHandle;
use crate::sync::lock;

struct Running {
    camera: Weak<CameraHandle>,
    settings: ClipSettings,
    recorder: Recorder,
}

/// Every camera's recorder, by camera id.
pub struct Recorders {
    running: Mutex<BTreeMap<String, Running>>,
    done: mpsc::Sender<FinishedClip>,
    stop: CancellationToken,
}

impl Recorders {
    /// Finished clips go to `done`; `stop` ends every recorder.
    pub fn new(done: mpsc::Sender<FinishedClip>, stop: CancellationToken) -> Self {
        Self {
            running: Mutex::new(BTreeMap::new()),
            done,
            stop,
        }
    }

    /// Brings the recorders in step with `cameras` (id, handle, and its settings when
    /// its clips are on): a recorder starts for a new camera, restarts for a camera
    /// whose handle or settings changed (carrying its live incidents over), stops for
    /// one gone or switched off. Returns the recorders taken out: dropping one ends its
    /// clip and joins its thread (up to seconds), so drop them off the runtime.
    #[must_use = "dropping the retired recorders blocks; drop them off the runtime"]
    pub fn apply(
        &self,
        cameras: Vec<(String, Arc<CameraHandle>, Option<ClipSettings>)>,
    ) -> Vec<Recorder> {
        let mut running = lock(&self.running);
        let mut retired = Vec::new();
        let mut wanted = BTreeMap::new();
        for (id, handle, settings) in cameras {
            match settings {
                Some(s) => {
                    wanted.insert(id, (handle, s));
                }
                // Clips off: its ring goes too.
                None => handle.set_preroll(std::time::Duration::ZERO, 0),
            }
        }
        let ids: Vec<String> = running.keys().cloned().collect();
        let mut carried: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in ids {
            let same = wanted.get(&id).is_some_and(|(h, s)| {
                running.get(&id).is_some_and(|r| {
                    Weak::ptr_eq(&r.camera, &Arc::downgrade(h)) && &r.settings == s
                })
            });
            if !same {
                if let Some(r) = running.remove(&id) {
                    carried.insert(id, r.recorder.live_incidents());
                    retired.push(r.recorder);
                }
            }
        }
        for (id, (handle, settings)) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            match Recorder::spawn(
                handle.clone(),
                settings.clone(),
                self.done.clone(),
                self.stop.child_token(),
            ) {
                Ok(recorder) => {
                    for incident in carried.remove(&id).unwrap_or_default() {
                        recorder.incident_started(&incident);
                    }
                    running.insert(
                        id,
                        Running {
                            camera: Arc::downgrade(&handle),
                            settings,
                            recorder,
                        },
                    );
                }
                Err(e) => {
                    crate::telemetry::metrics::metrics()
                        .clip_errors
                        .get_or_create(&crate::telemetry::metrics::camera(&id))
                        .inc();
                    tracing::error!(camera = %id, error = %e, "No clips for this camera.");
                }
            }
        }
        retired
    }

    /// The clip that will show `incident` on `camera`; `None` when the camera records
    /// no clips.
    pub fn incident_started(&self, camera: &str, incident: &str) -> Option<String> {
        lock(&self.running)
            .get(camera)
            .map(|r| r.recorder.incident_started(incident))
    }

    /// Whether a clip is being written on `camera` (the incident's end then waits for
    /// it to finish); false without a recorder, or when none is open (a camera without
    /// an encoded stream, or dropped: what it wrote is already finished).
    pub fn incident_ended(&self, camera: &str, incident: &str) -> bool {
        lock(&self.running).get(camera).is_some_and(|r| {
            r.recorder.incident_ended(incident);
            r.recorder.current_file().is_some()
        })
    }

    /// How long an incident's end may wait for its clip: the longest `post_capture` +
    /// `max_duration` of the running recorders.
    pub fn end_wait(&self) -> std::time::Duration {
        lock(&self.running)
            .values()
            .map(|r| r.settings.post_capture + r.settings.max_duration)
            .max()
            .unwrap_or_default()
    }

    /// The files being written now (not to be removed by the budget).
    pub fn writing(&self) -> Vec<String> {
        lock(&self.running)
            .values()
            .filter_map(|r| r.recorder.current_file())
            .collect()
    }

    /// Takes every recorder out, for a stop.
    pub fn take_all(&self) -> Vec<Recorder> {
        std::mem::take(&mut *lock(&self.running))
            .into_values()
            .map(|r| r.recorder)
            .collect()
    }
}
