//! Inference: the worker loop, preprocessing, YOLOv4 model layouts, NMS, snapshots
//! and privacy blur.

pub mod config;

pub use config::{EventsConfig, InferenceConfig};
