//! Worker supervision against the real `edge-agent worker` process.

use std::time::Duration;

use edge_agent::backoff::Backoff;
use edge_agent::scale::{run_owned, spawn_pool, WorkerSpec};
use tokio_util::sync::CancellationToken;

use crate::common::procs::{alive, wait_gone};
use crate::common::wait;

fn worker_with_args(args: &[&str]) -> WorkerSpec {
    WorkerSpec {
        program: env!("CARGO_BIN_EXE_edge-agent").into(),
        args: args.iter().map(Into::into).collect(),
        env: vec![],
        input: None,
    }
}

#[tokio::test]
async fn a_worker_that_fails_at_start_makes_the_pool_back_off_and_report_without_fork_bombing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[device]\nid = \"box\"\n[inference]\nmodel = \"/nonexistent/model.onnx\"\n",
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let spec = worker_with_args(&["worker", "--config", bad.to_str().unwrap()]);
    let pool = spawn_pool(
        spec,
        Duration::from_secs(2),
        Duration::from_secs(60),
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        shutdown.clone(),
    );
    pool.set_target(3);
    // Waits on state, not a wall-clock window (a loaded machine makes fewer attempts in
    // 4 s, never more): after three failures, the pool has started at most one worker
    // beyond them. Attempts go one at a time behind the backoff; a fork bomb would
    // have started the three it wants, and more, at once.
    crate::common::wait::until_async("three failed starts", Duration::from_secs(60), || {
        pool.status().start_failures >= 3
    })
    .await;
    let s = pool.status();
    assert!(
        s.started <= s.start_failures + 1,
        "started {} workers for {} failures: {s:?}",
        s.started,
        s.start_failures
    );
    assert_eq!(s.ready, 0);
    let reason = s.last_failure.clone().unwrap_or_default();
    assert!(
        reason.contains("failed to start") && reason.contains("inference.model"),
        "reason: {reason}"
    );
    shutdown.cancel();
    pool.stopped().await;
    assert!(pool.status().pids.is_empty());
}

#[tokio::test]
async fn a_worker_that_hangs_while_loading_is_killed_after_the_ready_timeout_and_the_pool_backs_off(
) {
    // A real worker that blocks while loading: its labels file is a FIFO nobody writes.
    // Its broker link is a real one (Mosquitto), so only the model load hangs: the
    // worker links to the broker while the model loads.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("labels.names");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cfg = dir.path().join("hang.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"{}\"\n[transport]\nkind = \"mqtt\"\nmqtt_url = \"{}\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\n",
            crate::common::broker::unique("hang"),
            crate::common::broker::mqtt_url(),
            root().join("models/generated/test-yolov4.onnx").display(),
            fifo.display()
        ),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let pool = spawn_pool(
        worker_with_args(&["worker", "--config", cfg.to_str().unwrap()]),
        Duration::from_secs(2),
        Duration::from_secs(2),
        Backoff::new(Duration::from_secs(5), Duration::from_secs(10)),
        shutdown.clone(),
    );
    pool.set_target(1);
    let first = wait::value_async("a worker started", Duration::from_secs(30), || {
        pool.status().pids.first().copied()
    })
    .await;
    let s = wait::value_async("the hung worker given up", Duration::from_secs(30), || {
        Some(pool.status()).filter(|s| s.start_failures >= 1)
    })
    .await;
    let reason = s.last_failure.clone().unwrap_or_default();
    assert!(
        reason.contains("failed to start: not ready within 2s"),
        "reason: {reason}"
    );
    assert!(s.backing_off && s.failing, "{s:?}");
    assert_eq!((s.ready, s.started), (0, 1), "{s:?}");
    // The pool counts the failure as it sends SIGKILL (through the task that owns the
    // child); under load the status can be read before the signal lands.
    wait_gone(
        first,
        Duration::from_secs(10),
        &format!("the hung worker {first} was not killed"),
    )
    .await;
    shutdown.cancel();
    pool.stopped().await;
}

