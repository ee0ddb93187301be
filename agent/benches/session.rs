//! Worker cold start on the CPU: YOLOv4-416 session creation from the model itself
//! (every graph optimisation applied at load, the baseline) against loading the
//! optimised graph the first session cached (`inference.engine_cache`), in one run,
//! alternating so both see the same load. Random weights from models/darknet2onnx.py.
//!
//! `cargo bench -p edge-agent --bench session`
//! Env: BENCH_REPEAT (default 5 sessions each), BENCH_THREADS (default 2).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use edge_agent::config::types::IntIn;
use edge_agent::infer::config::{InferenceConfig, Provider};
use edge_agent::infer::session;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    std::env::var_os("EDGE_AGENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn yolov4() -> PathBuf {
    let path = root().join("models/generated/yolov4-random-pytorch.onnx");
    if !path.is_file() {
        eprintln!("building yolov4-random-pytorch.onnx (random weights)...");
        let out = Command::new(python())
            .args([
                "models/darknet2onnx.py",
                "models/cfg/yolov4.cfg",
                "--random-weights",
                "--size",
                "416",
                "-o",
            ])
            .arg(&path)
            .current_dir(root())
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "darknet2onnx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let model = yolov4();
    let repeat = env_usize("BENCH_REPEAT", 5);
    let cache = tempfile::tempdir().unwrap();
    let cfg = |cache_dir: &Path| InferenceConfig {
        model: model.clone(),
        providers: vec![Provider::Cpu],
        threads: IntIn::new(env_usize("BENCH_THREADS", 2) as i64).unwrap(),
        engine_cache: Some(cache_dir.to_path_buf()),
        ..InferenceConfig::default()
    };
    let plain = cfg(Path::new(""));
    let cached = cfg(cache.path());
    let open = |c: &InferenceConfig| {
        let t = Instant::now();
        let s = session::open(&model, c).expect("session opens");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(s);
        ms
    };
    // Loads ONNX Runtime, then fills the cache (the one-off cost, reported apart).
    open(&plain);
    let first = open(&cached);
    let (mut base, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        base.push(open(&plain));
        warm.push(open(&cached));
    }
    let (b, w) = (median(&mut base), median(&mut warm));
    println!(
        "YOLOv4-416 (random weights, {} MB), CPU provider, {} sessions each, alternating; ONNX Runtime {}.",
        std::fs::metadata(&model).map(|m| m.len() >> 20).unwrap_or(0),
        repeat,
        session::loaded_version().unwrap_or("?")
    );
    println!();
    println!("| session creation | median ms | vs baseline |");
    println!("|---|---:|---:|");
    println!("| from the model, all optimisations at load (baseline) | {b:.0} | 1.00x |");
    println!(
        "| from the cached optimised model (`inference.engine_cache`) | {w:.0} | {:.2}x faster |",
        b / w
    );
    println!("| first session, optimising and saving the model (once per model, runtime and CPU) | {first:.0} | |");
}
