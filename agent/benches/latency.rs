//! Benchmark (not a test): escalation latency of the whole agent, and its idle memory.
//!
//! The real release `edge-agent run` binary watches one 640x360 H.264 camera served by an
//! in-process gst-rtsp-server. The scene is still except for a red square that moves for
//! 2 s at the start of every period, so motion starts at a known rhythm. The transport is
//! the embedded MQTT broker; this bench subscribes to the agent's `motion` and
//! `detections` topics like any consumer would.
//!
//! **Latency measured**: from the motion event's `start` (the wall-clock capture time of
//! the first frame the detector flagged, carried in the `motion` message) to the moment
//! this bench's MQTT client receives the first `detections` message of a frame of that
//! event (`captured_ms >= start`). The detections message is published for every frame,
//! even when it holds no box, and random-weight models rarely find anything, so this is
//! "first detector answer published", not "first box". The table says how many answers
//! held boxes.
//!
//! - cold: `min_workers = 0`; a sample counts only if no worker process existed in the
//!   500 ms before motion start (checked in /proc), so the worker is started and loads the
//!   model inside the measured time.
//! - warm: `min_workers = 1`; a sample counts only if the worker was ready before motion
//!   start.
//!
//! Models: YOLOv4 and YOLOv4-tiny at 416, random weights from models/darknet2onnx.py
//! (cached in models/generated/), CPU.
//!
//! **Memory**: PSS and RSS from /proc/PID/smaps_rollup of the agent and its worker
//! children, in the same run: idle (camera streaming, no motion, zero workers) against
//! always-on (`min_workers = 1`, YOLOv4 loaded), then a time series through one burst of
//! motion (worker from zero, back to zero after the cooldown), written as CSV and SVG.
//!
//! `cargo bench -p edge-agent --bench latency`. Environment: BENCH_EVENTS (samples per
//! model and mode, default 10), BENCH_MODELS (`tiny,full`), BENCH_PARTS
//! (`latency,memory`), BENCH_FIGURES_DIR (default agent/benches/figures), BENCH_TRACE
//! (set: print every answered frame of each event, its capture and answer time from the
//! event start and its worker timings, to see where a sample went), BENCH_BASELINE_BIN
//! (an `edge-agent` binary of another build, for instance main's, copied to
//! `target/release/edge-agent-base` so that it finds the checkout's ONNX Runtime: its
//! cold and warm rows are run beside this build's, in BENCH_ROUNDS (default 2) passes
//! that take turns, and a table compares them; on a shared machine, compare builds only
//! within one run), BENCH_BASELINE_ENV (`K=V,...`: the baseline agent's environment;
//! alone, the baseline is this build with that environment).

// The scene takes a list of frame windows; one window is what we want here.
#![allow(clippy::single_range_in_vec_init)]

#[path = "common/procfs.rs"]
mod procfs;
use procfs::{mem_kib, rss_by_mapping, workers_of};
#[path = "common/svg.rs"]
mod svg;
use svg::{axes, nice, svg_open, xml, MB, ML, MR, MT, SVG_H, SVG_W};
#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;
// The tests' process harness (`Agent`) and what it stands on; they name each other as
// `super::`, so they sit at the crate root here as in tests/common.
#[path = "../../tests/common/agent.rs"]
#[allow(dead_code, unused_imports)]
mod harness;
#[path = "../../tests/common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "../../tests/common/wait.rs"]
#[allow(dead_code)]
mod wait;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_agent::ingest::synthetic::Scene;
use rtsp_server::{Codec, Media, RtspTestServer};

const FPS: u32 = 15;
/// The local consumer the agent's embedded broker admits (`transport.mqtt_url`).
const BENCH_USER: &str = "bench";
const BENCH_PASSWORD: &str = "bench";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_AGENT_PYTHON") {
        return p.into();
    }
    root().join(".venv/bin/python")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The same cached files as the infer bench.