#[tokio::test]
async fn at_the_stop_deadline_the_pool_kills_the_workers_it_owns_and_none_is_left() {
    // A real child that ignores SIGTERM (an ignored signal stays ignored across exec),
    // so the graceful stop cannot end it within the minute of grace.
    let spec = WorkerSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "trap '' TERM; exec sleep 600".into()],
        env: vec![],
        input: None,
    };
    let shutdown = CancellationToken::new();
    let pool = spawn_pool(
        spec,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        shutdown.clone(),
    );
    pool.set_target(1);
    let pid = wait::value_async("a worker started", Duration::from_secs(30), || {
        pool.status().pids.first().copied()
    })
    .await;
    shutdown.cancel();
    // Whether or not the pool has sent SIGTERM yet (a worker that never said ready may
    // still count as starting, not draining), the child ignores it: nothing stops it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), pool.stopped())
            .await
            .is_err(),
        "the worker ignoring SIGTERM stopped by itself"
    );
    pool.kill_all();
    tokio::time::timeout(Duration::from_secs(10), pool.stopped())
        .await
        .expect("the pool stopped after killing its workers");
    assert!(pool.status().pids.is_empty(), "{:?}", pool.status());
    wait_gone(
        pid,
        Duration::from_secs(10),
        &format!("worker {pid} outlived kill_all"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_an_agent_that_is_sigkilled() {
    let mut agent = Running::start(&["run"], &[("EDGE_AGENT__SCALING__MIN_WORKERS", "1")]);
    let worker = wait::value_async("one ready worker", Duration::from_secs(60), || {
        agent.pump(Duration::from_millis(50));
        let kids = agent.children();
        (agent.health()["workers"]["ready"].as_u64() == Some(1) && kids.len() == 1).then(|| kids[0])
    })
    .await;
    // Whatever happens below, no worker is left behind by this test.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _reap = Reap(worker);
    unsafe { libc::kill(agent.pid as i32, libc::SIGKILL) };
    agent.child.wait().unwrap();
    wait_gone(
        worker,
        Duration::from_secs(10),
        &format!("worker {worker} outlived its SIGKILLed agent"),
    )
    .await;
}

/// `sleep 600` through [`run_owned`], the helper `edge-agent prepare` runs through;
/// `pid` gets its process id.
async fn owned_sleep(
    shutdown: &CancellationToken,
    pid: &std::sync::Mutex<Option<u32>>,
) -> std::io::Result<Option<std::process::Output>> {
    let mut cmd = tokio::process::Command::new("sleep");
    cmd.arg("600");
    run_owned(cmd, |child| *pid.lock().unwrap() = child.id(), shutdown).await
}

#[tokio::test]
async fn a_child_run_owned_is_killed_and_reaped_at_shutdown() {
    let shutdown = CancellationToken::new();
    let pid = std::sync::Mutex::new(None);
    let run = owned_sleep(&shutdown, &pid);
    tokio::pin!(run);
    let child = tokio::select! {
        r = &mut run => panic!("sleep 600 ended by itself: {r:?}"),
        child = wait::value_async("the child started", Duration::from_secs(10), || *pid.lock().unwrap()) => child,
    };
    assert!(alive(child));
    shutdown.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the owner returns once shutdown fires")
        .expect("spawned");
    assert!(out.is_none(), "stopped by shutdown, not finished: {out:?}");
    // Reaped by its owner, not left a zombie: the pid names no process at all.
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "child {child} still exists"
    );
}

/// The test re-runs itself as the parent to SIGKILL (this variable set): that process
/// starts `sleep 600` through [`run_owned`], prints its pid and waits.
const OWNED_PARENT: &str = "EDGE_AGENT_TEST_OWNED_PARENT";

#[test]
fn a_child_run_owned_dies_with_its_sigkilled_parent() {
    use std::io::{BufRead, Write};
    if std::env::var_os(OWNED_PARENT).is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let pid = std::sync::Mutex::new(None);
        rt.block_on(async {
            let run = owned_sleep(&shutdown, &pid);
            tokio::pin!(run);
            let child = tokio::select! {
                r = &mut run => panic!("sleep 600 ended by itself: {r:?}"),
                child = wait::value_async("the child started", Duration::from_secs(10), || *pid.lock().unwrap()) => child,
            };
            println!("OWNED_CHILD {child}");
            std::io::stdout().flush().unwrap();
            let _ = run.await;
        });
        return;
    }
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "scale::a_child_run_owned_dies_with_its_sigkilled_parent",
            "--exact",
            "--nocapture",
        ])
        .env(OWNED_PARENT, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child: u32 = std::io::BufReader::new(parent.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("OWNED_CHILD ")
                .and_then(|p| p.trim().parse().ok())
        })
        .expect("the parent printed its child's pid");
    assert!(alive(child));
    unsafe { libc::kill(parent.id() as i32, libc::SIGKILL) };
    parent.wait().unwrap();
    // Whatever happens below, the sleep is not left behind by this test.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _reap = Reap(child);
    wait::until(
        &format!("child {child} gone after its parent was SIGKILLed"),
        Duration::from_secs(10),
        || !alive(child),
    );
}

// ---------------------------------------------------------------------------------
// `edge-agent scaler` on a shared RabbitMQ queue.

