//! Motion detector benchmark: the Rust detector against OpenCV's running-average recipe
//! (scripts/motion_ref.py, single thread) on the same frames, at 320x180, 640x360 and
//! 1920x1080; prints ns per pixel of the whole per-frame step and the ratio. The Rust
//! step does more than the recipe (shake compensation, exposure, per-pixel noise level,
//! shadow test), so "boxes agree" counts frames where both found as many boxes, not a
//! correctness check; `scripts/motion_score.py` scores both against ground truth. Then
//! compares the events both produce on bikes.mp4 (grey, 320 px wide, 5 fps, decoded
//! by OpenCV in the script so both see identical frames).
//!
//! Run: `cargo bench -p edge-agent --bench motion`. Without Python or OpenCV it says
//! so and prints the Rust figures only.

#[path = "common/frames.rs"]
mod frames;
#[path = "common/motion_ref.rs"]
mod motion_ref;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use edge_agent::motion::{Detector, EventTracker, MotionConfig, MotionTransition};

const REPEATS: usize = 7;

fn main() {
    let cfg = MotionConfig::default();
    // `--rust-only` (e.g. under callgrind) skips the OpenCV side.
    let rust_only = std::env::args().any(|a| a == "--rust-only");
    let python = if rust_only { None } else { python() };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/motion_ref.py");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("motion bench: cannot make a temp dir: {e}");
            return;
        }
    };
    println!("motion detector, whole per-frame step, single thread, per frame best of {REPEATS}");
    // Where the CPU has AVX2 the step runs its AVX2 build; the portable build (SSE2
    // here, NEON on an ARM box) is timed beside it.
    #[cfg(target_arch = "x86_64")]
    let simd = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    println!(
        "{:>10} {:>7} {:>12} {:>12} {:>8} {:>14} {:>15} {:>15}",
        "size",
        "frames",
        "rust ns/px",
        "opencv ns/px",
        "ratio",
        "boxes agree",
        "portable ns/px",
        "portable ratio"
    );
    for (w, h, n) in [
        (320usize, 180usize, 100usize),
        (640, 360, 100),
        (1920, 1080, 30),
    ] {
        let frames = frames::synthetic(w, h, n);
        let raw = dir.path().join(format!("frames-{w}x{h}.raw"));
        if let Err(e) = std::fs::write(&raw, frames.concat()) {
            eprintln!("motion bench: cannot write {}: {e}", raw.display());
            return;
        }
        let (rust_ns, rust_counts) = time_rust(&cfg, w, h, &frames, false);
        let portable_ns = simd.then(|| time_rust(&cfg, w, h, &frames, true).0);
        let reference = python.as_ref().and_then(|py| {
            run_json(
                py,
                &script,
                &[
                    "bench",
                    "--raw",
                    &raw.to_string_lossy(),
                    "--width",
                    &w.to_string(),
                    "--height",
                    &h.to_string(),
                    "--frames",
                    &n.to_string(),
                    "--repeats",
                    &REPEATS.to_string(),
                    "--params",
                    &motion_ref::params(&cfg),
                ],
            )
        });
        match reference {
            Some(r) => {
                let cv_ns = r["ns_per_pixel"].as_f64().unwrap_or(f64::NAN);
                let cv_counts: Vec<u64> = r["boxes_per_frame"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                    .unwrap_or_default();
                let agree = rust_counts
                    .iter()
                    .zip(&cv_counts)
                    .filter(|(a, b)| a == b)
                    .count();
                let (p_ns, p_ratio) = match portable_ns {
                    Some(p) => (format!("{p:.3}"), format!("{:.2}x", cv_ns / p)),
                    None => ("(same)".into(), "(same)".into()),
                };
                println!(
                    "{:>10} {:>7} {:>12.3} {:>12.3} {:>7.2}x {:>9}/{:<4} {:>15} {:>15}",
                    format!("{w}x{h}"),
                    n,
                    rust_ns,
                    cv_ns,
                    cv_ns / rust_ns,
                    agree,
                    n,
                    p_ns,
                    p_ratio
                );
            }
            None => println!(
                "{:>10} {:>7} {:>12.3} {:>12} {:>8} {:>14}",
                format!("{w}x{h}"),
                n,
                rust_ns,
                "-",
                "-",
                "-"
            ),
        }
    }
    match &python {
        Some(py) => compare_bikes(py, &script, &cfg, dir.path()),
        None if rust_only => {}
        None => println!("Python with OpenCV (cv2) not found: OpenCV figures and the bikes.mp4 comparison skipped."),
    }
}

