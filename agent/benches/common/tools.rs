//! Small helpers shared by the benchmarks that call the repository's Python scripts: the
//! tests' own (repository root, the project's Python) and an environment knob.
#![allow(dead_code)] // each bench uses its own part

#[path = "../../../tests/common/models.rs"]
mod models;

pub use models::{root, run_python as py};

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
