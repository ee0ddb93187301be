//! Benchmark (not a test): what the page on the telemetry listener costs the agent. One
//! release `edge-agent run` with CAMERAS cameras of 1280x720 H.264 over RTSP (an
//! in-process server), measured in alternating windows of the same run:
//!
//! - closed: nobody asks for anything but `/metrics` once a window;
//! - page open: what one open page asks, every 2 s `/page/cameras.json` and each
//!   camera's frame;
//! - hammered: each camera's frame asked 10 times a second (the cache caps the
//!   encodes at one per camera per second).
//!
//! The agent's CPU (user + system, /proc) per window, as % of one core, and the frames
//! served. Windows alternate (closed, open, hammered, closed, ...) so drift in the
//! machine's load spreads over all three.
//!
//! `cargo bench -p edge-agent --bench page` (env: BENCH_PAGE_WINDOW_S, default 20;
//! BENCH_PAGE_ROUNDS, default 3; BENCH_AGENT, the agent binary, default
//! target/release/edge-agent).

#[path = "common/procfs.rs"]
mod procfs;

#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::ingest::synthetic::Scene;
use procfs::cpu_seconds as cpu_of;
use rtsp_server::RtspTestServer;

const CAMERAS: usize = 2;
const FPS: u32 = 15;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `GET path`: the status and the body's length.
fn get(addr: &str, path: &str) -> (u16, usize) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, 0);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let status = std::str::from_utf8(&out[..out.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out.len() - i - 4)
        .unwrap_or(0);
    (status, body)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Open,
    Hammered,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Closed => "page closed",
            Mode::Open => "page open (state and frames every 2 s)",
            Mode::Hammered => "frames asked 10x a second per camera",
        }
    }
    /// Time between two rounds of requests; None: no requests.
    fn every(self) -> Option<Duration> {
        match self {
            Mode::Closed => None,
            Mode::Open => Some(Duration::from_secs(2)),
            Mode::Hammered => Some(Duration::from_millis(100)),
        }
    }
}

#[derive(Default)]
struct Totals {
    secs: f64,
    cpu: f64,
    frames: u64,
    bytes: u64,
}

fn main() {
    gstreamer::init().expect("GStreamer");
    let window = Duration::from_secs(env_u64("BENCH_PAGE_WINDOW_S", 20));
    let rounds = env_u64("BENCH_PAGE_ROUNDS", 3);
    let server = RtspTestServer::start(Scene::sized(1280, 720, FPS));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = format!(
        "[device]\nid = \"page-bench\"\n[transport]\nkind = \"embedded\"\nembedded_port = {broker}\n\
         [telemetry]\nmetrics_listen = \"{addr}\"\nheartbeat_interval = \"0s\"\n"
    );
    for i in 0..CAMERAS {
        cfg += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nurl = \"{}\"\n[cameras.escalation]\nenabled = false\n",
            server.url(&format!("/cam{i}"))
        );
    }
    let path = dir.path().join("page.toml");
    std::fs::write(&path, cfg).unwrap();
    let exe = std::env::var_os("BENCH_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/edge-agent"));
    let mut child = Command::new(&exe)
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", exe.display()));
    let pid = child.id();
    // Every camera serves a frame, then the pipelines settle.
    let deadline = Instant::now() + Duration::from_secs(90);
    while (0..CAMERAS).any(|i| get(&addr, &format!("/page/frame/cam{i}")).0 != 200) {
        assert!(Instant::now() < deadline, "the cameras did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));

    let modes = [Mode::Closed, Mode::Open, Mode::Hammered];
    let mut totals: Vec<Totals> = modes.iter().map(|_| Totals::default()).collect();
    for _ in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let stop = Arc::new(AtomicBool::new(false));
            let (frames, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let poller = mode.every().map(|every| {
                let (stop, frames, bytes, addr) =
                    (stop.clone(), frames.clone(), bytes.clone(), addr.clone());
                let state = *mode == Mode::Open;
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if state {
                            get(&addr, "/page/cameras.json");
                        }
                        for i in 0..CAMERAS {
                            let (status, len) = get(&addr, &format!("/page/frame/cam{i}"));
                            if status == 200 {
                                frames.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(len as u64, Ordering::Relaxed);
                            }
                        }
                        next += every;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                })
            });
            let (t0, c0) = (Instant::now(), cpu_of(pid));
            std::thread::sleep(window);
            let (t1, c1) = (Instant::now(), cpu_of(pid));
            stop.store(true, Ordering::Relaxed);
            if let Some(p) = poller {
                p.join().unwrap();
            }
            let t = &mut totals[m];
            t.secs += (t1 - t0).as_secs_f64();
            t.cpu += c1 - c0;
            t.frames += frames.load(Ordering::Relaxed);
            t.bytes += bytes.load(Ordering::Relaxed);
        }
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();

    let (load, cores) = (
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{CAMERAS} cameras of 1280x720 {FPS} fps H.264 over RTSP (in-process server), one agent \
         ({}); {rounds} rounds of {}-s windows per mode, alternating; {cores} cores, load average \
         at the end: {}\n",
        exe.display(),
        window.as_secs(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "| mode | window s | agent CPU % of a core | vs closed | frames served | KB per frame |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let closed = 100.0 * totals[0].cpu / totals[0].secs.max(1e-9);
    for (mode, t) in modes.iter().zip(&totals) {
        let pct = 100.0 * t.cpu / t.secs.max(1e-9);
        println!(
            "| {} | {:.0} | {pct:.1} | {:+.1} | {} | {} |",
            mode.name(),
            t.secs,
            pct - closed,
            t.frames,
            if t.frames > 0 {
                format!("{:.0}", t.bytes as f64 / t.frames as f64 / 1024.0)
            } else {
                "–".into()
            }
        );
    }
}