/// The venv of the repository when present, else python3; `None` without cv2.
fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let candidates = [
        venv,
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python")),
        PathBuf::from("python3"),
    ];
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import cv2, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn run_json(py: &Path, script: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(py).arg(script).args(args).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            serde_json::from_str(text.trim()).ok()
        }
        Ok(o) => {
            eprintln!(
                "motion_ref.py {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("cannot run {}: {e}", py.display());
            None
        }
    }
}

/// Time of the whole per-frame step in ns per pixel, with the number of boxes per
/// frame. Per frame, the best of `REPEATS` runs (each run starts a fresh detector, so
/// frame i sees the same state every time): robust against a busy machine. The
/// reference script measures the same way.
fn time_rust(
    cfg: &MotionConfig,
    w: usize,
    h: usize,
    frames: &[Vec<u8>],
    portable: bool,
) -> (f64, Vec<u64>) {
    let mut best = vec![Duration::MAX; frames.len()];
    let mut counts = Vec::new();
    for _ in 0..REPEATS {
        let mut det = Detector::new(cfg, w as u32, h as u32, 5);
        if portable {
            det.use_portable_step();
        }
        counts.clear();
        for (f, b) in frames.iter().zip(best.iter_mut()) {
            let t0 = Instant::now();
            let m = det.process(std::hint::black_box(f)).expect("frame size");
            *b = (*b).min(t0.elapsed());
            counts.push(m.boxes.len() as u64);
        }
    }
    let total: Duration = best.iter().sum();
    (
        total.as_nanos() as f64 / (frames.len() * w * h) as f64,
        counts,
    )
}

/// Events of both implementations on the frames of bikes.mp4 the script decoded.
fn compare_bikes(py: &Path, script: &Path, cfg: &MotionConfig, dir: &Path) {
    let raw = dir.join("bikes.raw");
    let Some(r) = run_json(
        py,
        script,
        &[
            "bikes",
            "--raw-out",
            &raw.to_string_lossy(),
            "--params",
            &motion_ref::params(cfg),
        ],
    ) else {
        println!("bikes.mp4 comparison skipped (see the message above).");
        return;
    };
    let (w, h, n) = (
        r["width"].as_u64().unwrap_or(0) as usize,
        r["height"].as_u64().unwrap_or(0) as usize,
        r["frames"].as_u64().unwrap_or(0) as usize,
    );
    let data = match std::fs::read(&raw) {
        Ok(d) if d.len() == w * h * n && n > 0 => d,
        _ => {
            println!(
                "bikes.mp4 comparison skipped: {} is not {n} frames of {w}x{h}",
                raw.display()
            );
            return;
        }
    };
    let t = |i: usize| SystemTime::UNIX_EPOCH + Duration::from_millis(200 * i as u64);
    let index = |at: SystemTime| {
        (at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            / 200) as u64
    };
    let mut det = Detector::new(cfg, w as u32, h as u32, 5);
    let mut tracker = EventTracker::new(cfg, "bikes");
    let (mut events, mut motion, mut global) = (Vec::new(), Vec::new(), Vec::new());
    for (i, f) in data.chunks_exact(w * h).enumerate() {
        let Ok(m) = det.process(f) else { return };
        if m.has_motion() {
            motion.push(i as u64);
        }
        if m.global_change {
            global.push(i as u64);
        }
        if let Some(MotionTransition::Ended(e)) = tracker.update(t(i), m) {
            events.push((index(e.start), e.end.map(index).unwrap_or(0)));
        }
    }
    if let Some(MotionTransition::Ended(e)) = tracker.finish() {
        events.push((index(e.start), e.end.map(index).unwrap_or(0)));
    }
    let cv_events: Vec<(u64, u64)> = r["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| Some((e[0].as_u64()?, e[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let list = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default()
    };
    let (cv_motion, cv_global) = (list(&r["motion_frames"]), list(&r["global_frames"]));
    let same_motion = (0..n as u64)
        .filter(|i| motion.contains(i) == cv_motion.contains(i))
        .count();
    println!();
    println!("bikes.mp4: {n} frames of {w}x{h} at 5 fps (frame = 200 ms)");
    println!("  rust   events (start..end frame): {events:?}");
    println!("  opencv events (start..end frame): {cv_events:?}");
    println!("  rust   global-change frames: {global:?}");
    println!("  opencv global-change frames: {cv_global:?}");
    println!(
        "  frames with motion: rust {}, opencv {}, same verdict on {same_motion}/{n} frames",
        motion.len(),
        cv_motion.len()
    );
}
