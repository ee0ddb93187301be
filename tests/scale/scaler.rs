//! `edge-agent scaler` on a shared RabbitMQ queue.

use super::*;

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
    let mut scaler = Agent::command(&["scaler", "--config", &config], &[]);
    scaler.wait_state("running", 1, Duration::from_secs(20));
    // Idle: no worker at all while the queue is empty.
    std::thread::sleep(Duration::from_millis(800));
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
    let mut scaler = Agent::command(&["scaler", "--config", &config], &[]);
    scaler.wait_state("running", 1, Duration::from_secs(20));
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
        std::thread::sleep(Duration::from_millis(20));
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
        .lines()
        .into_iter()
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
        scaler.lines().into_iter().any(|l| l.worker.is_none()
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