#[tokio::test]
async fn workers_report_their_provider_and_require_gpu_fails_a_cpu_only_worker_at_start() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = |name: &str, extra: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "[device]\nid = \"box\"\n[inference]\nproviders = [\"cuda\", \"cpu\"]\n{extra}{}",
                names.transport_toml()
            ),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let cpu_ok = conf("cpu.toml", "");
    let gpu_only = conf("gpu.toml", "require_gpu = true\n");
    let shutdown = CancellationToken::new();
    let backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
    let ok = spawn_pool(
        worker_with_args(&["worker", "--config", &cpu_ok]),
        Duration::from_secs(5),
        Duration::from_secs(60),
        backoff(),
        shutdown.clone(),
    );
    let gpu = spawn_pool(
        worker_with_args(&["worker", "--config", &gpu_only]),
        Duration::from_secs(5),
        Duration::from_secs(60),
        backoff(),
        shutdown.clone(),
    );
    ok.set_target(1);
    gpu.set_target(1);
    wait::until_async("a ready CPU worker", Duration::from_secs(60), || {
        ok.status().ready == 1
    })
    .await;
    wait::until_async(
        "a GPU-only worker ready or failed",
        Duration::from_secs(60),
        || {
            let g = gpu.status();
            g.start_failures >= 1 || g.ready == 1
        },
    )
    .await;
    // With or without a GPU: the worker runs on a provider its config allows (CUDA
    // where there is one, else the CPU), and says so, as do the pool's status (what
    // /health shows) and the metric.
    let s = ok.status();
    assert_eq!(s.providers.values().sum::<u32>(), 1, "{s:?}");
    let (provider, _) = s.providers.iter().next().unwrap();
    assert!(["cuda", "cpu"].contains(&provider.as_str()), "{s:?}");
    let text = edge_agent::telemetry::metrics::metrics().encode();
    assert!(
        text.contains(&format!(
            "edge_agent_worker_providers{{provider=\"{provider}\"}} 1"
        )),
        "{text}"
    );
    // require_gpu with only the CPU besides CUDA: on a GPU provider, or no start at
    // all with the require_gpu reason; never on the CPU.
    let g = gpu.status();
    if g.ready == 1 {
        assert_eq!(
            g.providers,
            BTreeMap::from([("cuda".to_string(), 1)]),
            "{g:?}"
        );
    } else {
        assert!(g.failing, "{g:?}");
        let reason = g.last_failure.clone().unwrap_or_default();
        assert!(
            reason.contains("failed to start") && reason.contains("inference.require_gpu is set"),
            "reason: {reason}"
        );
    }
    shutdown.cancel();
    ok.stopped().await;
    gpu.stopped().await;
    cleanup(&names, &["box"]).await;
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use edge_agent::clock::unix_ns_now;
use edge_agent::image::encode_rgb;
use edge_agent::transport::{AgentTransport, TransportConfig};
use edge_agent::wire::frame::VERSION;
use edge_agent::wire::{FrameHeader, FrameMessage};

use crate::common::broker::{amqp_url, unique};
use crate::common::models::{root, tiny_random};
use crate::common::procs::Running;

/// A scaler configuration on random queue and exchange names.
struct Names {
    queue: String,
    exchange: String,
}

impl Names {
    fn new() -> Self {
        Self {
            queue: unique("frames"),
            exchange: unique("events"),
        }
    }

    fn transport_toml(&self) -> String {
        format!(
            "[transport]\nkind = \"amqp\"\namqp_url = \"{}\"\nframes_queue = \"{}\"\nevents_exchange = \"{}\"\nframe_ttl = \"300s\"\n",
            amqp_url(),
            self.queue,
            self.exchange
        )
    }

    fn transport(&self) -> TransportConfig {
        toml::from_str::<toml::Value>(&self.transport_toml()).unwrap()["transport"]
            .clone()
            .try_into()
            .unwrap()
    }
}

/// Deletes the durable queues and exchanges a test declared on the shared RabbitMQ.
async fn cleanup(names: &Names, devices: &[&str]) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for d in devices {
        edge_agent::transport::amqp::delete_topology(&ch, &names.transport(), d).await;
    }
    let _ = conn.close(200, "OK".into()).await;
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("scaler.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A small JPEG with a red square (the demo model calls it fire).
fn red_square_jpeg() -> Bytes {
    let (w, h) = (160u32, 120u32);
    let mut rgb = vec![40u8; (w * h * 3) as usize];
    for y in 40..80 {
        for x in 60..100 {
            let p = ((y * w + x) * 3) as usize;
            rgb[p..p + 3].copy_from_slice(&[230, 20, 20]);
        }
    }
    Bytes::from(encode_rgb(&rgb, w, h, 85).unwrap())
}

fn frame(device: &str, camera: &str, seq: u64, jpeg: &Bytes) -> FrameMessage {
    FrameMessage {
        header: FrameHeader {
            version: VERSION,
            device: device.into(),
            camera: camera.into(),
            event_id: format!("{camera}-1"),
            seq,
            captured: unix_ns_now(),
            width: 160,
            height: 120,
            source_width: 0,
            source_height: 0,
            regions: Vec::new(),
            boxes: vec![],
            stamps: vec![],
            cold_start: false,
        },
        jpeg: jpeg.clone(),
    }
}

/// Reads detections for `agents` until every (device, seq) in `want` is answered or
/// the deadline passes, pumping the scaler's log meanwhile; returns how many answers
/// each frame got, and the peak worker count seen in /proc.
async fn collect(
    scaler: &mut Running,
    agents: &mut [(String, edge_agent::transport::Results)],
    want: &BTreeSet<(String, u64)>,
    timeout: Duration,
) -> (BTreeMap<(String, u64), u32>, usize) {
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut peak = 0;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !want.iter().all(|k| got.contains_key(k)) {
        peak = peak.max(scaler.children().len());
        scaler.pump(Duration::from_millis(1));
        for (device, results) in agents.iter_mut() {
            while let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_millis(20), results.next()).await
            {
                assert_eq!(&r.device, device, "results reach the frame's device");
                if r.kind == "detections" {
                    *got.entry((r.device.clone(), r.seq.unwrap())).or_default() += 1;
                }
            }
        }
    }
    (got, peak)
}

