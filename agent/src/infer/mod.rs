//! Inference: the worker loop, preprocessing, YOLOv4 model layouts, NMS, snapshots
//! and privacy blur.
//!
//! A frame's way through here: JPEG bytes → [`crate::image`] decode → [`preprocess`]
//! (letterbox or stretch into the model tensor) → ONNX Runtime ([`session`]) →
//! [`decode`] (per model [`layout`]) → class-aware NMS → boxes mapped back to the
//! original frame → [`pipeline::Detections`]. [`worker`] runs that for frames from any
//! transport, hands detections, snapshots ([`snapshot`]) and events to a sink, and acks
//! a frame only after that. `app::detect` runs the same pipeline on image files.
//! The pure parts (layout detection, decoding, NMS, letterbox maths, drawing) take plain
//! data and are unit-tested without a model.

pub mod broker;
pub mod cache;
pub mod config;
pub mod decode;
pub mod frame_loop;
pub mod layout;
pub mod model_input;
pub mod pipeline;
pub mod preprocess;
pub mod seams;
pub mod session;
pub mod snapshot;

use std::path::PathBuf;

pub use crate::wire::detections::{Detection, Detections, Timings};
pub use config::{InferenceConfig, SnapshotConfig};
pub use pipeline::Pipeline;

/// Errors of the inference stage. Every message names the file or payload concerned.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("ONNX Runtime library not found; set inference.ort_library or ORT_DYLIB_PATH. Looked in: {}", .searched.join(", "))]
    OrtNotFound { searched: Vec<String> },
    #[error("ONNX Runtime library {path} could not be loaded: {reason}")]
    OrtLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime library {path} is version {found}; edge-agent needs {minimum} or newer (JetPack 5: onnxruntime-gpu 1.17 or 1.18 from jetson-containers or the Jetson Zoo; JetPack 6: 1.19 and up)")]
    OrtTooOld {
        path: PathBuf,
        found: String,
        minimum: &'static str,
    },
    #[error("model file {path} not found{hint}")]
    ModelMissing { path: PathBuf, hint: String },
    #[error("model {path} could not be loaded (corrupt or not an ONNX model?): {reason}")]
    ModelInvalid { path: PathBuf, reason: String },
    #[error("model {path}: unknown output layout. Expected either the pytorch-YOLOv4 layout (outputs boxes [N,K,1,4] and confs [N,K,C]) or the ONNX model-zoo layout (2 or 3 outputs [N,G,G,A,5+C]); found outputs {found}")]
    UnknownLayout { path: PathBuf, found: String },
    #[error("model {path}: wrong input: expected {expected}, found {found}")]
    InputShape {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("labels file {path}: {reason}")]
    Labels { path: PathBuf, reason: String },
    #[error("labels file {labels} has {count} classes but model {model} outputs {classes}")]
    LabelCount {
        labels: PathBuf,
        model: PathBuf,
        count: usize,
        classes: usize,
    },
    #[error("inference.class_thresholds names class {class:?}, which is not in {labels} (classes: {known})")]
    UnknownClass {
        class: String,
        labels: String,
        known: String,
    },
    #[error("no execution provider could run model {path}: {}", .attempts.join("; "))]
    NoProvider {
        path: PathBuf,
        attempts: Vec<String>,
    },
    #[error("inference.require_gpu is set and no GPU execution provider could run model {path}: {}", .attempts.join("; "))]
    GpuRequired {
        path: PathBuf,
        attempts: Vec<String>,
    },
    #[error("payload is not a decodable image ({bytes} bytes): {reason}")]
    BadImage { bytes: usize, reason: String },
    #[error("frame JPEG of {width}x{height} refused before decoding: {reason}")]
    Oversized {
        width: u32,
        height: u32,
        reason: String,
    },
    #[error("inference on model {path} failed: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("snapshot could not be encoded: {0}")]
    Snapshot(String),
}

impl From<crate::image::ImageError> for InferError {
    fn from(e: crate::image::ImageError) -> Self {
        use crate::image::ImageError;
        match e {
            ImageError::Undecodable { bytes, reason } => InferError::BadImage { bytes, reason },
            ImageError::BadRgb { len, .. } => InferError::BadImage {
                bytes: len,
                reason: e.to_string(),
            },
            ImageError::Encode { .. } => InferError::Snapshot(e.to_string()),
        }
    }
}

impl InferError {
    /// True for errors of one frame (the worker rejects the frame and goes on);
    /// false for errors of the model or runtime.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            InferError::BadImage { .. } | InferError::Oversized { .. }
        )
    }
}
