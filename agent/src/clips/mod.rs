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
//! knows nothing of results: whoever owns the incidents calls it. [`Recorders`] is the
//! agent's set of them, one per camera with clips on; [`budget`] keeps the clips (and
//! snapshots) directory within its disk budget.

pub mod budget;
mod recorders;
mod writer;

pub use recorders::Recorders;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
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
    /// SHA-256 of the file, lowercase hex (empty when it could not be read back).
    pub sha256: String,
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
    /// The name the next clip takes: given out to a `start` event before the file
    /// is opened on the recorder's thread.
    next_name: Option<String>,
}

/// Writes one camera's clips. Dropping it (or `stop`) ends the clip in progress.
pub struct Recorder {
    id: Arc<str>,
    state: Arc<Mutex<Incidents>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Units the clip writer may fall behind the camera before frames are dropped.
const FEED_BOUND: usize = 512;
/// How often an idle recorder looks at its incidents.
const POLL: Duration = Duration::from_millis(50);
/// No access unit for this long while a clip is open: the camera dropped. The clip
/// ends (playable); the next key frame after the camera is back starts a new one.
const GAP: Duration = Duration::from_secs(3);
/// A unit this far before the clip's last is a new stream (the camera restarted): the
/// clip ends and the next begins. Less is a unit out of order, skipped.
const NEW_STREAM: Duration = Duration::from_secs(2);
/// After a clip could not be opened or written, the next try waits this long (a full
/// disk is not retried at every key frame).
const RETRY: Duration = Duration::from_secs(10);

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
        let id = camera.id().clone();
        let state = Arc::new(Mutex::new(Incidents::default()));
        let worker = Worker {
            id: camera.id().clone(),
            camera: Arc::downgrade(&camera),
            settings,
            state: state.clone(),
            done,
            stop: stop.clone(),
            feed: None,
            clip: None,
            last_unit: Instant::now(),
            retry_at: None,
            out_of_order: false,
        };
        let thread = std::thread::Builder::new()
            .name("clips".into())
            .spawn(move || worker.run())
            .map_err(|e| ClipError::Mux {
                file: String::new(),
                message: format!("cannot start the clip thread: {e}"),
            })?;
        Ok(Self {
            id,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Records a live incident; the name of the clip that shows it (being written, or
    /// the one that opens at the next key frame).
    pub fn incident_started(&self, incident: &str) -> String {
        let mut s = lock(&self.state);
        s.live.insert(incident.to_string());
        s.seen.insert(incident.to_string());
        if let Some(c) = &s.current {
            return c.clone();
        }
        s.next_name
            .get_or_insert_with(|| clip_name(&self.id))
            .clone()
    }

    pub fn incident_ended(&self, incident: &str) {
        let mut s = lock(&self.state);
        if s.live.remove(incident) && s.live.is_empty() {
            s.last_end = Some(Instant::now());
        }
    }

    /// The incidents live on this camera.
    pub fn live_incidents(&self) -> Vec<String> {
        lock(&self.state).live.iter().cloned().collect()
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

/// A clip file name: the camera and the wall time it was named at.
fn clip_name(camera: &str) -> String {
    format!("{camera}-{}.mp4", crate::clock::unix_ns_now() / 1_000_000)
}

struct Worker {
    id: Arc<str>,
    /// Held weakly: a camera stopping must not wait for its recorder.
    camera: Weak<CameraHandle>,
    settings: ClipSettings,
    state: Arc<Mutex<Incidents>>,
    done: mpsc::Sender<FinishedClip>,
    stop: CancellationToken,
    feed: Option<EncodedFeed>,
    clip: Option<ClipFile>,
    /// When the last access unit came.
    last_unit: Instant,
    /// No new clip before this, after an error.
    retry_at: Option<Instant>,
    /// A unit came with a time before the clip's last: units are skipped up to the
    /// next key frame (the muxer takes no decreasing time, and the deltas after a
    /// skipped unit would refer to it).
    out_of_order: bool,
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
                let Some(camera) = self.camera.upgrade() else {
                    // The camera stopped: so does its recorder.
                    break;
                };
                match camera.encoded_feed(FEED_BOUND) {
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
                Ok(unit) => {
                    self.last_unit = Instant::now();
                    self.write(&unit)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.clip.is_some() && self.last_unit.elapsed() >= GAP {
                        tracing::warn!(camera = %self.id, after = ?GAP, "Camera stream stopped mid-clip: the clip ends here; a new one starts when the camera is back.");
                        self.close();
                    }
                }
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
        self.last_unit = Instant::now();
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
        self.retry_at = None;
        self.feed = None;
        if let Some(c) = self.camera.upgrade() {
            c.end_encoded_feed();
        }
        let mut s = lock(&self.state);
        s.seen = s.live.clone();
        s.last_end = None;
        if s.live.is_empty() {
            s.next_name = None;
        }
    }

    fn write(&mut self, unit: &EncodedUnit) {
        self.write_behind(unit, Duration::ZERO);
    }

    fn write_behind(&mut self, unit: &EncodedUnit, behind: Duration) {
        // A new stream (the camera came back) or the length cap: next file, at a key
        // frame.
        if let Some(c) = &self.clip {
            if unit.ts < c.last && unit.ts + NEW_STREAM > c.last {
                if !self.out_of_order {
                    tracing::debug!(camera = %self.id, ts = ?unit.ts, last = ?c.last, "Clip: a unit out of order; skipped to the next key frame.");
                }
                self.out_of_order = true;
                return;
            }
            if self.out_of_order && !unit.key && unit.ts >= c.last {
                return;
            }
        }
        self.out_of_order = false;
        let restart = self.clip.as_ref().and_then(|c| {
            if unit.ts < c.last {
                Some(("stream_restarted", c.last, c.duration()))
            } else if unit.key && c.duration() >= self.settings.max_duration {
                Some(("max_duration", c.last, c.duration()))
            } else {
                None
            }
        });
        if let Some((why, last, duration)) = restart {
            tracing::info!(camera = %self.id, reason = why, ts = ?unit.ts, last = ?last, duration = ?duration, "Clip continues in a next file.");
            self.close();
        }
        if self.clip.is_none() {
            if !unit.key || self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            // The directory may have been removed under the agent: made again here.
            let _ = std::fs::create_dir_all(&self.settings.dir);
            let Some(caps) = self.feed.as_ref().map(|f| f.caps.clone()) else {
                return;
            };
            let name = lock(&self.state)
                .next_name
                .take()
                .unwrap_or_else(|| clip_name(&self.id));
            match ClipFile::open(&self.settings.dir, name, &caps, unit.ts, behind) {
                Ok(c) => {
                    lock(&self.state).current = Some(c.name.clone());
                    tracing::info!(camera = %self.id, file = %c.name, lifecycle = "clip_started", "Clip started.");
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
                // The finish reports the same error again: counted once.
                self.close_after(false);
            }
        }
    }

    fn failed(&mut self, e: &ClipError) {
        self.retry_at = Some(Instant::now() + RETRY);
        metrics()
            .clip_errors
            .get_or_create(&metrics::camera(&self.id))
            .inc();
        if metrics::should_log(&format!("clip-error-{}", self.id), Duration::from_secs(60)) {
            tracing::error!(camera = %self.id, error = %e, "Clip not written: closed where it stopped (playable up to there); detection and events go on.");
        }
    }

    /// Finishes the clip in progress and reports it.
    fn close(&mut self) {
        self.close_after(true);
    }

    /// [`Worker::close`]; `count` whether a failed finish is counted (not when the
    /// write that failed already was).
    fn close_after(&mut self, count: bool) {
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
            if count {
                self.failed(&e);
            }
        }
        let (bytes, sha256) = digest(&path);
        let incidents = {
            let mut s = lock(&self.state);
            s.current = None;
            let seen = s.seen.iter().cloned().collect();
            s.seen = s.live.clone();
            seen
        };
        let done = FinishedClip {
            camera: self.id.to_string(),
            file: name,
            path,
            start_ms: start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            duration_ms: duration.as_millis() as u64,
            bytes,
            sha256,
            incidents,
        };
        tracing::info!(camera = %done.camera, file = %done.file, duration_ms = done.duration_ms, bytes, lifecycle = "clip_finished", "Clip finished.");
        if self.done.try_send(done).is_err() {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    &self.id,
                    metrics::DropReason::ClipReport,
                ))
                .inc();
        }
    }
}

/// A finished file's size and SHA-256 (hex), read back from disk: what `/clips` will
/// serve. (0, "") when it cannot be read (removed, or never created).
fn digest(path: &std::path::Path) -> (u64, String) {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return (0, String::new());
    };
    let (mut h, mut n, mut buf) = (Sha256::new(), 0u64, vec![0u8; 64 << 10]);
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(_) => return (n, String::new()),
        }
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (n, hex)
}