async fn wait_for_no_workers(scaler: &mut Running, timeout: Duration) -> Vec<u32> {
    let mut left = Vec::new();
    wait::until_async("no workers", timeout, || {
        scaler.pump(Duration::from_millis(50));
        left = scaler.children();
        left.is_empty()
    })
    .await;
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaler_serves_a_shared_amqp_queue_from_zero_workers_and_returns_to_zero() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[device]\nid = \"gpu-server\"\n{}[scaling]\nmax_workers = 2\nbacklog_per_worker = 4\npolling_interval = \"100ms\"\ncooldown_period = \"2s\"\n",
            names.transport_toml()
        ),
    );
    let mut scaler = Running::start(&["scaler", "--config", &config], &[]);
    assert!(
        scaler
            .wait_state("running", Duration::from_secs(20))
            .is_some(),
        "scaler did not start: {:?}",
        scaler.seen
    );
    // Idle: no worker at all while the queue is empty.
    scaler.pump(Duration::from_millis(800));
    assert!(
        scaler.children().is_empty(),
        "a worker started for an empty queue"
    );

    // Two boxes share the queue; each must get its own answers back.
    let cfg = names.transport();
    let jpeg = red_square_jpeg();
    let mut agents = Vec::new();
    let mut want = BTreeSet::new();
    let mut transports = Vec::new();
    for device in ["box-a", "box-b"] {
        let t = AgentTransport::connect(&cfg, device, &Default::default())
            .await
            .unwrap();
        agents.push((device.to_string(), t.results().unwrap()));
        transports.push(t);
    }
    // The agents' result queues are bound before anything is answered: a transport
    // says it is connected only once its results queue is declared and bound.
    for t in &transports {
        wait::until_async(
            "an agent's results queue bound",
            Duration::from_secs(30),
            || t.is_connected(),
        )
        .await;
    }
    for (t, (device, _)) in transports.iter().zip(&agents) {
        for seq in 1..=10 {
            t.publish_frame(frame(device, "gate", seq, &jpeg)).unwrap();
            want.insert((device.clone(), seq));
        }
        assert!(t.flush(Duration::from_secs(10)).await);
    }
    let (got, peak) = collect(&mut scaler, &mut agents, &want, Duration::from_secs(60)).await;
    let missing: Vec<_> = want.iter().filter(|k| !got.contains_key(k)).collect();
    assert!(missing.is_empty(), "unanswered frames: {missing:?}");
    assert!((1..=2).contains(&peak), "peak workers {peak}");
    let metrics = scaler.get("/metrics");
    assert!(
        metrics.contains("edge_agent_workers "),
        "metrics endpoint serves the worker count:\n{metrics}"
    );

    // After the cooldown, no worker process is left.
    let left = wait_for_no_workers(&mut scaler, Duration::from_secs(30)).await;
    assert!(left.is_empty(), "workers left after the cooldown: {left:?}");
    let status = scaler.stop();
    assert!(status.success(), "scaler exit on SIGTERM: {status:?}");
    for t in transports {
        t.close(Duration::from_secs(2)).await;
    }
    cleanup(&names, &["box-a", "box-b", "gpu-server"]).await;
}

#[test]
fn scaler_refuses_a_transport_other_than_amqp_naming_transport_kind() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[device]\nid = \"gpu-server\"\n[transport]\nkind = \"mqtt\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["scaler", "--config", &config])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("transport.kind") && err.contains("\"mqtt\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_inference_has_its_frame_redelivered_and_is_replaced() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    // One worker holding up to 4 frames, on a model slow enough (~45 ms a frame) that
    // it always holds some while the queue is long.
    let config = gpu_server_config(
        dir.path(),
        &names,
        "max_workers = 1\npolling_interval = \"100ms\"\ncooldown_period = \"2s\"\n",
    );
    let mut scaler = Running::start(&["scaler", "--config", &config], &[]);
    assert!(scaler
        .wait_state("running", Duration::from_secs(20))
        .is_some());
    let cfg = names.transport();
    let t = AgentTransport::connect(&cfg, "box-k", &Default::default())
        .await
        .unwrap();
    let mut agents = vec![("box-k".to_string(), t.results().unwrap())];
    wait::until_async(
        "the agent's results queue bound",
        Duration::from_secs(30),
        || t.is_connected(),
    )
    .await;
    let jpeg = red_square_jpeg();
    let n = 80;
    let want: BTreeSet<(String, u64)> = (1..=n).map(|s| ("box-k".to_string(), s)).collect();
    for seq in 1..=n {
        t.publish_frame(frame("box-k", "gate", seq, &jpeg)).unwrap();
    }
    assert!(t.flush(Duration::from_secs(10)).await);

    // Wait until the worker says it holds frames, then SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        scaler.pump(Duration::from_millis(20));
        let h = scaler.health();
        let held = h["workers"]["held"].as_u64().unwrap_or(0);
        let pids = scaler.children();
        if held >= 2 && pids.len() == 1 {
            break pids[0];
        }
        assert!(Instant::now() < deadline, "worker never held frames: {h}");
    };
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };

    let (got, _) = collect(&mut scaler, &mut agents, &want, Duration::from_secs(120)).await;
    let missing: Vec<_> = want.iter().filter(|k| !got.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "frames lost with the killed worker: {missing:?}"
    );
    // The replacement said it got frames the killed one had taken.
    let redelivered: Vec<u64> = scaler
        .seen
        .iter()
        .filter(|l| l.worker.is_some_and(|w| w != victim))
        .filter(|l| l.lifecycle() == "frame_redelivered")
        .filter_map(|l| l.v["seq"].as_u64())
        .collect();
    assert!(
        !redelivered.is_empty(),
        "no frame was redelivered after the SIGKILL"
    );
    let h = scaler.health();
    assert_eq!(h["workers"]["crashes"].as_u64(), Some(1), "{h}");
    assert!(h["workers"]["started"].as_u64().unwrap_or(0) >= 2, "{h}");
    assert!(
        scaler.seen.iter().any(|l| l.worker.is_none()
            && l.lifecycle() == "worker_ready"
            && l.v["pid"].as_u64().is_some_and(|p| p as u32 != victim)),
        "no replacement worker became ready"
    );
    let left = wait_for_no_workers(&mut scaler, Duration::from_secs(30)).await;
    assert!(left.is_empty(), "workers left: {left:?}");
    assert!(scaler.stop().success());
    t.close(Duration::from_secs(2)).await;
    cleanup(&names, &["box-k", "gpu-server"]).await;
}

