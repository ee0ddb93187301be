//! Offload over a link of its own: the frames stay on the agent's embedded broker, and
//! only the frames local workers cannot take go to a central GPU pool (an `edge-agent
//! scaler` with a real worker) on RabbitMQ, whose detections come back into the agent's
//! results over the same link.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_workers_failing_frames_go_to_the_central_pool_over_its_own_link_and_answers_come_back(
) {
    const CAMERAS: usize = 2;
    let pool = Names {
        queue: unique("pool"),
        exchange: unique("pool-events"),
    };
    let device = unique("box");
    let dir = tempfile::tempdir().unwrap();

    // The centre: a scaler with the fast demo model on the pool's queue.
    let centre_cfg = dir.path().join("centre.toml");
    std::fs::write(
        &centre_cfg,
        format!(
            "[device]\nid = \"centre\"\n{}[scaling]\nmax_workers = 1\npolling_interval = \"100ms\"\ncooldown_period = \"30s\"\n",
            pool.transport_toml()
        ),
    )
    .unwrap();
    let centre = Agent::command(&["scaler", "--config", centre_cfg.to_str().unwrap()], &[]);
    centre.wait_state("running", 1, Duration::from_secs(20));

    // The box: frames on the embedded broker; its local workers cannot load their model
    // (not an ONNX file), so every frame it escalates once they failed goes remote.
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"not a model").unwrap();
    let base = format!(
        "[device]\nid = \"{device}\"\n\
         [transport]\nkind = \"embedded\"\nframe_ttl = \"300s\"\n\
         [scaling]\nmax_workers = 1\npolling_interval = \"100ms\"\n\
         remote_queue = \"{}\"\nremote_url = \"{}\"\nremote_exchange = \"{}\"\n\
         [inference]\nmodel = \"{}\"\nlabels = \"{}\"\n",
        pool.queue,
        amqp_url(),
        pool.exchange,
        broken.display(),
        root().join("models/coco.names").display()
    );
    let config = write_config(dir.path(), &(base.clone() + &cameras_toml(CAMERAS, true)));
    let (_tap_conn, mut tap) = detections_tap(&pool.exchange, &device).await;
    let agent = Agent::command(&["run", "--config", &config], &[]);
    agent.wait_state("running", 1, Duration::from_secs(30));
    wait::until("the offload link up", Duration::from_secs(30), || {
        agent.health()["offload_connected"] == true
    });

    let offloaded = |agent: &Agent| -> f64 {
        agent
            .get("/metrics")
            .lines()
            .filter(|l| l.starts_with("edge_agent_offloaded_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // What came back into the agent's own results (its tracking logs each first answer).
    let answered = |agent: &Agent| -> BTreeSet<(String, u64)> {
        agent
            .lines()
            .into_iter()
            .filter(|l| l.worker.is_none() && l.lifecycle() == "detections")
            .map(|l| {
                (
                    l.v["camera"].as_str().unwrap_or("").to_string(),
                    l.v["seq"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    let mut central: BTreeMap<(String, u64), u32> = BTreeMap::new();
    // A few frames offloaded, then the cameras off (reload): nothing new is escalated,
    // and every frame sent to the pool must come back.
    let deadline = Instant::now() + Duration::from_secs(120);
    while offloaded(&agent) < 6.0 {
        std::thread::sleep(Duration::from_millis(100));
        drain_tap(&mut tap, &mut central).await;
        assert!(
            Instant::now() < deadline,
            "nothing offloaded: {}",
            agent.log_text()
        );
    }
    std::fs::write(&config, base + &cameras_toml(CAMERAS, false)).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_state("reloaded", 1, Duration::from_secs(20));
    // Frames already in the escalator at the reload still go out after it: settled is
    // every frame sent answered, with no new one for 3 s.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut settled: Option<(f64, Instant)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        drain_tap(&mut tap, &mut central).await;
        // Read the count before the answers: a frame sent in between is only
        // counted on the next turn.
        let sent = offloaded(&agent);
        let back = answered(&agent).len() as f64;
        match settled {
            Some((n, since)) if n == sent && back >= sent => {
                if since.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
            _ if sent > 0.0 && back >= sent => settled = Some((sent, Instant::now())),
            _ => settled = None,
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {sent} offloaded, {back} answered back to the agent, {} seen centrally; metrics: {}",
            central.len(),
            agent
                .get("/metrics")
                .lines()
                .filter(|l| l.contains("offload") || l.contains("escalations"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // What the pool published is all in at the tap too.
    let until = Instant::now() + Duration::from_secs(10);
    while central.len() < answered(&agent).len() && Instant::now() < until {
        drain_tap(&mut tap, &mut central).await;
    }
    let sent = offloaded(&agent) as usize;
    let back = answered(&agent);
    let failed_local = agent
        .lines()
        .into_iter()
        .filter(|l| l.worker.is_none() && l.lifecycle() == "offload_remote")
        .map(|l| l.v)
        .collect::<Vec<_>>();
    eprintln!(
        "offload link: {sent} frames offloaded, {} answered back, {} detections seen centrally",
        back.len(),
        central.len()
    );
    assert!(sent >= 3, "too few frames offloaded to tell: {sent}");
    assert!(
        failed_local.iter().all(|v| v["reason"] == "local_absent"),
        "{failed_local:?}"
    );
    // No local worker ever answered: every answer came over the offload link, one per
    // frame sent there, and they are exactly the ones the pool published.
    assert_eq!(
        back.len(),
        sent,
        "each offloaded frame answered once: {back:?}"
    );
    let central_keys: BTreeSet<(String, u64)> = central.keys().cloned().collect();
    assert_eq!(back, central_keys, "the agent got what the pool published");
    assert!(
        central.values().all(|&n| n == 1),
        "the pool answered some frame twice: {central:?}"
    );
    // The link's own queue on the central broker, bound to detections only.
    let q = format!("{}.{device}.offload-results", pool.exchange);
    assert!(
        queue_exists(&q).await,
        "the offload link's results queue {q} is missing"
    );
    // The frames transport stayed home: the agent has no results queue of its own on
    // the central broker, only the offload link's.
    let own = format!("{}.{device}.results", pool.exchange);
    assert!(
        !queue_exists(&own).await,
        "{own} exists: the frames transport went central"
    );
    let mut agent = agent;
    let status = agent.stop_and_wait();
    let warnings: Vec<serde_json::Value> = agent
        .lines()
        .into_iter()
        .filter(|l| l.worker.is_none() && l.v["level"] != "INFO")
        .map(|l| l.v)
        .collect();
    assert!(
        status.success(),
        "agent exit {status:?}; warnings: {warnings:#?}"
    );
    assert!(centre.stop().success());
    cleanup(&pool, &["centre", &device]).await;
}

/// Whether `queue` exists on the test RabbitMQ (passive declare on a connection of its
/// own: a failed one closes the channel).
async fn queue_exists(queue: &str) -> bool {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let ok = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "OK".into()).await;
    ok
}
