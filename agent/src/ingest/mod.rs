//! Ingest: one GStreamer pipeline per camera, supervised by a restart state machine.
//! Produces small grey frames for motion and keeps a ring of colour frames for escalation.

pub mod config;

pub use config::{BackoffConfig, CameraConfig, Decode, RtspProtocol};