/// A queue of the test's own on the events exchange, receiving every detections
/// message for `device` (not only the first answer, so duplicates show).
async fn detections_tap(exchange: &str, device: &str) -> (lapin::Connection, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // The exchange as the transport declares it (durable topic), in case we are first.
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.into(),
        format!("{device}.*.detections").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

/// Drains what the tap has now into `got` ((camera, seq) -> answers).
async fn drain_tap(tap: &mut lapin::Consumer, got: &mut BTreeMap<(String, u64), u32>) {
    use futures::StreamExt;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(20), tap.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        let key = (
            v["camera"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        );
        *got.entry(key).or_default() += 1;
    }
}

/// `n` demo cameras, each escalating a burst of 15 frames and then next to nothing (15
/// per 10 minutes): a bounded burst, while the demo square keeps moving.
fn cameras_toml(n: usize, enabled: bool) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[cameras]]\nid = \"cam{i}\"\nurl = \"demo://moving-square\"\nenabled = {enabled}\n[cameras.escalation]\nbudget = 15\nbudget_window = \"10m\"\nmin_interval = \"100ms\"\n"
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_several_cameras_scales_out_to_max_workers_drains_and_returns_to_zero() {
    const CAMERAS: usize = 4;
    const MAX: usize = 3;
    let names = Names::new();
    let device = unique("burst");
    let model = tiny_random("pytorch");
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[device]\nid = \"{device}\"\n{}prefetch = 1\n[scaling]\nmax_workers = {MAX}\nbacklog_per_worker = 2\npolling_interval = \"100ms\"\ncooldown_period = \"3s\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\nconfidence = 0.99\n",
        names.transport_toml(),
        model.display(),
        root().join("models/coco.names").display()
    );
    let config = write_config(dir.path(), &(base.clone() + &cameras_toml(CAMERAS, true)));
    let (_tap_conn, mut tap) = detections_tap(&names.exchange, &device).await;
    let mut agent = Running::start(&["run", "--config", &config], &[]);
    assert!(
        agent
            .wait_state("running", Duration::from_secs(30))
            .is_some(),
        "agent did not start: {:?}",
        agent.seen
    );
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut peak = 0;
    let mut peak_backlog = 0.0f64;
    // The burst: until the pool has reached max_workers (or a minute passed).
    let started = Instant::now();
    while peak < MAX && started.elapsed() < Duration::from_secs(60) {
        agent.pump(Duration::from_millis(50));
        peak = peak.max(agent.children().len());
        drain_tap(&mut tap, &mut got).await;
        let m = agent.get("/metrics");
        peak_backlog = peak_backlog
            .max(crate::common::procs::metric(&m, "edge_agent_backlog ").unwrap_or(0.0));
    }
    let to_peak = started.elapsed();
    // Cameras off (reload): no new frames; the backlog must drain.
    std::fs::write(&config, base + &cameras_toml(CAMERAS, false)).unwrap();
    unsafe { libc::kill(agent.pid as i32, libc::SIGHUP) };
    let stopped_at = Instant::now();
    assert!(agent
        .wait_state("reloaded", Duration::from_secs(20))
        .is_some());
    // Drain: every escalated frame answered, and then no worker left. Frames still in
    // the agent's escalation channel at the reload go out after it, so only the state
    // where both hold is final.
    let s = settle(&mut agent, &mut tap, &mut got, CAMERAS, &mut |a| {
        peak = peak.max(a.children().len())
    })
    .await;
    let (esc, left) = (s.escalated, s.left);
    let drain = s.drained.map(|t| t - stopped_at);
    let to_zero = s.zero.map(|t| t - stopped_at);
    let total: u64 = esc.values().sum();
    eprintln!(
        "burst: {CAMERAS} cameras, {total} frames escalated, peak {peak} workers after {to_peak:?}, peak backlog {peak_backlog}, drained {drain:?} after the cameras stopped, zero workers after {to_zero:?}"
    );
    assert_eq!(peak, MAX, "workers scale out to max_workers, never beyond");
    assert!(total > 0);
    assert_eq!(
        answered_per_camera(&got, CAMERAS),
        esc,
        "every escalated frame answered"
    );
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    let story: Vec<String> = agent
        .seen
        .iter()
        .filter(|l| {
            let m = l.message();
            m.starts_with("Frame redelivered")
                || m.starts_with("Scaling")
                || m.starts_with("Worker")
                || l.v["level"] != "INFO"
        })
        .map(|l| format!("{:?} {}", l.worker, l.v))
        .collect();
    assert!(
        twice.is_empty(),
        "frames processed more than once: {twice:?}\n{}",
        story.join("\n")
    );
    assert!(left.is_empty(), "workers left after the cooldown: {left:?}");
    let status = agent.stop();
    let warnings: Vec<&serde_json::Value> = agent
        .seen
        .iter()
        .filter(|l| l.v["level"] != "INFO")
        .map(|l| &l.v)
        .collect();
    assert!(
        status.success(),
        "agent exit {status:?}; warnings: {warnings:#?}"
    );
    cleanup(&names, &[&device]).await;
}

