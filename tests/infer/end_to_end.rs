//! The whole worker path over Mosquitto, as `edge-agent worker` wires it.

use super::*;

// ---------------------------------------------------------------- end to end

fn mqtt_addr() -> (String, u16) {
    let addr = std::env::var("EDGE_AGENT_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_string(), p.parse().unwrap())
}

/// A bystander on Mosquitto: sees every message under the test's prefix in the order
/// the broker passed them on (the agent's own link reads detections, not snapshots).
fn mqtt_client(id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (host, port) = mqtt_addr();
    let mut o = rumqttc::MqttOptions::new(id, host, port);
    o.set_max_packet_size(8 << 20, 8 << 20);
    o.set_keep_alive(Duration::from_secs(10));
    rumqttc::AsyncClient::new(o, 64)
}

/// The whole worker path on Mosquitto, as `edge-agent worker` wires it: the agent's
/// transport publishes a frame in the real message format, the worker's transport
/// takes it, `infer::broker::work_item` turns it into work, the loop answers through
/// `TransportSink`, and the agent's transport reads the detections back.
#[tokio::test]
async fn frame_published_on_mosquitto_comes_back_as_snapshot_then_detections() {
    use edge_agent::infer::broker::{work_item, TransportSink};
    use edge_agent::transport::{AgentTransport, TransportConfig, TransportKind, WorkerTransport};
    use edge_agent::values::SecretUrl;
    use edge_agent::wire::frame::{FrameHeader, FrameMessage, VERSION};
    use rumqttc::{Event, Packet, QoS};

    const DEVICE: &str = "dev-infer";
    let mut tcfg = TransportConfig {
        kind: TransportKind::Mqtt,
        topic_prefix: crate::common::broker::unique("edge-infer"),
        ..TransportConfig::default()
    };
    tcfg.mqtt_url = SecretUrl::parse(&crate::common::broker::mqtt_url()).unwrap();
    let prefix = tcfg.topic_prefix.clone();
    let links = CancellationToken::new();

    // The bystander, subscribed before anything is published.
    let (client, mut eloop) = mqtt_client(&format!("watch-{}", rand::random::<u32>()));
    client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, bytes::Bytes)>();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut sub_tx = Some(sub_tx);
        loop {
            match eloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = sub_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = seen_tx.send((p.topic.clone(), p.payload.clone()));
                }
                Ok(_) => {}
                Err(e) => panic!("bystander MQTT link: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), sub_rx)
        .await
        .expect("bystander subscribed")
        .unwrap();

    // The worker, wired as app/worker_process.rs wires it; the ack outcome is recorded
    // on its way to the real ack.
    let worker = Arc::new(
        WorkerTransport::connect(&tcfg, DEVICE, &links)
            .await
            .unwrap(),
    );
    assert!(
        worker.consuming(Duration::from_secs(10)).await,
        "worker subscribed"
    );
    let mut frames = worker.frames().unwrap();
    let (tx, rx) = mpsc::channel::<WorkItem>(8);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(AckOutcome, bool)>();
    tokio::spawn(async move {
        while let Some(d) = frames.next().await {
            let (settled_tx, settled_rx) = tokio::sync::oneshot::channel::<()>();
            let mut item = work_item(d, edge_agent::clock::unix_ns_now(), move || {
                let _ = settled_tx.send(());
            });
            let real = std::mem::replace(&mut item.ack, Box::new(|_| Box::pin(async {})));
            let ack = ack_tx.clone();
            item.ack = Box::new(move |o| {
                Box::pin(async move {
                    real(o.clone()).await;
                    let settled = settled_rx.await.is_ok();
                    let _ = ack.send((o, settled));
                })
            });
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let pipeline = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(frame_loop::run(
        pipeline,
        EventsConfig::default().snapshots(),
        rx,
        TransportSink::new(worker.clone(), DEVICE),
        stop.clone(),
    ));

    // The agent.
    let agent = AgentTransport::connect(&tcfg, DEVICE, &links)
        .await
        .unwrap();
    let mut results = agent.results().unwrap();
    let frame = scene(640, 480, &[(300, 200, 64, RED)]);
    agent
        .publish_frame(FrameMessage {
            header: FrameHeader {
                version: VERSION,
                device: DEVICE.into(),
                camera: "cam1".into(),
                event_id: "cam1-1".into(),
                seq: 7,
                captured: 1_700_000_000_007_000_000,
                width: 640,
                height: 480,
                source_width: 0,
                source_height: 0,
                regions: Vec::new(),
                boxes: vec![[0.4, 0.4, 0.2, 0.2]],
                stamps: vec![],
                cold_start: false,
            },
            jpeg: bytes::Bytes::from(jpeg_of(&frame)),
        })
        .unwrap();

    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = results.next().await.expect("agent link open");
            if r.kind == "detections" {
                return r;
            }
        }
    })
    .await
    .expect("detections reach the agent over Mosquitto");
    assert_eq!((r.camera.as_str(), r.seq), ("cam1", Some(7)), "{r:?}");
    assert!(r.first_answer, "the agent was waiting for this frame");
    let d: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    crate::common::schema::check("detections.v2.json", &d);
    assert_eq!(d["camera"], "cam1");
    assert_eq!(d["seq"], 7);
    let items = d["detections"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{d}");
    assert_eq!(items[0]["class"], "fire");
    for (k, want) in [("x", 300.0), ("y", 200.0), ("w", 64.0), ("h", 64.0)] {
        let got = items[0][k].as_f64().unwrap();
        assert!((got - want).abs() <= 1.0, "{k}: {got} vs {want} in {d}");
    }
    assert!(items[0]["score"].as_f64().unwrap() > 0.9);

    // On the wire: the frame, then the snapshot the detections name, then the detections.
    let cam = format!("{prefix}/{DEVICE}/cam1/");
    let snap_topic = format!("snapshots/{}", d["snapshot"].as_str().unwrap());
    let mut topics = Vec::new();
    while !topics.iter().any(|t| t == "detections") {
        let (topic, body) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .expect("the bystander sees the detections too")
            .unwrap();
        let Some(kind) = topic.strip_prefix(&cam) else {
            continue;
        };
        if kind.starts_with("snapshots/") {
            assert!(decode_jpeg(&body).is_ok(), "snapshot is a JPEG");
        }
        topics.push(kind.to_string());
    }
    let snap_at = topics
        .iter()
        .position(|t| *t == snap_topic)
        .unwrap_or_else(|| panic!("snapshot {snap_topic} published before: {topics:?}"));
    let det_at = topics.iter().position(|t| t == "detections").unwrap();
    assert!(snap_at < det_at, "snapshot before detections: {topics:?}");
    let (outcome, settled) = tokio::time::timeout(Duration::from_secs(5), ack_rx.recv())
        .await
        .expect("the frame is acked")
        .unwrap();
    assert_eq!(outcome, AckOutcome::Done);
    assert!(settled, "the delivery was settled with the broker");
    stop.cancel();
    assert!(agent.close(Duration::from_secs(5)).await, "agent flushed");
    assert!(worker.close(Duration::from_secs(5)).await, "worker flushed");
    links.cancel();
}