fn model(cfg: &str, name: &str) -> PathBuf {
    let path = root().join("models/generated").join(name);
    if !path.is_file() {
        eprintln!("building {name} (random weights)...");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let out = Command::new(python())
            .args([
                "models/darknet2onnx.py",
                cfg,
                "--random-weights",
                "--size",
                "416",
                "-o",
                path.to_str().unwrap(),
            ])
            .current_dir(root())
            .output()
            .expect("python runs");
        if !out.status.success() {
            panic!(
                "darknet2onnx {cfg}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    path
}

struct ModelCase {
    name: &'static str,
    path: PathBuf,
    /// Seconds between motion starts when cold: room for the worker start, the drain,
    /// the redelivery of a frame the cold worker missed (`redeliver_after`, 10 s) and
    /// the cooldown, so the worker is gone before the next start.
    cold_period_s: u64,
    /// Seconds between motion starts when warm: the event ends (2 s motion, 3 s quiet).
    warm_period_s: u64,
}

/// A figure's path as the report links it: relative to the repository root.
fn link(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- processes and /proc

#[derive(Clone, Copy, Debug, Default)]
struct MemSample {
    /// Seconds since the series started.
    t: f64,
    workers: usize,
    agent_rss: u64,
    agent_pss: u64,
    workers_rss: u64,
    workers_pss: u64,
}

fn sample_mem(pid: u32, t: f64) -> MemSample {
    let (agent_rss, agent_pss) = mem_kib(pid);
    let ws = workers_of(pid);
    let (mut workers_rss, mut workers_pss) = (0, 0);
    for w in &ws {
        let (r, p) = mem_kib(*w);
        workers_rss += r;
        workers_pss += p;
    }
    MemSample {
        t,
        workers: ws.len(),
        agent_rss,
        agent_pss,
        workers_rss,
        workers_pss,
    }
}

// ---------------------------------------------------------------- the agent under test

/// The agent under test: the tests' one process harness, the config it runs on, and a
/// cursor into its log so each wait sees only lines after the previous one.
struct Agent {
    proc: harness::Agent,
    pid: u32,
    seen: usize,
    broker_port: u16,
    _dir: tempfile::TempDir,
}

struct AgentSpec<'a> {
    /// The `edge-agent` build under test (its workers are the same binary).
    program: &'a Path,
    /// Environment the agent (and so its workers) starts with.
    env: &'a [(String, String)],
    camera_url: &'a str,
    model: &'a Path,
    min_workers: u32,
    cooldown: &'a str,
}

impl Agent {
    fn start(spec: &AgentSpec) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"[device]
id = "bench"

[[cameras]]
id = "cam"
url = "{url}"
[cameras.escalation]
budget = 3

[transport]
kind = "embedded"
# The embedded broker admits no anonymous client: this bench logs in as a local
# consumer would.
mqtt_url = "mqtt://{BENCH_USER}:{BENCH_PASSWORD}@127.0.0.1"

[inference]
model = "{model}"
labels = "{labels}"

[scaling]
min_workers = {min}
max_workers = 1
polling_interval = "100ms"
cooldown_period = "{cooldown}"
grace_period = "5s"

[telemetry]
metrics_listen = ""
"#,
            url = spec.camera_url,
            model = spec.model.display(),
            labels = root().join("models/coco.names").display(),
            min = spec.min_workers,
            cooldown = spec.cooldown,
        );
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, config).unwrap();
        let proc = harness::Agent::start_program(
            spec.program,
            &["--config".as_ref(), file.as_os_str()],
            &spec
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        let mut agent = Agent {
            pid: proc.pid,
            proc,
            seen: 0,
            broker_port: 0,
            _dir: dir,
        };
        let v = agent
            .wait_state("broker_listening", Duration::from_secs(30))
            .expect("the agent starts its embedded broker");
        agent.broker_port = v["addr"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("broker address in the log");
        agent
    }

    /// The agent's own lines (not its workers') after the cursor, up to and including
    /// the first that `stop_at` picks (or all of them); the cursor moves past them.
    /// Errors are printed.
    fn advance(
        &mut self,
        mut stop_at: impl FnMut(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for l in self.proc.lines().into_iter().skip(self.seen) {
            self.seen += 1;
            if l.worker.is_some() {
                continue;
            }
            if l.v["level"] == "ERROR" && l.v["target"] != "rumqttd::server::broker" {
                eprintln!("agent: {}", l.v);
            }
            let done = stop_at(&l.v);
            out.push(l.v);
            if done {
                break;
            }
        }
        out
    }

    /// Waits for a lifecycle line in `state` (README, "Lifecycle lines") after the last
    /// one waited for; lines before it are passed over.
    fn wait_state(&mut self, state: &str, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let new = self.advance(|v| v["lifecycle"] == state);
            if let Some(v) = new.last().filter(|v| v["lifecycle"] == state) {
                return Some(v.clone());
            }
            if let Some(st) = self.proc.try_exit() {
                panic!("edge-agent exited early: {st}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The pool's `worker_ready` line (it has the pid and the startup time).
    fn wait_worker_ready(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let v = self.wait_state("worker_ready", deadline - Instant::now())?;
            if v["pid"].is_number() {
                return Some(v["startup"].as_str().unwrap_or("?").to_string());
            }
        }
        None
    }

    /// Passes over the lines not seen yet and returns the pool's worker startup times
    /// among them.
    fn startups(&mut self) -> Vec<String> {
        self.advance(|_| false)
            .into_iter()
            .filter(|v| v["lifecycle"] == "worker_ready" && v["pid"].is_number())
            .map(|v| v["startup"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// The workers' own timing lines (lifecycle `runtime_loaded`, `ready`), which the
    /// pool relays on its stderr as `[worker PID] {json}`.
    fn worker_logs(&self) -> Vec<serde_json::Value> {
        self.proc
            .lines()
            .into_iter()
            .filter(|l| {
                l.worker.is_some()
                    && (l.lifecycle() == "runtime_loaded"
                        || l.lifecycle() == "ready"
                        || l.message() == "Detector ready.")
            })
            .map(|l| l.v)
            .collect()
    }

    fn stop(self) {
        self.proc.stop();
    }
}

/// Messages from the agent's broker: (receive time, topic, payload).
fn subscribe(port: u16, topics: &[String]) -> (rumqttc::Client, mpsc::Receiver<Received>) {
    let mut opts = rumqttc::MqttOptions::new(
        format!("latency-bench-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_max_packet_size(16 << 20, 1 << 16);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(BENCH_USER, BENCH_PASSWORD);
    let (client, mut conn) = rumqttc::Client::new(opts, 64);
    for t in topics {
        client
            .subscribe(t, rumqttc::QoS::AtLeastOnce)
            .expect("subscribe");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let r = Received {
                        at: SystemTime::now(),
                        topic: p.topic.clone(),
                        payload: serde_json::from_slice(&p.payload).unwrap_or_default(),
                    };
                    if tx.send(r).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    (client, rx)
}

struct Received {
    at: SystemTime,
    topic: String,
    payload: serde_json::Value,
}

/// Records the number of worker processes every 50 ms, with wall-clock times.
struct WorkerWatch {
    log: Arc<Mutex<VecDeque<(SystemTime, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl WorkerWatch {
    fn start(pid: u32) -> Self {
        let log: Arc<Mutex<VecDeque<(SystemTime, usize)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n = workers_of(pid).len();
                let mut l = l.lock().unwrap();
                l.push_back((SystemTime::now(), n));
                while l.len() > 2000 {
                    l.pop_front();
                }
                drop(l);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { log, stop }
    }

    /// Worker counts seen in the window before `t`; None when there is no sample there.
    fn counts_before(&self, t: SystemTime, window: Duration) -> Option<(usize, usize)> {
        let from = t - window;
        let l = self.log.lock().unwrap();
        let seen: Vec<usize> = l
            .iter()
            .filter(|(at, _)| *at >= from && *at <= t)
            .map(|(_, n)| *n)
            .collect();
        Some((*seen.iter().min()?, *seen.iter().max()?))
    }
}

impl Drop for WorkerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- latency

fn moving_scene(period_s: u64) -> Scene {
    let fps = FPS as u64;
    Scene {
        period: period_s * fps,
        moves: vec![fps..3 * fps],
        ..Scene::sized(640, 360, FPS)
    }
}

struct Sample {
    latency_ms: f64,
    boxes: usize,
    /// A frame of the event captured earlier than the one first answered was answered
    /// later (it was lost and redelivered, or overtaken).
    overtaken: bool,
    /// The worker's own model run for the answered frame (`timings.inference_ms` of the
    /// detections message), ms.
    inference_ms: f64,
}

struct LatencyRow {
    /// The model's name, with the build's when comparing builds (`BENCH_BASELINE_BIN`).
    model: &'static str,
    mode: &'static str,
    /// The 1-minute load average at the start and end of each pass of this row.
    loads: Vec<f64>,
    samples: Vec<Sample>,
    rejected: usize,
    startups: Vec<String>,
    /// Per worker start, as the worker logs them.
    phases: Vec<Phases>,
}

/// The 1-minute load average (the machine may be shared: each row says what it ran at).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The build under test: `edge-agent` of this bench's own build, or another one.
struct Build<'a> {
    program: &'a Path,
    /// Environment of the agent under test (`BENCH_BASELINE_ENV` for the baseline).
    env: Vec<(String, String)>,
    /// The row's name: the model's, with the build's when comparing.
    label: &'static str,
}

fn latency_phase(case: &ModelCase, warm: bool, n: usize, build: &Build) -> LatencyRow {
    let mode = if warm { "warm" } else { "cold" };
    let load_before = load_average();
    eprintln!(
        "latency: {} {mode}, {n} events (load {load_before:.2})...",
        build.label
    );
    let period_s = if warm {
        case.warm_period_s
    } else {
        case.cold_period_s
    };
    let server = RtspTestServer::start(Media::Scene(moving_scene(period_s), Codec::H264));
    let url = server.url("/latency");
    let mut agent = Agent::start(&AgentSpec {
        program: build.program,
        env: &build.env,
        camera_url: &url,
        model: &case.path,
        min_workers: warm as u32,
        cooldown: "1s",
    });
    let mut startups = Vec::new();
    if warm {
        let s = agent
            .wait_worker_ready(Duration::from_secs(180))
            .expect("the always-on worker becomes ready");
        startups.push(s);
    }
    let watch = WorkerWatch::start(agent.pid);
    let (_client, rx) = subscribe(
        agent.broker_port,
        &[
            "edge/bench/+/motion".to_string(),
            "edge/bench/+/detections".to_string(),
        ],
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut rejected = 0;
    // (start time, wanted mode at start)
    let mut pending: Option<(SystemTime, bool)> = None;
    // The last sample's event: (start ms, captured ms of its first answer, sample index).
    let mut answered: Option<(u64, u64, usize)> = None;
    let trace = std::env::var_os("BENCH_TRACE").is_some();
    let mut last_start: Option<SystemTime> = None;
    let deadline = Instant::now() + Duration::from_secs(period_s * (n as u64 * 2 + 4) + 60);
    while samples.len() < n && Instant::now() < deadline {
        let Ok(r) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        if r.topic.ends_with("/motion") {
            if r.payload["state"] != "start" {
                continue;
            }
            let Some(start) = r.payload["start"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
            else {
                continue;
            };
            // Give the watcher a moment to have sampled up to the start.
            std::thread::sleep(Duration::from_millis(60));
            let ok = match watch.counts_before(start, Duration::from_millis(500)) {
                Some((lo, hi)) if warm => lo >= 1 && hi >= 1,
                Some((_, hi)) => hi == 0,
                None => false,
            };
            if pending.is_some() {
                rejected += 1; // the previous event never got an answer
            }
            pending = Some((start, ok));
            last_start = Some(start);
            if trace {
                eprintln!("  trace: motion start; worker seen in the 500 ms before: {ok}");
            }
        } else if r.topic.ends_with("/detections") {
            let captured = r.payload["captured_ms"].as_u64().unwrap_or(0);
            if trace {
                if let Some((start, _)) = pending.or(last_start.map(|s| (s, true))) {
                    let s_ms = unix_ms(start) as i64;
                    let at =
                        r.at.duration_since(start)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(-1);
                    eprintln!(
                        "  trace: frame captured {:+} ms, answered {at} ms after start; timings {}",
                        captured as i64 - s_ms,
                        r.payload["detections"]["timings"]
                    );
                }
            }
            if let Some((start_ms, first, i)) = answered {
                if captured >= start_ms && captured < first {
                    samples[i].overtaken = true;
                }
            }
            let Some((start, ok)) = pending else { continue };
            if captured < unix_ms(start) {
                continue;
            }
            pending = None;
            if !ok {
                rejected += 1;
                continue;
            }
            let latency_ms =
                r.at.duration_since(start)
                    .map(|d| d.as_secs_f64() * 1e3)
                    .unwrap_or(0.0);
            let boxes = r.payload["detections"]["items"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0);
            eprintln!("  {mode} sample {}: {latency_ms:.0} ms", samples.len() + 1);
            let inference_ms = r.payload["detections"]["timings"]["inference_ms"]
                .as_f64()
                .unwrap_or(f64::NAN);
            answered = Some((unix_ms(start), captured, samples.len()));
            samples.push(Sample {
                latency_ms,
                boxes,
                overtaken: false,
                inference_ms,
            });
        }
    }
    drop(watch);
    startups.extend(agent.startups());
    let phases = worker_phases(&agent.worker_logs());
    agent.stop();
    drop(server);
    LatencyRow {
        model: build.label,
        mode,
        loads: vec![load_before, load_average()],
        samples,
        rejected,
        startups,
        phases,
    }
}

/// A `Debug`-formatted duration ("232.00012ms", "1.4772s", "950µs") in ms.
fn debug_ms(v: &serde_json::Value) -> Option<f64> {
    let s = v.as_str()?;
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "s" => n * 1e3,
        "ms" => n,
        "µs" => n / 1e3,
        "ns" => n / 1e6,
        _ => return None,
    })
}

/// One worker start, ms. `ort`, `model` and `subscribed` from the start of the
/// worker's main task; `cache_key` and `session` are spans inside `model`.
#[derive(Clone, Copy, Debug)]
struct Phases {
    /// ONNX Runtime loaded (library and environment).
    ort: f64,
    /// Finding the optimised-model cache (hashing the model unless its hash is known).
    cache_key: f64,
    /// Creating the session.
    session: f64,
    /// Model loaded: all of the above, the layout and the labels.
    model: f64,
    /// Broker link and subscription.
    subscribed: f64,
}

/// Phases per worker, from its own log lines: each `runtime_loaded` and `Detector
/// ready.` pair with the next `ready`.
fn worker_phases(lines: &[serde_json::Value]) -> Vec<Phases> {
    let mut out = Vec::new();
    let (mut ort, mut cache_key, mut session) = (None, None, None);
    for v in lines {
        if v["lifecycle"] == "runtime_loaded" {
            ort = debug_ms(&v["took"]);
        } else if v["message"] == "Detector ready." {
            cache_key = debug_ms(&v["cache_key"]);
            session = debug_ms(&v["session"]);
        } else if let (Some(model), Some(subscribed)) =
            (debug_ms(&v["model"]), debug_ms(&v["subscribed"]))
        {
            out.push(Phases {
                ort: ort.take().unwrap_or(f64::NAN),
                cache_key: cache_key.take().unwrap_or(f64::NAN),
                session: session.take().unwrap_or(f64::NAN),
                model,
                subscribed,
            });
        }
    }
    out
}

/// Where a cold start's time goes, medians over the worker starts of the cold rows.
fn print_cold_breakdown(rows: &[LatencyRow]) {
    println!("### Where a cold start goes");
    println!();
    println!(
        "Medians over the worker starts of each cold row. Spawn to ready: the pool's own \
         measure, from starting the process to reading its ready line. Inside the worker, \
         from the start of its main task: ONNX Runtime load (the shared library and its \
         environment), model loaded (that, the cache lookup, session creation and the \
         model's layout), broker link and subscription (run at the same time as the model \
         load); the rest is process start, runtime and configuration. Inside the model \
         load: the optimised-model cache lookup (hashing the model file unless its hash \
         is known) and the session creation."
    );
    println!();
    println!("| model | worker starts | spawn to ready ms | ONNX Runtime load ms | cache lookup ms | session creation ms | model loaded ms | broker link + subscription ms | process start and config ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let med = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    };
    for r in rows.iter().filter(|r| r.mode == "cold") {
        let spawn = med(r
            .startups
            .iter()
            .filter_map(|s| debug_ms(&serde_json::Value::from(s.as_str())))
            .collect());
        let ort = med(r.phases.iter().map(|p| p.ort).collect());
        let key = med(r.phases.iter().map(|p| p.cache_key).collect());
        let session = med(r.phases.iter().map(|p| p.session).collect());
        let model = med(r.phases.iter().map(|p| p.model).collect());
        let sub = med(r.phases.iter().map(|p| p.subscribed).collect());
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.model,
            r.phases.len(),
            spawn,
            ort,
            key,
            session,
            model,
            sub,
            spawn - model.max(sub)
        );
    }
    println!();
}

/// Nearest-rank percentile.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted_ms(r: &LatencyRow) -> Vec<f64> {
    let mut v: Vec<f64> = r.samples.iter().map(|s| s.latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn print_latency(rows: &[LatencyRow]) {
    println!("### Motion start to first detections message (CPU, embedded MQTT)");
    println!();
    println!(
        "From the motion event's `start` (capture time of the first frame flagged as motion) \
         to the receipt, by an MQTT subscriber, of the first `detections` message for a frame \
         of that event. That message is published for every answered frame, boxes or not \
         (random-weight models; see \"with boxes\"). Cold: no worker process in the 500 ms \
         before motion start, so the time includes starting `edge-agent worker` and loading \
         the model (with `scaling.prewarm_on_motion` at its default, on: the worker starts \
         at the first motion candidate, the frame that becomes the event's `start`); warm: `min_workers = 1`, worker ready. p95 is nearest-rank: with fewer \
         than 20 samples it is the maximum. \"first frame late\": samples whose event had \
         an earlier frame answered after the first answer (seen only until the next \
         motion start; typically the cold worker missed the first frame and it came back \
         by redelivery)."
    );
    println!();
    println!("| model | workers at motion start | samples | p50 ms | p95 ms | min ms | max ms | with boxes | first frame late | discarded | worker startup (pool log) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let v = sorted_ms(r);
        let boxes = r.samples.iter().filter(|s| s.boxes > 0).count();
        let late = r.samples.iter().filter(|s| s.overtaken).count();
        let startup = if r.startups.is_empty() {
            "-".to_string()
        } else {
            let mut s: Vec<String> = r.startups.iter().take(3).cloned().collect();
            if r.startups.len() > 3 {
                s.push("...".into());
            }
            s.join(", ")
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
            r.model,
            if r.mode == "cold" {
                "0 (cold)"
            } else {
                "1 (warm)"
            },
            v.len(),
            percentile(&v, 50.0),
            percentile(&v, 95.0),
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
            boxes,
            late,
            r.rejected,
            startup
        );
    }
    println!();
    let loads: Vec<String> = rows
        .iter()
        .map(|r| {
            let l: Vec<String> = r.loads.iter().map(|l| format!("{l:.1}")).collect();
            format!("{} {} {}", r.model, r.mode, l.join("/"))
        })
        .collect();
    println!(
        "Load average (1 min) at the start and end of each row (2 cores: above 2 the machine \
         was busy with more than this bench): {}.",
        loads.join("; ")
    );
    for m in ["YOLOv4 416", "YOLOv4-tiny 416"] {
        let get = |mode: &str| {
            rows.iter()
                .find(|r| r.model == m && r.mode == mode)
                .map(|r| percentile(&sorted_ms(r), 50.0))
        };
        if let (Some(c), Some(w)) = (get("cold"), get("warm")) {
            println!();
            println!(
                "{m}: cold p50 / warm p50 = {:.1}x (cold-start share of the cold p50: {:.0} ms)",
                c / w,
                c - w
            );
        }
    }
    println!();
    print_goals(rows);
}

/// Median of the worker's own model run over a row's samples, ms.
fn inference_p50(r: &LatencyRow) -> f64 {
    let mut v: Vec<f64> = r
        .samples
        .iter()
        .map(|s| s.inference_ms)
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// The goals of issue 18, judged on this run's figures only.
fn print_goals(rows: &[LatencyRow]) {
    let find = |m: &str, mode: &str| rows.iter().find(|r| r.model == m && r.mode == mode);
    let p50 = |r: &LatencyRow| percentile(&sorted_ms(r), 50.0);
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    println!("Goals (issue 18), this run:");
    println!();
    if let (Some(c), Some(w)) = (
        find("YOLOv4-tiny 416", "cold"),
        find("YOLOv4-tiny 416", "warm"),
    ) {
        let (c, w) = (p50(c), p50(w));
        println!(
            "- YOLOv4-tiny cold p50 <= warm p50 + 50 ms: {c:.0} <= {:.0}: {}",
            w + 50.0,
            verdict(c <= w + 50.0)
        );
    }
    if let Some(c) = find("YOLOv4 416", "cold") {
        let c = p50(c);
        println!(
            "- YOLOv4-416 cold p50 <= 2000 ms: {c:.0}: {}",
            verdict(c <= 2000.0)
        );
    }
    for r in rows.iter().filter(|r| r.mode == "warm") {
        let (w, inf) = (p50(r), inference_p50(r));
        println!(
            "- {} warm p50 <= one inference (median model run of the answered frames, {inf:.0} ms) + 120 ms: {w:.0} <= {:.0}: {}",
            r.model,
            inf + 120.0,
            verdict(w <= inf + 120.0)
        );
    }
    println!();
}

// ---------------------------------------------------------------- memory

fn median_mem(v: &[MemSample]) -> MemSample {
    let med = |f: &dyn Fn(&MemSample) -> u64| {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    MemSample {
        t: 0.0,
        workers: v.iter().map(|s| s.workers).max().unwrap_or(0),
        agent_rss: med(&|s| s.agent_rss),
        agent_pss: med(&|s| s.agent_pss),
        workers_rss: med(&|s| s.workers_rss),
        workers_pss: med(&|s| s.workers_pss),
    }
}

/// The agent's memory over 10 s after settling (medians), and where its RSS went at the
/// end (per mapped file, [`rss_by_mapping`]).
fn steady_memory(
    url: &str,
    model: &Path,
    min_workers: u32,
) -> (MemSample, Vec<(String, u64, u64)>) {
    let mut agent = Agent::start(&AgentSpec {
        program: this_build(),
        env: &[],
        camera_url: url,
        model,
        min_workers,
        cooldown: "30s",
    });
    if min_workers > 0 {
        agent
            .wait_worker_ready(Duration::from_secs(180))
            .expect("the always-on worker becomes ready");
    } else {
        agent.wait_state("running", Duration::from_secs(30));
    }
    // Settle: the camera connects and streams; allocators reach their working size.
    std::thread::sleep(Duration::from_secs(10));
    let t0 = Instant::now();
    let mut v = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        v.push(sample_mem(agent.pid, t0.elapsed().as_secs_f64()));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mappings = rss_by_mapping(agent.pid);
    agent.stop();
    (median_mem(&v), mappings)
}

/// Where the idle agent's RSS went: the largest mapped files, the rest summed.
fn print_mappings(mappings: &[(String, u64, u64)]) {
    const SHOWN: usize = 12;
    println!("### Where the idle agent's memory is");
    println!();
    println!(
        "The idle agent (scale to zero) at the end of its window, per mapped file from \
         /proc/PID/smaps: `anonymous` is the heap, thread stacks and allocator arenas; \
         the rest are the executable and shared libraries (their pages are shared with any \
         other process that maps them, hence PSS below RSS). MiB."
    );
    println!();
    println!("| mapping | RSS | PSS |");
    println!("|---|---:|---:|");
    for (name, rss, pss) in mappings.iter().take(SHOWN) {
        println!("| {name} | {:.1} | {:.1} |", mib(*rss), mib(*pss));
    }
    let rest = &mappings[SHOWN.min(mappings.len())..];
    let (rss, pss) = rest
        .iter()
        .fold((0, 0), |(r, p), (_, rss, pss)| (r + rss, p + pss));
    println!(
        "| {} others | {:.1} | {:.1} |",
        rest.len(),
        mib(rss),
        mib(pss)
    );
    println!();
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory_part(full: &ModelCase, figures: &Path) {
    eprintln!("memory: idle vs always-on...");
    let still = Scene {
        moves: vec![],
        ..Scene::sized(640, 360, FPS)
    };
    let server = RtspTestServer::start(Media::Scene(still, Codec::H264));
    let (idle, idle_mappings) = steady_memory(&server.url("/idle"), &full.path, 0);
    let (on, _) = steady_memory(&server.url("/always-on"), &full.path, 1);
    drop(server);
    println!("### Idle memory: scale-to-zero against an always-on worker");
    println!();
    println!(
        "One 640x360 {FPS} fps RTSP camera streaming a still scene (no motion), embedded \
         broker; medians of 20 samples over 10 s after 10 s of settling. PSS counts shared \
         pages once across the agent and its worker; RSS counts them in each. MiB."
    );
    println!();
    println!("| configuration | workers | agent RSS | agent PSS | worker RSS | worker PSS | total RSS | total PSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, m) in [
        ("scale to zero (min_workers = 0), idle", &idle),
        (
            &*format!("always-on worker (min_workers = 1), {}", full.name),
            &on,
        ),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m.workers,
            mib(m.agent_rss),
            mib(m.agent_pss),
            mib(m.workers_rss),
            mib(m.workers_pss),
            mib(m.agent_rss + m.workers_rss),
            mib(m.agent_pss + m.workers_pss)
        );
    }
    let (a, b) = (
        idle.agent_pss + idle.workers_pss,
        on.agent_pss + on.workers_pss,
    );
    println!();
    println!(
        "always-on / idle (total PSS) = {:.1}x; scale to zero saves {:.0} MiB while nothing moves.",
        b as f64 / a.max(1) as f64,
        mib(b.saturating_sub(a))
    );
    println!();
    print_mappings(&idle_mappings);

    // Memory through one burst of motion and back to zero.
    eprintln!("memory: series through a burst...");
    let period = 60;
    let server = RtspTestServer::start(Media::Scene(
        Scene {
            period: period * FPS as u64,
            moves: vec![10 * FPS as u64..13 * FPS as u64],
            ..Scene::sized(640, 360, FPS)
        },
        Codec::H264,
    ));
    let url = server.url("/burst");
    let agent = Agent::start(&AgentSpec {
        program: this_build(),
        env: &[],
        camera_url: &url,
        model: &full.path,
        min_workers: 0,
        cooldown: "5s",
    });
    let (_client, rx) = subscribe(agent.broker_port, &["edge/bench/+/motion".to_string()]);
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let mut series = Vec::new();
    let mut marks: Vec<(f64, String)> = Vec::new();
    let mut had_worker = false;
    let mut back_to_zero_at = None;
    while t0.elapsed() < Duration::from_secs(period) {
        let s = sample_mem(agent.pid, t0.elapsed().as_secs_f64());
        had_worker |= s.workers > 0;
        if had_worker && s.workers == 0 && back_to_zero_at.is_none() {
            back_to_zero_at = Some(s.t);
        }
        series.push(s);
        for r in rx.try_iter() {
            if let (Some(state), Some(start)) = (
                r.payload["state"].as_str(),
                r.payload["start"]
                    .as_str()
                    .and_then(|s| humantime::parse_rfc3339_weak(s).ok()),
            ) {
                if state == "start" {
                    let t = start
                        .duration_since(t0_wall)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    marks.push((t, "motion start".into()));
                }
            }
        }
        // Stop once the worker has gone and idle has been recorded for a while.
        if back_to_zero_at.is_some_and(|z| s.t > z + 8.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    agent.stop();
    drop(server);
    let csv = figures.join("memory-burst.csv");
    let mut text =
        String::from("t_s,workers,agent_rss_kib,agent_pss_kib,workers_rss_kib,workers_pss_kib\n");
    for s in &series {
        let _ = writeln!(
            text,
            "{:.2},{},{},{},{},{}",
            s.t, s.workers, s.agent_rss, s.agent_pss, s.workers_rss, s.workers_pss
        );
    }
    std::fs::write(&csv, text).unwrap();
    let svg = figures.join("memory-burst.svg");
    std::fs::write(&svg, memory_svg(&series, &marks, full.name)).unwrap();
    let peak = series
        .iter()
        .map(|s| s.agent_pss + s.workers_pss)
        .max()
        .unwrap_or(0);
    // Idle before the burst: the last sample before a worker appeared.
    let first = series
        .iter()
        .take_while(|s| s.workers == 0)
        .last()
        .map(|s| s.agent_pss + s.workers_pss)
        .unwrap_or(0);
    let last = series
        .last()
        .map(|s| s.agent_pss + s.workers_pss)
        .unwrap_or(0);
    println!("### Memory through a burst and back to zero");
    println!();
    println!(
        "{} samples every 250 ms: total PSS {:.0} MiB just before the worker started, peak {:.0} MiB with the \
         {} worker, {:.0} MiB at the end; worker gone {} (cooldown 5 s).",
        series.len(),
        mib(first),
        mib(peak),
        full.name,
        mib(last),
        match back_to_zero_at {
            Some(t) => format!("at t = {t:.1} s"),
            None => "never within the window".into(),
        }
    );
    println!();
    println!("![memory through a burst]({})", link(&svg));
    println!();
}

// ---------------------------------------------------------------- figures (hand-written SVG)

fn memory_svg(series: &[MemSample], marks: &[(f64, String)], model: &str) -> String {
    let mut svg = svg_open(&format!(
        "Agent + worker memory (PSS) through a burst of motion, {model}, CPU"
    ));
    let tmax = series.last().map(|s| s.t).unwrap_or(1.0);
    let peak = series
        .iter()
        .map(|s| mib(s.agent_pss + s.workers_pss))
        .fold(0.0, f64::max);
    let (xmax, xstep) = nice(tmax);
    let (ymax, ystep) = nice(peak * 1.1);
    axes(&mut svg, xmax, xstep, ymax, ystep, "time (s)", "PSS (MiB)");
    let (pw, ph) = (SVG_W - ML - MR, SVG_H - MT - MB);
    let px = |t: f64| ML + t / xmax * pw;
    let py = |m: f64| MT + ph - m / ymax * ph;
    // Shade where a worker process existed.
    let mut start: Option<f64> = None;
    for s in series.iter().chain(std::iter::once(&MemSample {
        t: tmax,
        ..Default::default()
    })) {
        match (start, s.workers > 0) {
            (None, true) => start = Some(s.t),
            (Some(a), false) => {
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{MT}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#fde7c8\"/>",
                    px(a),
                    px(s.t) - px(a)
                );
                start = None;
            }
            _ => {}
        }
    }
    for (name, colour, f) in [
        (
            "total (agent + worker)",
            "#d62728",
            &(|s: &MemSample| mib(s.agent_pss + s.workers_pss)) as &dyn Fn(&MemSample) -> f64,
        ),
        ("agent", "#1f77b4", &|s: &MemSample| mib(s.agent_pss)),
    ] {
        let pts: Vec<String> = series
            .iter()
            .map(|s| format!("{:.1},{:.1}", px(s.t), py(f(s))))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = name;
    }
    for (t, label) in marks {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{MT}\" y2=\"{1}\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{2:.1}\" y=\"{3}\" fill=\"#2ca02c\">{4}</text>",
            px(*t),
            MT + ph,
            px(*t) + 4.0,
            MT + 14.0,
            xml(label)
        );
    }
    let lx = ML + 10.0;
    let _ = writeln!(
        svg,
        "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"#d62728\"/><text x=\"{}\" y=\"{}\">total PSS (agent + worker)</text>\
         <rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/><text x=\"{}\" y=\"{}\">agent PSS</text>\
         <rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"8\" fill=\"#fde7c8\"/><text x=\"{}\" y=\"{}\">worker process alive</text>",
        MT + 30.0, lx + 16.0, MT + 35.0,
        MT + 48.0, lx + 16.0, MT + 53.0,
        MT + 63.0, lx + 16.0, MT + 71.0,
    );
    svg.push_str("</svg>\n");
    svg
}

fn latency_svg(rows: &[LatencyRow]) -> String {
    let mut svg = svg_open("Motion start to first detections message, each sample (CPU)");
    let max = rows
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.latency_ms))
        .fold(0.0, f64::max);
    let (xmax, xstep) = nice(max * 1.05);
    let n = rows.len().max(1) as f64;
    // Rows as categories on the y axis: draw axes with a y range of 0..n, no numbers.
    let (pw, ph) = (SVG_W - ML - MR, SVG_H - MT - MB);
    let left = 150.0;
    let pw2 = pw - (left - ML);
    let px = |ms: f64| left + ms / xmax * pw2;
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{MT}\" y2=\"{1}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
            px(x),
            MT + ph,
            MT + ph + 18.0,
            x
        );
        x += xstep;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{MT}\" width=\"{pw2}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (ms); | = p50, ! = p95</text>",
        left + pw2 / 2.0,
        SVG_H - 10.0
    );
    for (i, r) in rows.iter().enumerate() {
        let cy = MT + ph * (i as f64 + 0.5) / n;
        let colour = if r.mode == "cold" {
            "#d62728"
        } else {
            "#1f77b4"
        };
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} {}</text>",
            left - 6.0,
            cy + 4.0,
            xml(r.model),
            r.mode
        );
        for (j, s) in r.samples.iter().enumerate() {
            let jitter = ((j * 7919) % 21) as f64 - 10.0;
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\" fill-opacity=\"0.6\"/>",
                px(s.latency_ms),
                cy + jitter
            );
        }
        let v = sorted_ms(r);
        if !v.is_empty() {
            for (p, dash) in [(50.0, ""), (95.0, " stroke-dasharray=\"3 2\"")] {
                let x = px(percentile(&v, p));
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"2\"{dash}/>",
                    cy - 16.0,
                    cy + 16.0
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// This bench's own build of `edge-agent`.
fn this_build() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edge-agent"))
}

/// Cold and warm rows of `case` for the baseline build and this one, run in turns
/// (`BENCH_ROUNDS` passes of `n / rounds` events each, the order swapped every pass) so
/// that both see the same machine: on a shared machine only rows of one run compare.
fn compare_builds(case: &ModelCase, baseline: &Path, n: usize) -> Vec<LatencyRow> {
    let rounds = env_usize("BENCH_ROUNDS", 2).clamp(1, n.max(1));
    let leak =
        |b: &str| -> &'static str { Box::leak(format!("{} {b}", case.name).into_boxed_str()) };
    // `K=V,K=V`: the baseline's environment (for instance a setting of this build
    // turned off).
    let env: Vec<(String, String)> = env_list("BENCH_BASELINE_ENV", "")
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let builds = [
        Build {
            program: baseline,
            env,
            label: leak("(baseline)"),
        },
        Build {
            program: this_build(),
            env: Vec::new(),
            label: leak("(this build)"),
        },
    ];
    let mut rows = Vec::new();
    for warm in [false, true] {
        let mut merged: Vec<Option<LatencyRow>> = vec![None, None];
        for round in 0..rounds {
            let per = n / rounds + usize::from(round < n % rounds);
            for k in 0..2 {
                let i = (k + round) % 2;
                let r = latency_phase(case, warm, per, &builds[i]);
                match &mut merged[i] {
                    None => merged[i] = Some(r),
                    Some(m) => {
                        m.loads.extend(r.loads);
                        m.samples.extend(r.samples);
                        m.rejected += r.rejected;
                        m.startups.extend(r.startups);
                        m.phases.extend(r.phases);
                    }
                }
            }
        }
        rows.extend(merged.into_iter().flatten());
    }
    rows
}

/// Cold against warm per build, when comparing builds.
fn print_comparison(rows: &[LatencyRow]) {
    println!("### This build against the baseline build, same run");
    println!();
    println!(
        "| build | cold p50 ms | warm p50 ms | cold - warm ms | load average during the rows |"
    );
    println!("|---|---:|---:|---:|---|");
    let p50 = |r: &LatencyRow| percentile(&sorted_ms(r), 50.0);
    for cold in rows.iter().filter(|r| r.mode == "cold") {
        let Some(warm) = rows
            .iter()
            .find(|r| r.mode == "warm" && r.model == cold.model)
        else {
            continue;
        };
        let loads: Vec<String> = cold
            .loads
            .iter()
            .chain(&warm.loads)
            .map(|l| format!("{l:.1}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            cold.model,
            p50(cold),
            p50(warm),
            p50(cold) - p50(warm),
            loads.join(", ")
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    gstreamer::init().expect("GStreamer initialises");
    let n = env_usize("BENCH_EVENTS", 10);
    let models = env_list("BENCH_MODELS", "tiny,full");
    let parts = env_list("BENCH_PARTS", "latency,memory");
    // A baseline to compare with: another binary, or this one with BENCH_BASELINE_ENV.
    let baseline = std::env::var_os("BENCH_BASELINE_BIN")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("BENCH_BASELINE_ENV").map(|_| this_build().to_path_buf()));
    let figures = std::env::var_os("BENCH_FIGURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("agent/benches/figures"));
    std::fs::create_dir_all(&figures).unwrap();
    let full = ModelCase {
        name: "YOLOv4 416",
        path: model("models/cfg/yolov4.cfg", "yolov4-random-pytorch.onnx"),
        cold_period_s: 24,
        warm_period_s: 10,
    };
    let tiny = ModelCase {
        name: "YOLOv4-tiny 416",
        path: model(
            "models/cfg/yolov4-tiny.cfg",
            "yolov4-tiny-random-pytorch.onnx",
        ),
        cold_period_s: 16,
        warm_period_s: 8,
    };
    println!(
        "edge-agent run (release) with one 640x360 {FPS} fps H.264 RTSP camera (in-process \
         gst-rtsp-server), embedded MQTT broker, random-weight models on CPU, {} cores.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    if parts.iter().any(|p| p == "latency") {
        let mut rows = Vec::new();
        for m in &models {
            let case = match m.as_str() {
                "full" => &full,
                "tiny" => &tiny,
                other => panic!("BENCH_MODELS: unknown model {other:?} (tiny, full)"),
            };
            match &baseline {
                None => {
                    let build = Build {
                        program: this_build(),
                        env: Vec::new(),
                        label: case.name,
                    };
                    rows.push(latency_phase(case, false, n, &build));
                    rows.push(latency_phase(case, true, n, &build));
                }
                Some(base) => rows.extend(compare_builds(case, base, n)),
            }
        }
        print_latency(&rows);
        print_cold_breakdown(&rows);
        if baseline.is_some() {
            print_comparison(&rows);
        }
        let svg = figures.join("latency.svg");
        std::fs::write(&svg, latency_svg(&rows)).unwrap();
        println!("![latency samples]({})", link(&svg));
        println!();
    }
    if parts.iter().any(|p| p == "memory") {
        memory_part(&full, &figures);
    }
}
