//! Ingest: one GStreamer pipeline per camera, supervised by a restart state machine.
//! Produces small grey frames for motion and keeps a ring of decoded frames from which
//! colour frames at detection size are made on demand for escalation.
//!
//! Boundaries: GStreamer threads end at the appsink callback and the bus sync handler;
//! everything they hand over goes through a bounded channel (grey frames, dropped and
//! counted when full) or a small lock (ring, counters). Supervision runs on tokio.

pub mod config;
mod encoded;
mod fallback;
mod frames;
mod gst_pipeline;
pub mod preroll;
mod supervisor;
pub mod synthetic;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer_video as gst_video;

use gst_video::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{BackoffConfig, Decode, FrameLimit, IdleDecode, RtspProtocol, SourceConfig};
pub use encoded::{EncodedFeed, EncodedUnit};
pub use frames::{downscale_plane, scaled_size, ColourFrame, Crop, GreyFrame};
pub use gst_pipeline::UNKNOWN_RATE_FPS;

use frames::{Kept, Ring};
use prometheus_client::metrics::counter::Counter;

use crate::telemetry::metrics::{self, metrics};
use crate::wire::regions;
use gst_pipeline::lock;

/// Everything that can end a camera's pipeline run. Messages name the camera and never
/// hold a password.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("camera {camera}: GStreamer element {element:?} is not installed")]
    MissingElement { camera: String, element: String },
    #[error("camera {camera}: decode = \"nvidia\" but nvv4l2decoder/nvvidconv are not installed")]
    NoNvidiaDecoder { camera: String },
    #[error("camera {camera}: could not build the pipeline: {message}")]
    Build { camera: String, message: String },
    #[error("camera {camera}: {message}")]
    Pipeline { camera: String, message: String },
    #[error("camera {camera}: the stream has no video (found {found})")]
    NotVideo { camera: String, found: String },
    #[error("camera {camera}: unsupported video {what}; H.264 and H.265 are supported")]
    Unsupported { camera: String, what: String },
    #[error("camera {camera}: {reason}")]
    FrameSize { camera: String, reason: String },
    #[error("camera {camera}: end of stream")]
    EndOfStream { camera: String },
    #[error("camera {camera}: stalled, no frame for {after:?}")]
    Stalled { camera: String, after: Duration },
    #[error("camera {camera}: stopped by shutdown")]
    Cancelled { camera: String },
}

impl IngestError {
    /// Short label for metrics (`camera_restarts{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            IngestError::MissingElement { .. } | IngestError::NoNvidiaDecoder { .. } => {
                "missing_element"
            }
            IngestError::Build { .. } => "build",
            IngestError::Pipeline { .. } => "error",
            IngestError::NotVideo { .. } => "not_video",
            IngestError::Unsupported { .. } => "unsupported",
            IngestError::FrameSize { .. } => "frame_size",
            IngestError::EndOfStream { .. } => "eos",
            IngestError::Stalled { .. } => "stall",
            IngestError::Cancelled { .. } => "shutdown",
        }
    }
}

/// Where a camera's supervisor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraState {
    /// Pipeline built and starting; no frame yet.
    Connecting,
    /// Frames are arriving.
    Streaming,
    /// Waiting before the next try.
    BackingOff,
    /// Shut down; the pipeline is NULL.
    Stopped,
}

/// A snapshot of one camera for status output.
#[derive(Clone, Debug)]
pub struct CameraStatus {
    pub camera: Arc<str>,
    /// The URL with its password redacted.
    pub url: String,
    pub state: CameraState,
    pub restarts: u64,
    /// Why the last restart happened (redacted).
    pub last_reason: Option<String>,
    /// The decoder in use, once chosen.
    pub decoder: Option<String>,
    /// Why the camera decodes in software although a hardware decoder exists (it failed
    /// twice in a row); cleared when the hardware is tried again.
    pub decoder_fallback: Option<String>,
    /// Source size of the last frame.
    pub source_size: Option<(u32, u32)>,
    /// Decoded frames received.
    pub frames: u64,
    /// Grey frames handed to motion (or dropped because its queue was full).
    pub sampled: u64,
    /// Frames skipped to keep the analysis rate.
    pub sampled_out: u64,
    /// Frames lost: motion queue full plus appsink queue overflow.
    pub dropped: u64,
}

