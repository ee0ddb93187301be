//! Small helpers shared by the benchmarks that call the repository's Python scripts.
#![allow(dead_code)] // each bench uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `EDGE_AGENT_PYTHON`, else the nearest `.venv` (of the repository or of the bench
/// binary), else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_AGENT_PYTHON") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    root()
        .ancestors()
        .chain(exe.ancestors())
        .map(|a| a.join(".venv/bin/python"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "python3".into())
}

/// Runs a Python script from the repository root; its stdout.
pub fn py(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .current_dir(root())
        .output()
        .expect("python runs");
    if !out.status.success() {
        panic!("python {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).unwrap()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