struct Settled {
    escalated: BTreeMap<String, u64>,
    /// When every frame escalated so far was first seen answered.
    drained: Option<Instant>,
    /// When, after that, no worker process was left.
    zero: Option<Instant>,
    left: Vec<u32>,
}

/// Waits (two minutes at most) until every frame the agent escalated is answered and
/// no worker process is left, calling `tick` as it goes.
async fn settle(
    agent: &mut Running,
    tap: &mut lapin::Consumer,
    got: &mut BTreeMap<(String, u64), u32>,
    cameras: usize,
    tick: &mut dyn FnMut(&Running),
) -> Settled {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Settled {
        escalated: BTreeMap::new(),
        drained: None,
        zero: None,
        left: Vec::new(),
    };
    loop {
        agent.pump(Duration::from_millis(50));
        tick(agent);
        drain_tap(tap, got).await;
        out.escalated = escalated_per_camera(agent, cameras);
        let all = answered_per_camera(got, cameras) == out.escalated;
        if !all {
            out.drained = None;
            out.zero = None;
        } else if out.drained.is_none() {
            out.drained = Some(Instant::now());
        }
        out.left = agent.children();
        if all && out.left.is_empty() {
            out.zero.get_or_insert_with(Instant::now);
            return out;
        }
        if Instant::now() > deadline {
            return out;
        }
    }
}

/// Escalations per camera from the agent's /metrics.
fn escalated_per_camera(agent: &Running, cameras: usize) -> BTreeMap<String, u64> {
    let m = agent.get("/metrics");
    (1..=cameras)
        .map(|i| {
            let cam = format!("cam{i}");
            let name = format!("edge_agent_escalations_total{{camera=\"{cam}\"}}");
            let n = crate::common::procs::metric(&m, &name).unwrap_or(0.0) as u64;
            (cam, n)
        })
        .collect()
}