/// State shared by a camera's supervisor, its pipeline callbacks and its handle.
pub(crate) struct Shared {
    pub(crate) id: Arc<str>,
    url: String,
    detect_width: u32,
    pub(crate) frames: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) sampled_out: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) sink_in: AtomicU64,
    pub(crate) sink_pulled: AtomicU64,
    /// Next frame sequence number; never reset, so seqs stay unique across restarts.
    pub(crate) seq: AtomicU64,
    pub(crate) ring: Mutex<Ring<gst::Sample>>,
    /// The encoded stream's pre-roll ring and the clip writer's feed.
    pub(crate) encoded: Arc<Mutex<encoded::EncodedTap>>,
    pub(crate) status: Mutex<StatusFields>,
    converter: Mutex<Option<CachedConverter>>,
    /// Converter to full-resolution RGB, for crops.
    full_converter: Mutex<Option<CachedConverter>>,
    /// The supervisor's sign of life, for the watchdog.
    pub(crate) beat: crate::telemetry::notify::Beat,
    /// Idle decode: set by the motion loop while nothing moves; read by the pipeline's
    /// key-frame gate (only installed with `idle_decode = "keyframes"`).
    pub(crate) idle: Arc<AtomicBool>,
    idle_decode: IdleDecode,
    /// This camera's metric series, looked up once rather than per frame.
    pub(crate) frames_metric: Counter,
    pub(crate) queue_full_metric: Counter,
}

pub(crate) struct StatusFields {
    pub(crate) state: CameraState,
    pub(crate) restarts: u64,
    pub(crate) last_reason: Option<String>,
    pub(crate) decoder: Option<String>,
    pub(crate) decoder_fallback: Option<String>,
    pub(crate) source_size: Option<(u32, u32)>,
}

struct CachedConverter {
    input: gst_video::VideoInfo,
    output: gst_video::VideoInfo,
    converter: gst_video::VideoConverter,
}

impl Shared {
    fn new(cfg: &SourceConfig) -> Self {
        Self {
            id: Arc::from(cfg.id.as_str()),
            url: cfg.url.to_string(),
            detect_width: cfg.detect_width.as_u32(),
            frames: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            sink_in: AtomicU64::new(0),
            sink_pulled: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            ring: Mutex::new(Ring::new(cfg.ring_frames.as_usize())),
            encoded: Arc::new(Mutex::new(encoded::EncodedTap::new(Arc::from(
                cfg.id.as_str(),
            )))),
            status: Mutex::new(StatusFields {
                state: CameraState::Connecting,
                restarts: 0,
                last_reason: None,
                decoder: None,
                decoder_fallback: None,
                source_size: None,
            }),
            converter: Mutex::new(None),
            full_converter: Mutex::new(None),
            beat: Default::default(),
            idle: Arc::new(AtomicBool::new(false)),
            idle_decode: cfg.idle_decode,
            frames_metric: metrics()
                .frames
                .get_or_create(&metrics::camera(cfg.id.as_str()))
                .clone(),
            queue_full_metric: metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    cfg.id.as_str(),
                    metrics::DropReason::MotionQueueFull,
                ))
                .clone(),
        }
    }

    pub(crate) fn set_state(&self, state: CameraState) {
        lock(&self.status).state = state;
    }

    fn status(&self) -> CameraStatus {
        let s = lock(&self.status);
        let sink_dropped = self
            .sink_in
            .load(Ordering::Relaxed)
            .saturating_sub(self.sink_pulled.load(Ordering::Relaxed));
        CameraStatus {
            camera: self.id.clone(),
            url: self.url.clone(),
            state: s.state,
            restarts: s.restarts,
            last_reason: s.last_reason.clone(),
            decoder: s.decoder.clone(),
            decoder_fallback: s.decoder_fallback.clone(),
            source_size: s.source_size,
            frames: self.frames.load(Ordering::Relaxed),
            sampled: self.delivered.load(Ordering::Relaxed),
            sampled_out: self.sampled_out.load(Ordering::Relaxed),
            dropped: self.queue_full.load(Ordering::Relaxed) + sink_dropped,
        }
    }

    /// Converts a kept decoded frame to packed RGB at detection size, with crops of it
    /// at full resolution around `crops`' normalised boxes (none without).
    fn colour(&self, kept: Kept<gst::Sample>, crops: Option<&CropRequest>) -> Option<ColourFrame> {
        let caps = kept.frame.caps()?;
        let input = gst_video::VideoInfo::from_caps(caps).ok()?;
        let (sw, sh) = (input.width(), input.height());
        let (w, h) = scaled_size(sw, sh, self.detect_width);
        let rgb = convert(&kept.frame, &input, w, h, &self.converter)?;
        let squares = crops
            .map(|c| planned_crops(&self.id, c, sw, sh))
            .unwrap_or_default();
        let crops = if squares.is_empty() {
            Vec::new()
        } else {
            let full = if (w, h) == (sw, sh) {
                None
            } else {
                Some(convert(&kept.frame, &input, sw, sh, &self.full_converter)?)
            };
            let full = full.as_deref().unwrap_or(&rgb);
            squares
                .into_iter()
                .map(|frame| Crop {
                    frame,
                    rgb: regions::cut_rgb(full, sw, &frame),
                })
                .collect()
        };
        Some(ColourFrame {
            camera: self.id.clone(),
            seq: kept.seq,
            captured: kept.captured,
            width: w,
            height: h,
            rgb,
            source_width: sw,
            source_height: sh,
            crops,
        })
    }
}

