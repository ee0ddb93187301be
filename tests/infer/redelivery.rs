//! Frames a worker hands back come back to it, on RabbitMQ, Mosquitto and the
//! embedded broker.

use super::*;

/// The real transport sink, failing its detections while `failing` is set (a broker
/// that refuses results on demand is what the real one can't be made to do).
struct FlakySink {
    inner: edge_agent::infer::broker::TransportSink,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl ResultSink for FlakySink {
    async fn detections(&self, m: &DetectionsMessage) -> Result<Confirmation, SinkError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TransportError::Closed.into());
        }
        self.inner.detections(m).await
    }
    async fn snapshot(&self, s: &Snapshot) -> Result<(), SinkError> {
        self.inner.snapshot(s).await
    }
}

/// A worker (the real adapter, loop and model) whose sink fails hands back more frames
/// than its prefetch, goes on receiving frames, and once the sink works every frame,
/// the handed-back ones included, is answered.
async fn frames_left_for_redelivery_come_back(
    cfg: edge_agent::transport::TransportConfig,
) -> Vec<(u64, bool)> {
    use edge_agent::transport::{AgentTransport, WorkerTransport};
    use edge_agent::wire::frame::{FrameHeader, FrameMessage, VERSION};
    const DEVICE: &str = "dev-requeue";
    const WAIT: Duration = Duration::from_secs(30);
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let wcfg = agent.worker_config(&cfg);
    let answered = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut results = agent.results().unwrap();
    let out = answered.clone();
    tokio::spawn(async move {
        while let Some(r) = results.next().await {
            if r.first_answer {
                out.lock().unwrap().insert(r.seq.unwrap());
            }
        }
    });
    let worker = Arc::new(
        WorkerTransport::connect(&wcfg, DEVICE, &Default::default())
            .await
            .unwrap(),
    );
    assert!(worker.consuming(WAIT).await, "worker subscribed");
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sink = FlakySink {
        inner: edge_agent::infer::broker::TransportSink::new(worker.clone(), DEVICE),
        failing: failing.clone(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(8);
    let mut frames = worker.frames().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(d) = frames.next().await {
            log.lock().unwrap().push((d.msg.header.seq, d.redelivered));
            let item = edge_agent::infer::broker::work_item(d, 0, || {});
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let pipeline = Pipeline::new(&cfg_of_test_model()).unwrap();
    tokio::spawn(frame_loop::run(
        pipeline,
        EventsConfig::default().snapshots(),
        rx,
        sink,
        CancellationToken::new(),
    ));
    let jpeg = bytes::Bytes::from(jpeg_of(&scene(160, 120, &[(50, 30, 30, RED)])));
    let frame = |seq: u64| FrameMessage {
        header: FrameHeader {
            version: VERSION,
            device: DEVICE.into(),
            camera: "cam-r".into(),
            event_id: "cam-r-1".into(),
            seq,
            captured: edge_agent::clock::unix_ns_now(),
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
    };
    let prefetch = cfg.prefetch.get() as u64;
    let n = prefetch + 2;
    for seq in 0..n {
        agent.publish_frame(frame(seq)).unwrap();
    }
    // More deliveries than the prefetch, all failing: what was handed back made room.
    wait::until_async("deliveries past the prefetch", WAIT, || {
        seen.lock().unwrap().len() as u64 > prefetch + 1
    })
    .await;
    wait::until_async("more frames handed back than the prefetch", WAIT, || {
        worker.stats().get("requeued") > prefetch
    })
    .await;
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    agent.publish_frame(frame(n)).unwrap();
    wait::until_async("every frame answered", WAIT, || {
        answered.lock().unwrap().len() as u64 == n + 1
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|&(s, _)| s == n), "the new frame arrived");
    seen
}

fn requeue_cfg(
    kind: edge_agent::transport::TransportKind,
) -> edge_agent::transport::TransportConfig {
    use crate::common::broker::unique;
    let mut c = edge_agent::transport::TransportConfig {
        kind,
        topic_prefix: unique("edge"),
        frames_queue: unique("frames"),
        events_exchange: unique("events"),
        ..Default::default()
    };
    c.redeliver_after = edge_agent::values::Dur(Duration::from_secs(1));
    // MQTT: the agent gives a frame up after this many resends; a slow failing phase
    // on a loaded machine must not use them all up.
    c.redeliver_max = IntIn::new(10).unwrap();
    c.max_payload = IntIn::new(256 * 1024).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_results_fail_nacks_its_frames_and_rabbitmq_redelivers_them() {
    let _serial = crate::common::broker::rabbit_serial().await;
    let mut cfg = requeue_cfg(edge_agent::transport::TransportKind::Amqp);
    cfg.amqp_url =
        edge_agent::values::SecretUrl::parse(&crate::common::broker::amqp_url()).unwrap();
    let seen = frames_left_for_redelivery_come_back(cfg.clone()).await;
    assert!(
        seen.iter().any(|&(_, redelivered)| redelivered),
        "a requeued frame came back flagged redelivered: {seen:?}"
    );
    let conn = lapin::Connection::connect(
        &crate::common::broker::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    edge_agent::transport::amqp::delete_topology(&ch, &cfg, "dev-requeue").await;
}

/// MQTT has no nack: the frame is acked in order (rumqttd drops a client whose ack is
/// out of order) and the agent publishes it again after `redeliver_after`.
async fn requeue_on_mqtt(cfg: edge_agent::transport::TransportConfig) {
    let seen = frames_left_for_redelivery_come_back(cfg).await;
    let first = seen.iter().filter(|&&(s, _)| s == 0).count();
    assert!(
        first >= 2,
        "frame 0 came back after it was handed back: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_results_fail_gets_its_frames_again_on_mosquitto() {
    let mut cfg = requeue_cfg(edge_agent::transport::TransportKind::Mqtt);
    cfg.mqtt_url =
        edge_agent::values::SecretUrl::parse(&crate::common::broker::mqtt_url()).unwrap();
    requeue_on_mqtt(cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_results_fail_gets_its_frames_again_on_the_embedded_broker() {
    requeue_on_mqtt(requeue_cfg(edge_agent::transport::TransportKind::Embedded)).await;
}
