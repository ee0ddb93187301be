//! Motion: a frame-difference detector on small grey frames (pure, no I/O) and the
//! per-camera event state machine whose events trigger escalation.

pub mod config;

pub use config::MotionConfig;
