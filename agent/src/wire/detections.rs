//! The detections message a worker publishes for each frame (`schemas/detections.v2.json`):
//! the frame it answers, the boxes in camera-frame pixels, the worker's timings and the
//! per-stage latency from capture. The worker writes [`DetectionsMessage`]; the agent
//! reads the part it tracks ([`DetectionsIn`]) and the transport only its `seq`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the worker needs to know about a frame besides its pixels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// The device that sent the frame; its results go back to it (a worker behind
    /// `edge-agent scaler` serves many devices). Empty: the worker's own device.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    pub camera: String,
    pub seq: u64,
    /// Capture time, milliseconds since the Unix epoch.
    pub captured_ms: u64,
    /// The frame's event id (its motion event, or a verification frame's: see
    /// `escalate::verify`), so whoever reads the detections knows why it was sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
}

/// One detected object, box in frame pixels (top-left corner and size).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Detection {
    pub class_id: usize,
    pub class: String,
    pub score: f32,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// Milliseconds per stage for one frame. A batched run shares its inference time
/// equally between its frames.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
    /// Frames in the session call this frame was part of.
    pub batch: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detections {
    pub items: Vec<Detection>,
    pub provider: &'static str,
    /// The size of the frame the boxes are in.
    pub width: u32,
    pub height: u32,
    /// Crops of the camera frame detected on (the worker's; 0: the whole frame).
    pub regions: usize,
    pub timings: Timings,
}

/// Version of the detections message (`schemas/detections.v2.json`). Version 2 gives
/// boxes in camera-frame pixels (version 1: in the frame scaled to `detect_width`).
pub const DETECTIONS_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectionsMessage {
    /// [`DETECTIONS_VERSION`].
    pub version: u32,
    #[serde(flatten)]
    pub meta: FrameMeta,
    pub detections: Detections,
    /// Per-stage latency from capture to this message (frames from the agent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Id of this frame's snapshot, handed over just before (frames with detections of
    /// an event class only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Where it was stored, with `events.snapshot_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<PathBuf>,
}

/// Milliseconds per stage; their sum is `total_ms` (up to float rounding).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    pub capture_to_motion: f64,
    pub motion_to_publish: f64,
    pub cold_start: f64,
    pub queue_wait: f64,
    pub worker_wait: f64,
    pub decode: f64,
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
    /// Time in the batch's model run spent on the other frames of the batch.
    pub batch_other: f64,
    pub result_publish: f64,
}

impl Stages {
    /// (name, ms) in the order a frame meets them; the names are metric labels.
    pub fn iter(&self) -> [(&'static str, f64); 11] {
        [
            ("capture_to_motion", self.capture_to_motion),
            ("motion_to_publish", self.motion_to_publish),
            ("cold_start", self.cold_start),
            ("queue_wait", self.queue_wait),
            ("worker_wait", self.worker_wait),
            ("decode", self.decode),
            ("preprocess", self.preprocess),
            ("inference", self.inference),
            ("postprocess", self.postprocess),
            ("batch_other", self.batch_other),
            ("result_publish", self.result_publish),
        ]
    }
}

/// The `latency` object of a detections message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The frame waited for a worker to start.
    pub cold_start: bool,
    pub stages: Stages,
    /// Capture to the hand-over of the detections.
    pub total_ms: f64,
    /// When the detections were handed over, so a reader can add its delivery time.
    pub result_at_unix_ns: u64,
}

/// The part of a worker's `detections` message that tracking reads.
#[derive(Debug, Deserialize)]
pub struct DetectionsIn {
    pub seq: u64,
    pub captured_ms: u64,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub snapshot: Option<String>,
    pub detections: DetectionsBody,
}

#[derive(Debug, Deserialize)]
pub struct DetectionsBody {
    pub items: Vec<Detection>,
    pub width: u32,
    pub height: u32,
}

/// The `seq` of a detections payload, if it has one (the transport's duplicate check
/// reads no more than that).
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(payload).ok().map(|s| s.seq)
}