/// Distinct frames answered per camera.
fn answered_per_camera(
    got: &BTreeMap<(String, u64), u32>,
    cameras: usize,
) -> BTreeMap<String, u64> {
    let mut per: BTreeMap<String, u64> = (1..=cameras).map(|i| (format!("cam{i}"), 0)).collect();
    for (cam, _) in got.keys() {
        *per.entry(cam.clone()).or_default() += 1;
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_offloaded_to_the_remote_queue_only_while_local_workers_are_saturated() {
    const CAMERAS: usize = 4;
    let names = Names::new();
    let remote_queue = unique("remote");
    let device = unique("edge");
    let dir = tempfile::tempdir().unwrap();
    // The centre: a scaler on the remote queue, with the fast demo model.
    let remote_cfg = dir.path().join("centre.toml");
    let remote_names = Names {
        queue: remote_queue.clone(),
        exchange: names.exchange.clone(),
    };
    std::fs::write(
        &remote_cfg,
        format!(
            "[device]\nid = \"centre\"\n{}[scaling]\nmax_workers = 1\npolling_interval = \"100ms\"\ncooldown_period = \"2s\"\n",
            remote_names.transport_toml()
        ),
    )
    .unwrap();
    let mut centre = Running::start(&["scaler", "--config", remote_cfg.to_str().unwrap()], &[]);
    assert!(centre
        .wait_state("running", Duration::from_secs(20))
        .is_some());

    // The edge: one slow local worker at most, offloading above a backlog of 2.
    let model = tiny_random("pytorch");
    let base = format!(
        "[device]\nid = \"{device}\"\n{}prefetch = 1\n[scaling]\nmax_workers = 1\nbacklog_per_worker = 1\noffload_backlog = 2\nremote_queue = \"{remote_queue}\"\npolling_interval = \"100ms\"\ncooldown_period = \"3s\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\nconfidence = 0.99\n",
        names.transport_toml(),
        model.display(),
        root().join("models/coco.names").display()
    );
    let config = write_config(dir.path(), &(base.clone() + &cameras_toml(CAMERAS, true)));
    let (_tap_conn, mut tap) = detections_tap(&names.exchange, &device).await;
    let mut agent = Running::start(&["run", "--config", &config], &[]);
    assert!(agent
        .wait_state("running", Duration::from_secs(30))
        .is_some());
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let (mut local_peak, mut remote_peak) = (0, 0);
    let offloaded = |agent: &Running| -> f64 {
        agent
            .get("/metrics")
            .lines()
            .filter(|l| l.starts_with("edge_agent_offloaded_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let started = Instant::now();
    while offloaded(&agent) < 3.0 && started.elapsed() < Duration::from_secs(60) {
        agent.pump(Duration::from_millis(50));
        centre.pump(Duration::from_millis(1));
        local_peak = local_peak.max(agent.children().len());
        remote_peak = remote_peak.max(centre.children().len());
        drain_tap(&mut tap, &mut got).await;
    }
    std::fs::write(&config, base + &cameras_toml(CAMERAS, false)).unwrap();
    unsafe { libc::kill(agent.pid as i32, libc::SIGHUP) };
    assert!(agent
        .wait_state("reloaded", Duration::from_secs(20))
        .is_some());
    let s = settle(&mut agent, &mut tap, &mut got, CAMERAS, &mut |a| {
        local_peak = local_peak.max(a.children().len());
        centre.pump(Duration::from_millis(1));
        remote_peak = remote_peak.max(centre.children().len());
    })
    .await;
    let esc = s.escalated;
    let sent_remote = offloaded(&agent);
    let total: u64 = esc.values().sum();
    eprintln!("offload: {total} frames escalated, {sent_remote} offloaded, local peak {local_peak} worker(s), remote peak {remote_peak}");
    assert!(sent_remote >= 1.0, "nothing was offloaded");
    assert!((sent_remote as u64) < total, "local workers took none");
    assert_eq!(local_peak, 1, "local workers stay within max_workers");
    assert!(
        remote_peak >= 1,
        "the centre's scaler never started a worker"
    );
    assert_eq!(
        answered_per_camera(&got, CAMERAS),
        esc,
        "every frame answered, local or remote"
    );
    // Every switch to remote happened with local workers at max and the backlog above
    // the threshold.
    let switches: Vec<&serde_json::Value> = agent
        .seen
        .iter()
        .filter(|l| l.worker.is_none() && l.lifecycle() == "offload_remote")
        .map(|l| &l.v)
        .collect();
    assert!(!switches.is_empty());
    for v in &switches {
        assert_eq!(v["reason"], "local_saturated", "{v}");
        assert_eq!(v["workers"].as_u64(), Some(1), "{v}");
        assert!(v["backlog"].as_u64().unwrap() > 2, "{v}");
    }
    assert!(agent.stop().success());
    assert!(centre.stop().success());
    cleanup(&names, &[&device]).await;
    cleanup(&remote_names, &["centre"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_finish_within_the_grace_period_exits_anyway_and_its_frames_come_back()
{
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    // A frame takes ~45 ms through YOLOv4-tiny: with a 1 ms grace period the frames the
    // worker holds at SIGTERM (up to the prefetch of 4) cannot be finished in time. (With
    // 100 ms, a quiet machine sometimes finished them and the worker rightly exited 0.)
    let config = gpu_server_config(dir.path(), &names, "grace_period = \"1ms\"\n");
    let mut worker = Running::start(&["worker", "--config", &config], &[]);
    assert!(
        worker
            .wait_state("ready", Duration::from_secs(60))
            .is_some(),
        "worker not ready: {:?}",
        worker.seen
    );
    let cfg = names.transport();
    let t = AgentTransport::connect(&cfg, "box-g", &Default::default())
        .await
        .unwrap();
    let mut results = t.results().unwrap();
    let jpeg = red_square_jpeg();
    let n = 40u64;
    for seq in 1..=n {
        t.publish_frame(frame("box-g", "gate", seq, &jpeg)).unwrap();
    }
    assert!(t.flush(Duration::from_secs(10)).await);
    // Every answer by the frame it answers, however often it comes.
    let mut answered: BTreeMap<(String, u64), u32> = BTreeMap::new();
    fn note(answered: &mut BTreeMap<(String, u64), u32>, r: edge_agent::transport::ResultMessage) {
        if r.kind == "detections" {
            let seq = r.seq.expect("detections name their frame");
            *answered.entry((r.camera, seq)).or_default() += 1;
        }
    }
    let first = tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .expect("a first answer")
        .unwrap();
    note(&mut answered, first);

    unsafe { libc::kill(worker.pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = worker.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "worker still running after SIGTERM"
        );
        worker.pump(Duration::from_millis(20));
    };
    worker.pump(Duration::from_millis(300));
    assert_eq!(status.code(), Some(1), "{status:?}: {:?}", worker.seen);
    assert!(
        worker
            .seen
            .iter()
            .any(|l| l.lifecycle() == "grace_exceeded"),
        "{:?}",
        worker.seen
    );

    // Nothing is lost, by identity: once the dead worker's connection is gone (its
    // unacked frames back in the queue), every frame sent is in the queue or answered.
    // Counts would not do: a frame both answered and requeued (its answer confirmed,
    // its ack cut off by the exit: at-least-once) would count twice and hide a lost one.
    let mut probe = edge_agent::transport::amqp::QueueProbe::new(&cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe.counts().await.unwrap().1 > 0 {
        assert!(Instant::now() < deadline, "the dead worker still consumes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = queued_frames(&cfg.frames_queue).await;
    let sent: BTreeSet<(String, u64)> = (1..=n).map(|seq| ("gate".to_string(), seq)).collect();
    let mut in_queue: BTreeMap<(String, u64), u32> = BTreeMap::new();
    for id in queued {
        *in_queue.entry(id).or_default() += 1;
    }
    loop {
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(20), results.next()).await
        {
            note(&mut answered, r);
        }
        let missing: Vec<&(String, u64)> = sent
            .iter()
            .filter(|id| !answered.contains_key(*id) && !in_queue.contains_key(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "frames lost {missing:?}: answered {answered:?}, back in the queue {in_queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (what, ids) in [("answered", &answered), ("in the queue", &in_queue)] {
        for (id, times) in ids {
            assert!(sent.contains(id), "{what}: {id:?} was never sent");
            assert_eq!(*times, 1, "{id:?} {what} {times} times");
        }
    }
    probe.close().await;
    t.close(Duration::from_secs(2)).await;
    cleanup(&names, &["box-g", "gpu-server"]).await;
}

/// The identities `(camera, seq)` of the frames waiting in `queue`, read without
/// taking them: each is fetched unacked and goes back when the connection closes.
async fn queued_frames(queue: &str) -> Vec<(String, u64)> {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
    {
        let f = edge_agent::wire::frame::decode(&m.delivery.data, usize::MAX)
            .unwrap_or_else(|e| panic!("a frame in {queue} that does not decode: {e}"));
        ids.push((f.header.camera, f.header.seq));
    }
    let _ = conn.close(200, "OK".into()).await;
    ids
}

/// A camera whose motion is never confirmed as an event (`start_frames` = 100 at one
/// analysis frame a second, far beyond the test): its first frame with motion starts a
/// worker all the same, no frame is escalated, and the worker goes again after the
/// cooldown (whether or not it finished loading its model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::single_range_in_vec_init)] // one window of motion
async fn a_motion_candidate_starts_a_worker_that_goes_after_the_cooldown_without_an_event() {
    use crate::common::rtsp_server::RtspTestServer;
    use edge_agent::ingest::synthetic::Scene;
    // The object never rests: one candidate that stays pending for the whole test. The
    // motion warm-up is off: it would learn the path of an object moving from the first
    // frame as noise and let the candidate drop (a false start), which is motion's
    // business, not what this test is about.
    let srv = RtspTestServer::start(Scene {
        period: 150,
        moves: vec![0..150],
        ..Scene::default()
    });
    let url = srv.url("/prewarm");
    let device = unique("prewarm");
    let port = crate::common::broker::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[device]\nid = \"{device}\"\n[transport]\nkind = \"embedded\"\nembedded_port = {port}\n[scaling]\npolling_interval = \"100ms\"\ncooldown_period = \"2s\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\n[[cameras]]\nid = \"cam1\"\nurl = \"{url}\"\nanalysis_fps = 1\n[cameras.motion]\nstart_frames = 100\nwarmup_frames = 0\n",
            tiny_random("pytorch").display(),
            root().join("models/coco.names").display()
        ),
    );
    let mut agent = Running::start(&["run", "--config", &config], &[]);
    assert!(
        agent
            .wait_state("running", Duration::from_secs(30))
            .is_some(),
        "agent did not start: {:?}",
        agent.seen
    );
    let metric = |a: &Running, name: &str| {
        crate::common::procs::metric(&a.get("/metrics"), name).unwrap_or(0.0)
    };
    let prewarm = "edge_agent_prewarm_starts_total{camera=\"cam1\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(metric(&agent, prewarm) >= 1.0 && agent.health()["workers"]["running"] == 1) {
        assert!(
            Instant::now() < deadline,
            "no worker started for the candidate: {prewarm} = {}, health {}",
            metric(&agent, prewarm),
            agent.health()
        );
        agent.pump(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&agent, "edge_agent_escalations_total{camera=\"cam1\"}"),
        0.0,
        "a worker runs before any frame was escalated"
    );
    // Cooldown 2 s, then SIGTERM; a worker still loading exits once loaded (grace 10 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.health()["workers"]["running"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the worker outlived the cooldown: {}",
            agent.health()
        );
        agent.pump(Duration::from_millis(100));
    }
    assert_eq!(metric(&agent, prewarm), 1.0, "one start for one candidate");
    assert_eq!(
        metric(&agent, "edge_agent_false_starts_total{camera=\"cam1\"}"),
        0.0,
        "the candidate is still pending: not (yet) a false start"
    );
    assert_eq!(
        metric(&agent, "edge_agent_escalations_total{camera=\"cam1\"}"),
        0.0,
        "nothing escalated: the motion was never confirmed"
    );
    assert!(agent.wait_state("motion_started", Duration::ZERO).is_none());
    assert!(agent.stop().success());
}

/// A GPU server's config on the test's AMQP names: YOLOv4-tiny with random weights
/// (~45 ms a frame on one thread, no detection passes 0.99), prefetch 4, and the given
/// `[scaling]` lines.
fn gpu_server_config(dir: &std::path::Path, names: &Names, scaling: &str) -> String {
    write_config(
        dir,
        &format!(
            "[device]\nid = \"gpu-server\"\n{}prefetch = 4\n[scaling]\n{scaling}[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\nconfidence = 0.99\n",
            names.transport_toml(),
            tiny_random("pytorch").display(),
            root().join("models/coco.names").display()
        ),
    )
}