/// The crops `request` asks of `camera`'s `sw` x `sh` frame, or none when the whole
/// frame pays better ([`regions::plan`]); a frame sent whole instead is counted with
/// its reason.
fn planned_crops(camera: &str, request: &CropRequest, sw: u32, sh: u32) -> Vec<regions::Rect> {
    match regions::plan(&request.boxes, sw, sh, request.min_side, request.max_crops) {
        regions::Plan::Crops(squares) => squares,
        regions::Plan::Whole(why) => {
            metrics()
                .crops_whole
                .get_or_create(&metrics::crops_whole(camera, why.as_str()))
                .inc();
            Vec::new()
        }
    }
}

/// Converts a decoded frame to packed RGB of `w` x `h`, with a converter kept in `cache`
/// while the sizes stay the same.
fn convert(
    sample: &gst::Sample,
    input: &gst_video::VideoInfo,
    w: u32,
    h: u32,
    cache: &Mutex<Option<CachedConverter>>,
) -> Option<Vec<u8>> {
    let output = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .fps(input.fps())
        .interlace_mode(input.interlace_mode())
        .build()
        .ok()?;
    let mut cache = lock(cache);
    let reuse = matches!(&*cache, Some(c) if c.input == *input && c.output == output);
    if !reuse {
        let converter = gst_video::VideoConverter::new(input, &output, None).ok()?;
        *cache = Some(CachedConverter {
            input: input.clone(),
            output: output.clone(),
            converter,
        });
    }
    let conv = &cache.as_ref()?.converter;
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, input).ok()?;
    let mut out = gst::Buffer::with_size(output.size()).ok()?;
    let row = w as usize * 3;
    let mut rgb = Vec::with_capacity(row * h as usize);
    {
        let out_ref = out.get_mut()?;
        let mut dst = gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, &output).ok()?;
        conv.frame_ref(&src, &mut dst);
        let stride = dst.plane_stride()[0] as usize;
        let data = dst.plane_data(0).ok()?;
        for r in data.chunks(stride).take(h as usize) {
            rgb.extend_from_slice(r.get(..row)?);
        }
    }
    Some(rgb)
}

/// Crops wanted with a colour frame: around these normalised motion boxes, at least
/// `min_side` camera pixels, at most `max_crops` of them, or none when the whole frame
/// pays better (see [`regions::plan`]).
#[derive(Clone, Debug)]
pub struct CropRequest {
    pub boxes: Vec<[f32; 4]>,
    pub min_side: u32,
    pub max_crops: usize,
}

/// The handle the rest of the agent holds for one camera.
pub struct CameraHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

impl CameraHandle {
    /// The colour frame with `seq`, or the nearest newer one still kept, converted to RGB
    /// at detection size now. `None` when every kept frame is older than `seq`.
    pub fn colour_frame(&self, seq: u64) -> Option<ColourFrame> {
        self.colour_frame_with(seq, None)
    }

    /// [`CameraHandle::colour_frame`] with crops of the full-resolution frame.
    pub fn colour_frame_with(&self, seq: u64, crops: Option<&CropRequest>) -> Option<ColourFrame> {
        let kept = lock(&self.shared.ring).at_or_after(seq)?;
        self.shared.colour(kept, crops)
    }

