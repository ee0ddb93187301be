//! Motion: a frame-difference detector on small grey frames (pure, no I/O) and the
//! per-camera event state machine whose events trigger escalation. The `tool`
//! submodule holds the building blocks of `edge-agent motion` (JSON lines, debug PNGs);
//! reading the source is ingest's job.

pub mod config;
mod contrast;
pub mod detector;
pub mod events;
mod label;
mod mask;
pub mod tool;

pub use config::{ContrastConfig, MotionConfig};
pub use detector::{Detector, FrameMotion, MotionBox, NormBox};
pub use events::{EventTracker, MotionEvent, MotionTransition};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MotionError {
    #[error("grey frame has {got} bytes, expected {width}x{height} = {}", *width as usize * *height as usize)]
    FrameSize { width: u32, height: u32, got: usize },
    #[error("cannot write motion events: {0}")]
    Output(#[source] std::io::Error),
    #[error("cannot write grey frames to {}: {source}", path.display())]
    GreyOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write debug frame {}: {source}", path.display())]
    DebugFrame {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
