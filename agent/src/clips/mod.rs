//! Clips: a video file of every incident, from `pre_capture` before it began to
//! `post_capture` after the camera's last incident ended, made of the camera's own
//! encoded stream (the ingest pre-roll ring, then the live stream; no decode, no
//! re-encode). Incidents that overlap on a camera share one clip; a clip longer than
//! `max_duration` continues in a next file at the next key frame.
//!
//! Boundaries: one [`Recorder`] per camera, on its own thread (GStreamer pushes may
//! block). It is told "incident started/ended" through cheap calls that only update a
//! shared set, and reports each finished file on a bounded channel (full: the report is
//! dropped and counted; the file stays on disk). It sits after ingest in the flow and
//! knows nothing of results: whoever owns the incidents calls it.

mod writer;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::{CameraHandle, EncodedFeed, EncodedUnit};
use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics};
use writer::ClipFile;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClipError {
    #[error("clip {file}: {message}")]
    Mux { file: String, message: String },
}

/// How one camera's clips are cut.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipSettings {
    pub dir: PathBuf,
    pub pre_capture: Duration,
    pub post_capture: Duration,
    pub max_duration: Duration,
    /// Hard cap of the pre-roll ring.
    pub preroll_max_bytes: usize,
}

/// A clip file that is complete on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedClip {
    pub camera: String,
    /// File name in the clips directory.
    pub file: String,
    pub path: PathBuf,
    /// Wall time of the clip's first frame, ms since the Unix epoch.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// The incidents it shows.
    pub incidents: Vec<String>,
}

/// Live incidents of the camera and when the last one ended.
#[derive(Default)]
struct Incidents {
    live: BTreeSet<String>,
    /// Every incident seen during the current clip.
    seen: BTreeSet<String>,
    last_end: Option<Instant>,
    /// The file being written, for `start` events.
    current: Option<String>,
}

/// Writes one camera's clips. Dropping it (or `stop`) ends the clip in progress.
pub struct Recorder {
    state: Arc<Mutex<Incidents>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Units the clip writer may fall behind the camera before frames are dropped.
const FEED_BOUND: usize = 512;
/// How often an idle recorder looks at its incidents.
const POLL: Duration = Duration::from_millis(50);

impl Recorder {
    /// Starts the camera's pre-roll ring and the recorder's thread. Finished files are
    /// reported on `done`.
    pub fn spawn(
        camera: Arc<CameraHandle>,
        settings: ClipSettings,
        done: mpsc::Sender<FinishedClip>,
        stop: CancellationToken,
    ) -> Result<Self, ClipError> {
        std::fs::create_dir_all(&settings.dir).map_err(|e| ClipError::Mux {
            file: settings.dir.display().to_string(),
            message: format!("cannot create the clips directory: {e}"),
        })?;
        camera.set_preroll(settings.pre_capture, settings.preroll_max_bytes);
        let state = Arc::new(Mutex::new(Incidents::default()));
        let worker = Worker {
            camera,
            settings,
            state: state.clone(),
            done,
            stop: stop.clone(),
            feed: None,
            clip: None,
        };
        let thread = std::thread::Builder::new()
            .name("clips".into())
            .spawn(move || worker.run())
            .map_err(|e| ClipError::Mux {
                file: String::new(),
                message: format!("cannot start the clip thread: {e}"),
            })?;
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn incident_started(&self, incident: &str) {
        let mut s = lock(&self.state);
        s.live.insert(incident.to_string());
        s.seen.insert(incident.to_string());
    }

    pub fn incident_ended(&self, incident: &str) {
        let mut s = lock(&self.state);
        if s.live.remove(incident) && s.live.is_empty() {
            s.last_end = Some(Instant::now());
        }
    }

    /// The file being written now, if any.
    pub fn current_file(&self) -> Option<String> {
        lock(&self.state).current.clone()
    }

    /// Ends the clip in progress and waits for the thread.
    pub fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    camera: Arc<CameraHandle>,
    settings: ClipSettings,
    state: Arc<Mutex<Incidents>>,
    done: mpsc::Sender<FinishedClip>,
    stop: CancellationToken,
    feed: Option<EncodedFeed>,
    clip: Option<ClipFile>,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.is_cancelled() {
            let want = {
                let s = lock(&self.state);
                !s.live.is_empty()
                    || s.last_end
                        .is_some_and(|t| t.elapsed() < self.settings.post_capture)
                        && self.feed.is_some()
            };
            if want && self.feed.is_none() {
                match self.camera.encoded_feed(FEED_BOUND) {
                    Some(feed) => self.begin(feed),
                    None => std::thread::sleep(POLL),
                }
                continue;
            }
            if !want {
                if self.feed.is_some() {
                    self.end();
                }
                std::thread::sleep(POLL);
                continue;
            }
            let next = match &self.feed {
                Some(f) => f.live.recv_timeout(POLL),
                None => continue,
            };
            match next {
                Ok(unit) => self.write(&unit),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Replaced or the camera went away: end this clip; a later incident
                    // starts another.
                    self.close();
                    self.feed = None;
                }
            }
        }
        self.end();
    }