    /// [`CameraHandle::colour_frame`] on a blocking thread: a full-size conversion
    /// (milliseconds at 720p) must not hold a runtime worker thread, which every
    /// camera, the transport and the watchdog share.
    pub async fn colour_frame_off_runtime(
        self: &Arc<Self>,
        seq: u64,
        crops: Option<CropRequest>,
    ) -> Option<ColourFrame> {
        let h = self.clone();
        tokio::task::spawn_blocking(move || h.colour_frame_with(seq, crops.as_ref()))
            .await
            .ok()
            .flatten()
    }

    /// The newest kept colour frame.
    pub fn latest_colour(&self) -> Option<ColourFrame> {
        let kept = lock(&self.shared.ring).latest()?;
        self.shared.colour(kept, None)
    }

    pub fn status(&self) -> CameraStatus {
        self.shared.status()
    }

    /// Tells the pipeline whether the camera is idle (no motion); with
    /// `idle_decode = "keyframes"` it then decodes key frames only. Returns true when
    /// the decode mode changed.
    pub fn set_idle(&self, idle: bool) -> bool {
        self.shared.idle_decode == IdleDecode::Keyframes
            && self.shared.idle.swap(idle, Ordering::Relaxed) != idle
    }

    pub fn id(&self) -> &Arc<str> {
        &self.shared.id
    }

    /// Keeps the last `keep` of the camera's encoded stream (from a key frame at or
    /// before `keep` ago), at most `cap_bytes`; `keep` zero turns the ring off (the
    /// default: clips off cost nothing but a lock per access unit).
    pub fn set_preroll(&self, keep: Duration, cap_bytes: usize) {
        lock(&self.shared.encoded).set_limits(keep, cap_bytes);
    }

    /// The pre-roll ring's (access units, bytes, stream time covered).
    pub fn preroll_size(&self) -> (usize, usize, Duration) {
        lock(&self.shared.encoded).ring_size()
    }

    /// Starts the encoded feed of a clip: the pre-roll, then the live stream through a
    /// channel of `bound` units (full: dropped, counted, skipped to the next key
    /// frame). One feed per camera; a new one replaces the old. `None` until the
    /// camera's stream has started.
    pub fn encoded_feed(&self, bound: usize) -> Option<EncodedFeed> {
        lock(&self.shared.encoded).subscribe(bound)
    }

    /// Ends the encoded feed.
    pub fn end_encoded_feed(&self) {
        lock(&self.shared.encoded).unsubscribe();
    }

    /// The supervisor's sign of life: it beats while the camera is supervised
    /// (streaming, reconnecting or backing off), not while it is stuck.
    pub fn beat(&self) -> &crate::telemetry::notify::Beat {
        &self.shared.beat
    }

    /// Stops this camera (if the shutdown token has not already) and waits until its
    /// pipeline is NULL and its task has ended. The wait is bounded: a pipeline that
    /// does not reach NULL in time is abandoned (logged and counted) and this returns
    /// false.
    pub async fn stopped(self) -> bool {
        self.stop.cancel();
        match self.task.await {
            Ok(clean) => clean,
            Err(e) => {
                tracing::error!(camera = %self.shared.id, error = %e, "Camera task ended abnormally.");
                false
            }
        }
    }
}

/// Starts supervision of one camera on the current tokio runtime; never blocks on the
/// camera. Grey frames go to `grey_tx` (dropped and counted when it is full). `cfg` is
/// ingest's part of a camera's configuration (a `camera::CameraConfig` converts).
pub fn spawn_camera(
    cfg: impl Into<SourceConfig>,
    grey_tx: mpsc::Sender<GreyFrame>,
    shutdown: CancellationToken,
) -> CameraHandle {
    let cfg = cfg.into();
    let shared = Arc::new(Shared::new(&cfg));
    let stop = shutdown.child_token();
    let task = tokio::spawn(supervisor::supervise(
        cfg,
        shared.clone(),
        grey_tx,
        stop.clone(),
    ));
    CameraHandle { shared, stop, task }
}

/// How a replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Decoded frames.
    pub frames: u64,
    /// Grey frames delivered.
    pub delivered: u64,
    /// Source size.
    pub source_size: Option<(u32, u32)>,
}

