//! The agent scaling its own workers from its cameras' motion: bursts, offload to the
//! remote queue, the grace period, and a motion candidate starting a worker.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_several_cameras_scales_out_to_max_workers_drains_and_returns_to_zero() {
    const CAMERAS: usize = 4;
    const MAX: usize = 3;
    let names = Names::new();
    let device = unique("burst");
    let model = tiny_random("pytorch");
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[device]\nid = \"{device}\"\n{}prefetch = 1\n[scaling]\nmax_workers = {MAX}\nbacklog_per_worker = 1\npolling_interval = \"100ms\"\ncooldown_period = \"3s\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\nconfidence = 0.99\n",
        names.transport_toml(),
        model.display(),
        root().join("models/coco.names").display()
    );
    let config = write_config(dir.path(), &(base.clone() + &cameras_toml(CAMERAS, true)));
    let (_tap_conn, mut tap) = detections_tap(&names.exchange, &device).await;
    let mut agent = Agent::command(&["run", "--config", &config], &[]);
    agent.wait_state("running", 1, Duration::from_secs(30));
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut peak = 0;
    let mut peak_backlog = 0.0f64;
    // The burst: until the pool has reached max_workers (or a minute passed).
    let started = Instant::now();
    while peak < MAX && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
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
    agent.wait_state("reloaded", 1, Duration::from_secs(20));
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
        .lines()
        .into_iter()
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
    let status = agent.stop_and_wait();
    let warnings: Vec<serde_json::Value> = agent
        .lines()
        .into_iter()
        .filter(|l| l.v["level"] != "INFO")
        .map(|l| l.v)
        .collect();
    assert!(
        status.success(),
        "agent exit {status:?}; warnings: {warnings:#?}"
    );
    cleanup(&names, &[&device]).await;
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
    let centre = Agent::command(&["scaler", "--config", remote_cfg.to_str().unwrap()], &[]);
    centre.wait_state("running", 1, Duration::from_secs(20));

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
    let mut agent = Agent::command(&["run", "--config", &config], &[]);
    agent.wait_state("running", 1, Duration::from_secs(30));
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let (mut local_peak, mut remote_peak) = (0, 0);
    let offloaded = |agent: &Agent| -> f64 {
        agent
            .get("/metrics")
            .lines()
            .filter(|l| l.starts_with("edge_agent_offloaded_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let started = Instant::now();
    while offloaded(&agent) < 3.0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        local_peak = local_peak.max(agent.children().len());
        remote_peak = remote_peak.max(centre.children().len());
        drain_tap(&mut tap, &mut got).await;
    }
    std::fs::write(&config, base + &cameras_toml(CAMERAS, false)).unwrap();
    unsafe { libc::kill(agent.pid as i32, libc::SIGHUP) };
    agent.wait_state("reloaded", 1, Duration::from_secs(20));
    let s = settle(&mut agent, &mut tap, &mut got, CAMERAS, &mut |a| {
        local_peak = local_peak.max(a.children().len());
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
    let switches: Vec<serde_json::Value> = agent
        .lines()
        .into_iter()
        .filter(|l| l.worker.is_none() && l.lifecycle() == "offload_remote")
        .map(|l| l.v)
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
    let mut worker = Agent::command(&["worker", "--config", &config], &[]);
    worker.wait_state("ready", 1, Duration::from_secs(60));
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
        if let Some(s) = worker.try_exit() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "worker still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status.code(), Some(1), "{status:?}: {:?}", worker.lines());
    assert!(
        worker
            .lines()
            .into_iter()
            .any(|l| l.lifecycle() == "grace_exceeded"),
        "{:?}",
        worker.lines()
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
    let agent = Agent::command(&["run", "--config", &config], &[]);
    agent.wait_state("running", 1, Duration::from_secs(30));
    let metric = |a: &Agent, name: &str| {
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
        std::thread::sleep(Duration::from_millis(100));
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
        std::thread::sleep(Duration::from_millis(100));
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
    assert!(agent.in_state("motion_started").is_empty());
    assert!(agent.stop().success());
}