    fn begin(&mut self, mut feed: EncodedFeed) {
        let preroll = std::mem::take(&mut feed.preroll);
        self.feed = Some(feed);
        let newest = preroll.last().map(|u| u.ts);
        for unit in &preroll {
            let behind = newest
                .map(|n| n.saturating_sub(unit.ts))
                .unwrap_or_default();
            self.write_behind(unit, behind);
        }
    }

    fn end(&mut self) {
        self.close();
        self.feed = None;
        self.camera.end_encoded_feed();
        let mut s = lock(&self.state);
        s.seen = s.live.clone();
        s.last_end = None;
    }

    fn write(&mut self, unit: &EncodedUnit) {
        self.write_behind(unit, Duration::ZERO);
    }

    fn write_behind(&mut self, unit: &EncodedUnit, behind: Duration) {
        // A new stream (the camera came back) or the length cap: next file, at a key
        // frame.
        let restart = self.clip.as_ref().is_some_and(|c| {
            unit.ts < c.last || (unit.key && c.duration() >= self.settings.max_duration)
        });
        if restart {
            self.close();
        }
        if self.clip.is_none() {
            if !unit.key {
                return;
            }
            let Some(caps) = self.feed.as_ref().map(|f| f.caps.clone()) else {
                return;
            };
            let name = format!(
                "{}-{}.mp4",
                self.camera.id(),
                crate::clock::unix_ns_now() / 1_000_000
            );
            match ClipFile::open(&self.settings.dir, name, &caps, unit.ts, behind) {
                Ok(c) => {
                    lock(&self.state).current = Some(c.name.clone());
                    tracing::info!(camera = %self.camera.id(), file = %c.name, lifecycle = "clip", "Clip started.");
                    self.clip = Some(c);
                }
                Err(e) => {
                    self.failed(&e);
                    return;
                }
            }
        }
        if let Some(c) = self.clip.as_mut() {
            if let Err(e) = c.push(unit) {
                self.failed(&e);
                self.close();
            }
        }
    }

    fn failed(&self, e: &ClipError) {
        metrics()
            .clip_errors
            .get_or_create(&metrics::camera(self.camera.id()))
            .inc();
        if metrics::should_log(
            &format!("clip-error-{}", self.camera.id()),
            Duration::from_secs(60),
        ) {
            tracing::error!(camera = %self.camera.id(), error = %e, "Clip not written.");
        }
    }

    /// Finishes the clip in progress and reports it.
    fn close(&mut self) {
        let Some(clip) = self.clip.take() else {
            return;
        };
        let (name, path, start, duration) = (
            clip.name.clone(),
            clip.path.clone(),
            clip.start,
            clip.duration(),
        );
        if let Err(e) = clip.finish(Duration::from_secs(5)) {
            self.failed(&e);
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let incidents = {
            let mut s = lock(&self.state);
            s.current = None;
            let seen = s.seen.iter().cloned().collect();
            s.seen = s.live.clone();
            seen
        };
        let done = FinishedClip {
            camera: self.camera.id().to_string(),
            file: name,
            path,
            start_ms: start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            duration_ms: duration.as_millis() as u64,
            bytes,
            incidents,
        };
        tracing::info!(camera = %done.camera, file = %done.file, duration_ms = done.duration_ms, bytes, lifecycle = "clip", "Clip finished.");
        if self.done.try_send(done).is_err() {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    self.camera.id(),
                    metrics::DropReason::ClipReport,
                ))
                .inc();
        }
    }
}