/// Runs a file (or any source) once through the same pipeline as a camera, as fast as
/// possible: no clock sync, no restart, and no frame lost, since it waits for the
/// receiver instead of dropping. Every decoded frame is delivered unless
/// `sample_to_analysis_fps` is set. Returns at the end of the stream.
pub async fn replay(
    cfg: impl Into<SourceConfig>,
    sample_to_analysis_fps: bool,
    grey_tx: mpsc::Sender<GreyFrame>,
    shutdown: CancellationToken,
) -> Result<DecodeSummary, IngestError> {
    supervisor::replay(cfg.into(), sample_to_analysis_fps, grey_tx, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_camera() -> SourceConfig {
        let text =
            "[device]\nid = \"t\"\n[[cameras]]\nid = \"cam\"\nurl = \"rtsp://127.0.0.1:9/none\"\n";
        crate::config::Config::from_toml_str("test", text)
            .unwrap()
            .cameras
            .remove(0)
            .source()
    }

    /// One runtime thread only: while a colour conversion waits (here on the ring's
    /// lock, held by this test), another task on the runtime must still run.
    #[test]
    fn a_colour_conversion_never_holds_the_runtime_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let runner = std::thread::spawn(move || {
            rt.block_on(async move {
                let stop = CancellationToken::new();
                let (tx, _rx) = mpsc::channel(1);
                let cam = Arc::new(spawn_camera(unreachable_camera(), tx, stop.clone()));
                let shared = cam.shared.clone();
                // Hold the ring from another thread, as a long conversion would.
                std::thread::spawn(move || {
                    let _ring = lock(&shared.ring);
                    held_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                });
                held_rx.recv().unwrap();
                let colour = tokio::spawn({
                    let cam = cam.clone();
                    async move { cam.colour_frame_off_runtime(0, None).await }
                });
                // Runs only if the conversion left the runtime thread free.
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                done_tx.send(()).unwrap();
                assert!(colour.await.unwrap().is_none(), "no frame was kept");
                stop.cancel();
                // Let the camera take its pipeline to NULL before the runtime goes: a
                // pipeline dropped with its task is disposed while playing, and its
                // threads then crashed the test process (SIGSEGV, seen once in CI).
                let cam = Arc::try_unwrap(cam)
                    .ok()
                    .expect("the colour task has let go of the camera");
                tokio::time::timeout(Duration::from_secs(20), cam.stopped())
                    .await
                    .expect("the camera stops");
            })
        });
        let free = done_rx.recv_timeout(Duration::from_secs(20));
        release_tx.send(()).unwrap();
        runner.join().unwrap();
        assert!(
            free.is_ok(),
            "the runtime thread was blocked by a colour conversion"
        );
    }

    #[test]
    fn a_frame_sent_whole_instead_of_cropped_is_counted_with_its_reason() {
        let count = |camera: &str, why: regions::Fallback| {
            metrics()
                .crops_whole
                .get_or_create(&metrics::crops_whole(camera, why.as_str()))
                .get()
        };
        // A camera id of this test's own: the registry is the process's.
        let cam = "crops-whole-unit";
        let req = |boxes: Vec<[f32; 4]>, max_crops| CropRequest {
            boxes,
            min_side: 416,
            max_crops,
        };
        let small = [0.1, 0.1, 0.05, 0.05];
        let far = [0.8, 0.8, 0.05, 0.05];
        // Cropped: nothing counted.
        assert_eq!(
            planned_crops(cam, &req(vec![small], 4), 1920, 1080).len(),
            1
        );
        let every = [
            regions::Fallback::NoMotion,
            regions::Fallback::MostlyMoving,
            regions::Fallback::TooManyCrops,
            regions::Fallback::CropsCostMore,
        ];
        assert!(every.iter().all(|&w| count(cam, w) == 0));
        for (request, (w, h), why) in [
            (req(vec![], 4), (1920, 1080), regions::Fallback::NoMotion),
            (
                req(vec![[0.0, 0.0, 0.8, 0.9]], 4),
                (1920, 1080),
                regions::Fallback::MostlyMoving,
            ),
            (
                req(vec![small, far], 1),
                (1920, 1080),
                regions::Fallback::TooManyCrops,
            ),
            // Two 416-pixel squares hold more pixels than a 640x360 frame.
            (
                req(vec![[0.0, 0.0, 0.05, 0.05], [0.9, 0.9, 0.05, 0.05]], 4),
                (640, 360),
                regions::Fallback::CropsCostMore,
            ),
        ] {
            let before = count(cam, why);
            assert!(planned_crops(cam, &request, w, h).is_empty(), "{why:?}");
            assert_eq!(count(cam, why), before + 1, "{why:?}");
        }
        let text = metrics().encode_text();
        assert!(
            text.contains(&format!(
                "edge_agent_crops_whole_total{{camera=\"{cam}\",reason=\"too_many_crops\"}} 1"
            )),
            "{text}"
        );
    }
}
