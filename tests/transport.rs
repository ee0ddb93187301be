//! Escalation transport against real brokers: the embedded rumqttd, Mosquitto (the
//! system one, or a private process when the test restarts it) and RabbitMQ.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edge_agent::clock::unix_ns_now;
use edge_agent::image::encode_rgb;
use edge_agent::transport::amqp::{dead_letter_names, declare_topology};
use edge_agent::transport::{
    AgentTransport, Frames, TransportConfig, TransportKind, WorkerTransport,
};
use edge_agent::values::{Dur, IntIn, SecretUrl};
use edge_agent::wire::frame::{encode, FrameHeader, FrameMessage, VERSION};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::common::broker::{
    amqp_url, mqtt_url, rabbit_serial, rabbitmqctl, unique, Mosquitto, TestPki,
};
use crate::common::wait;

const DEVICE: &str = "dev-t";
const WAIT: Duration = Duration::from_secs(15);

fn base(kind: TransportKind) -> TransportConfig {
    let mut c = TransportConfig {
        kind,
        topic_prefix: unique("edge"),
        frames_queue: unique("frames"),
        events_exchange: unique("events"),
        ..TransportConfig::default()
    };
    c.redeliver_after = Dur(Duration::from_secs(1));
    c.max_payload = IntIn::new(256 * 1024).unwrap();
    c
}

fn mqtt_cfg(url: &str) -> TransportConfig {
    let mut c = base(TransportKind::Mqtt);
    c.mqtt_url = SecretUrl::parse(url).unwrap();
    c
}

fn amqp_cfg() -> TransportConfig {
    let mut c = base(TransportKind::Amqp);
    c.amqp_url = SecretUrl::parse(&amqp_url()).unwrap();
    c
}

/// Deletes the durable queues and exchanges a test declared on the shared RabbitMQ.
async fn amqp_cleanup(cfg: &TransportConfig) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    edge_agent::transport::amqp::delete_topology(&ch, cfg, DEVICE).await;
    let _ = conn.close(200, "OK".into()).await;
}

/// The worker's view of an agent on the embedded broker (its port and credentials).
fn worker_cfg(agent_cfg: &TransportConfig, agent: &AgentTransport) -> TransportConfig {
    agent.worker_config(agent_cfg)
}

fn small_jpeg() -> Bytes {
    let (w, h) = (32u32, 24u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    Bytes::from(encode_rgb(&rgb, w, h, 80).unwrap())
}

fn frame(camera: &str, seq: u64, jpeg: &Bytes) -> FrameMessage {
    FrameMessage {
        header: FrameHeader {
            version: VERSION,
            device: DEVICE.into(),
            camera: camera.into(),
            event_id: "cam-1-1".into(),
            seq,
            captured: unix_ns_now(),
            width: 32,
            height: 24,
            source_width: 0,
            source_height: 0,
            regions: Vec::new(),
            boxes: vec![[0.25, 0.25, 0.5, 0.5]],
            stamps: vec![],
            cold_start: false,
        },
        jpeg: jpeg.clone(),
    }
}

/// A worker connected and subscribed to the frames (its SUBACK arrived).
async fn subscribed_worker(cfg: &TransportConfig) -> WorkerTransport {
    let worker = WorkerTransport::connect(cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    assert!(worker.consuming(WAIT).await, "worker subscribed");
    worker
}

/// A worker that answers every frame with detections carrying its seq, publishes
/// them confirmed, then acks. Returns the seqs it processed.
fn serve(worker: WorkerTransport) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let mut frames = worker.frames().unwrap();
        while let Some(d) = frames.next().await {
            let h = d.msg.header.clone();
            // Recorded before the answer goes out, so a test that saw the answer sees it.
            out.lock().unwrap().push(h.seq);
            let body = format!("{{\"seq\":{},\"detections\":[]}}", h.seq);
            worker
                .publish_result_confirmed(&h.device, &h.camera, "detections", Bytes::from(body))
                .await
                .unwrap();
            d.ack().await.unwrap();
        }
    });
    (seen, task)
}

/// Collects the agent's results in the background: seqs answered for the first time.
fn collect_answers(agent: &AgentTransport) -> Arc<Mutex<BTreeSet<u64>>> {
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let out = answered.clone();
    let mut results = agent.results().unwrap();
    tokio::spawn(async move {
        while let Some(r) = results.next().await {
            if r.first_answer {
                out.lock().unwrap().insert(r.seq.unwrap());
            }
        }
    });
    answered
}

async fn round_trip(cfg: TransportConfig) {
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let wcfg = worker_cfg(&cfg, &agent);
    let answered = collect_answers(&agent);
    // The worker subscribes before the first frame (MQTT has no queue before it).
    let (seen, _task) = serve(subscribed_worker(&wcfg).await);
    // A burst larger than the brokers' in-flight windows: the worker must keep
    // answering while more frames than it can hold arrive.
    let n = 200;
    let jpeg = small_jpeg();
    for seq in 0..n {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    wait::until_async("every answer", WAIT, || {
        answered.lock().unwrap().len() == n as usize
    })
    .await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert_eq!(agent.stats().get("redelivered"), 0);
    let backlog = agent.backlog().await.unwrap();
    assert_eq!(backlog.unanswered, 0, "{backlog:?}");
    if cfg.kind == TransportKind::Amqp {
        assert_eq!(backlog.ready, Some(0), "{backlog:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_results_round_trip_on_the_embedded_broker() {
    round_trip(base(TransportKind::Embedded)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_results_round_trip_on_mosquitto() {
    round_trip(mqtt_cfg(&mqtt_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_results_round_trip_on_rabbitmq() {
    let _serial = rabbit_serial().await;
    let cfg = amqp_cfg();
    round_trip(cfg.clone()).await;
    amqp_cleanup(&cfg).await;
}

async fn shared_subscription(cfg: TransportConfig) {
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let wcfg = worker_cfg(&cfg, &agent);
    let answered = collect_answers(&agent);
    let (seen1, _t1) = serve(subscribed_worker(&wcfg).await);
    let (seen2, _t2) = serve(subscribed_worker(&wcfg).await);
    let jpeg = small_jpeg();
    for seq in 0..20 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    wait::until_async("20 answers", WAIT, || answered.lock().unwrap().len() == 20).await;
    // This window is what is tested, not a wait for something to happen: a duplicate
    // delivery can only be ruled out by giving it time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a, b) = (seen1.lock().unwrap().clone(), seen2.lock().unwrap().clone());
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "worker 1 {a:?}, worker 2 {b:?}"
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both workers share: {a:?} / {b:?}"
    );
    assert_eq!(agent.stats().get("redelivered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_frames_without_duplicates_on_mosquitto() {
    shared_subscription(mqtt_cfg(&mqtt_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_frames_without_duplicates_on_the_embedded_broker() {
    shared_subscription(base(TransportKind::Embedded)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_agent_reconnects_after_a_mosquitto_restart_and_every_buffered_frame_is_answered() {
    let mut broker = Mosquitto::start();
    let mut cfg = mqtt_cfg(&broker.url());
    cfg.buffer_size = IntIn::new(64).unwrap();
    // The worker is ephemeral (clean session): frames sent before it is back are
    // published again by the agent, as often as the restart needs.
    cfg.redeliver_max = IntIn::new(10).unwrap();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let answered = collect_answers(&agent);
    let (_seen, _task) = serve(subscribed_worker(&cfg).await);
    wait::until_async("agent connected", WAIT, || agent.is_connected()).await;
    let jpeg = small_jpeg();
    for seq in 0..10 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
        // Paced as a camera would: frames in flight when the broker goes, not a wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.stop();
    wait::until_async("agent sees the loss", WAIT, || !agent.is_connected()).await;
    for seq in 10..30 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    // The outage is what is tested: frames published while the broker is down wait
    // in the agent's buffer for this long; nothing is awaited here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();
    for seq in 30..40 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
        // Paced as a camera would: frames in flight when the broker goes, not a wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait::until_async("40 answers", Duration::from_secs(30), || {
        answered.lock().unwrap().len() == 40
    })
    .await;
    // By identity: the frames answered are the frames sent.
    assert_eq!(
        *answered.lock().unwrap(),
        (0..40).collect::<BTreeSet<u64>>()
    );
    assert!(agent.stats().get("reconnects") >= 1);
    assert_eq!(agent.stats().get("dropped.frame_overflow"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publisher_reconnects_after_rabbitmq_restart_and_every_buffered_frame_arrives() {
    let _serial = rabbit_serial().await;
    let mut cfg = amqp_cfg();
    cfg.buffer_size = IntIn::new(64).unwrap();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    wait::until_async("agent connected", WAIT, || agent.is_connected()).await;
    let jpeg = small_jpeg();
    for seq in 0..10 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    assert!(agent.flush(WAIT).await);
    rabbitmqctl(&["stop_app"]);
    let restarted = async {
        wait::until_async("agent sees the loss", WAIT, || !agent.is_connected()).await;
        for seq in 10..30 {
            agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
        }
    };
    restarted.await;
    rabbitmqctl(&["start_app"]);
    for seq in 30..40 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    assert!(
        agent.flush(Duration::from_secs(30)).await,
        "publisher drained"
    );
    assert!(agent.stats().get("reconnects") >= 1);
    // Every frame (durable queue, persistent messages) reaches a worker started now.
    let answered = collect_answers(&agent);
    let (seen, _task) = serve(
        WorkerTransport::connect(&cfg, DEVICE, &Default::default())
            .await
            .unwrap(),
    );
    wait::until_async("40 answers", Duration::from_secs(30), || {
        answered.lock().unwrap().len() == 40
    })
    .await;
    // By identity: the frames answered are the frames sent.
    assert_eq!(
        *answered.lock().unwrap(),
        (0..40).collect::<BTreeSet<u64>>()
    );
    // By identity (a frame republished after the restart may come twice: at least once).
    let distinct: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
    assert_eq!(distinct, (0..40).collect::<BTreeSet<u64>>());
    amqp_cleanup(&cfg).await;
}

/// The transport settings a child worker process needs, as TOML (URLs unredacted).
fn child_toml(c: &TransportConfig) -> String {
    let kind = match c.kind {
        TransportKind::Embedded => "embedded",
        TransportKind::Mqtt => "mqtt",
        TransportKind::Amqp => "amqp",
    };
    format!(
        "kind = {kind:?}\nmqtt_url = {:?}\namqp_url = {:?}\ntopic_prefix = {:?}\n\
         frames_queue = {:?}\nevents_exchange = {:?}\nembedded_port = {}\nmax_payload = {}\n",
        c.mqtt_url.expose(),
        c.amqp_url.expose(),
        c.topic_prefix,
        c.frames_queue,
        c.events_exchange,
        c.embedded_port.get(),
        c.max_payload.get()
    )
}

/// Not a test on its own: the worker process that the redelivery tests SIGKILL while
/// it holds a frame. It prints `GOT <seq>` and then waits, never acking. Run without
/// its parent (`--include-ignored`) it fails: it has nothing to test on its own, and
/// passing would claim otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the redelivery tests"]
async fn child_worker_that_holds_one_frame() {
    let text = std::env::var("EDGE_TEST_CHILD_TRANSPORT").expect(
        "EDGE_TEST_CHILD_TRANSPORT unset: this is the child process of the redelivery \
         tests, started by spawn_child_worker, not a test to run on its own",
    );
    let cfg: TransportConfig = toml::from_str(&text).unwrap();
    let worker = WorkerTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let mut frames = worker.frames().unwrap();
    let d = frames.next().await.unwrap();
    println!("GOT {}", d.msg.header.seq);
    std::future::pending::<()>().await;
}

/// Starts [`child_worker_that_holds_one_frame`] and returns it with its stdout lines.
fn spawn_child_worker(
    cfg: &TransportConfig,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transport::child_worker_that_holds_one_frame",
            "--ignored",
            "--nocapture",
        ])
        .env("EDGE_TEST_CHILD_TRANSPORT", child_toml(cfg))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn redelivery_after_worker_death(cfg: TransportConfig) {
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let wcfg = worker_cfg(&cfg, &agent);
    let answered = collect_answers(&agent);
    let (mut child, mut lines) = spawn_child_worker(&wcfg);
    // Publish until the child is subscribed and holds the frame (MQTT keeps nothing
    // for a subscriber that is not there yet; the agent's redelivery covers it).
    agent
        .publish_frame(frame("cam-k", 7, &small_jpeg()))
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        lines.find_map(|l| l.ok().filter(|l| l.starts_with("GOT ")))
    });
    let got = tokio::time::timeout(WAIT, got)
        .await
        .expect("the child worker gets the frame")
        .unwrap();
    assert_eq!(got.as_deref(), Some("GOT 7"));
    // The worker dies holding the frame: no ack, no result, no goodbye.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let second = WorkerTransport::connect(&wcfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let (seen, _task) = serve(second);
    wait::until_async("frame answered by the second worker", WAIT, || {
        answered.lock().unwrap().contains(&7)
    })
    .await;
    assert_eq!(seen.lock().unwrap().as_slice(), &[7]);
    if cfg.kind != TransportKind::Amqp {
        assert!(agent.stats().get("redelivered") >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_redelivered_when_its_worker_is_sigkilled_before_acking_on_rabbitmq() {
    let _serial = rabbit_serial().await;
    let cfg = amqp_cfg();
    redelivery_after_worker_death(cfg.clone()).await;
    amqp_cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_republished_when_its_worker_is_sigkilled_before_answering_on_mosquitto() {
    redelivery_after_worker_death(mqtt_cfg(&mqtt_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_republished_when_its_worker_is_sigkilled_before_answering_on_the_embedded_broker(
) {
    redelivery_after_worker_death(base(TransportKind::Embedded)).await;
}

/// Garbage, a truncated frame and an oversized frame, then a good one.
fn bad_messages(cfg: &TransportConfig, jpeg: &Bytes) -> Vec<Vec<u8>> {
    let good = encode(&frame("cam-b", 1, jpeg));
    let mut big = vec![0x11u8; cfg.max_payload.as_usize() + 10];
    big[0] = 0xFF;
    big[1] = 0xD8;
    let n = big.len();
    big[n - 2] = 0xFF;
    big[n - 1] = 0xD9;
    let mut oversized = frame("cam-b", 2, jpeg);
    oversized.jpeg = Bytes::from(big);
    vec![
        b"definitely not a frame".to_vec(),
        good[..good.len() / 2].to_vec(),
        encode(&oversized).to_vec(),
    ]
}

/// The good frame (seq 9) is the only one delivered; the three bad ones are counted.
async fn expect_only_the_good_frame(frames: &mut Frames, worker: &WorkerTransport) {
    let d = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.msg.header.seq, 9,
        "only the good frame reaches the worker"
    );
    d.ack().await.unwrap();
    assert_rejections(worker);
}

fn assert_rejections(worker: &WorkerTransport) {
    let s = worker.stats();
    assert_eq!(s.get("rejected.bad_magic"), 1, "{:?}", s.snapshot());
    assert_eq!(s.get("rejected.truncated"), 1, "{:?}", s.snapshot());
    assert_eq!(s.get("rejected.oversized"), 1, "{:?}", s.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_dead_lettered_with_a_counted_reason_and_the_consumer_goes_on_on_rabbitmq() {
    let _serial = rabbit_serial().await;
    let cfg = amqp_cfg();
    let worker = WorkerTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let mut frames = worker.frames().unwrap();
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_topology(&ch, &cfg).await.unwrap();
    let jpeg = small_jpeg();
    let mut msgs = bad_messages(&cfg, &jpeg);
    msgs.push(encode(&frame("cam-b", 9, &jpeg)).to_vec());
    for m in msgs {
        ch.basic_publish(
            "".into(),
            cfg.frames_queue.as_str().into(),
            BasicPublishOptions::default(),
            &m,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    expect_only_the_good_frame(&mut frames, &worker).await;
    let (_, dead) = dead_letter_names(&cfg.frames_queue);
    let mut dead_letters = Vec::new();
    for _ in 0..50 {
        match ch
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => dead_letters.push(m.delivery.data.len()),
            None if dead_letters.len() == 3 => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        dead_letters.len(),
        3,
        "three rejected messages dead-lettered"
    );
    amqp_cleanup(&cfg).await;
}

async fn bad_frames_dropped_on_mqtt(cfg: TransportConfig, url: Option<String>) {
    // On the embedded broker an agent owns it; on Mosquitto the worker is enough.
    let agent = match cfg.kind {
        TransportKind::Embedded => Some(
            AgentTransport::connect(&cfg, DEVICE, &Default::default())
                .await
                .unwrap(),
        ),
        _ => None,
    };
    let wcfg = match &agent {
        Some(a) => worker_cfg(&cfg, a),
        None => cfg.clone(),
    };
    let url = url.unwrap_or_else(|| wcfg.mqtt_url.expose().to_string());
    let worker = WorkerTransport::connect(&wcfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let mut frames = worker.frames().unwrap();
    assert!(worker.consuming(WAIT).await, "worker subscribed");
    let jpeg = small_jpeg();
    let mut msgs = bad_messages(&cfg, &jpeg);
    msgs.push(encode(&frame("cam-b", 9, &jpeg)).to_vec());
    let topic = format!("{}/{DEVICE}/frames", cfg.topic_prefix);
    raw_mqtt_publish(&url, &topic, msgs).await;
    expect_only_the_good_frame(&mut frames, &worker).await;
}

/// Publishes raw payloads with a plain rumqttc client, QoS 1, and waits for the acks.
async fn raw_mqtt_publish(url: &str, topic: &str, payloads: Vec<Vec<u8>>) {
    let u = url::Url::parse(url).unwrap();
    let mut opts = rumqttc::MqttOptions::new(
        unique("raw"),
        u.host_str().unwrap(),
        u.port().unwrap_or(1883),
    );
    opts.set_max_packet_size(8 << 20, 8 << 20);
    if !u.username().is_empty() {
        opts.set_credentials(u.username(), u.password().unwrap_or(""));
    }
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    let n = payloads.len();
    for p in payloads {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, p)
            .await
            .unwrap();
    }
    let mut acks = 0;
    tokio::time::timeout(WAIT, async {
        while acks < n {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = el.poll().await.unwrap() {
                acks += 1;
            }
        }
    })
    .await
    .expect("raw publishes acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_dropped_with_a_counted_reason_and_the_consumer_goes_on_on_mosquitto() {
    bad_frames_dropped_on_mqtt(mqtt_cfg(&mqtt_url()), Some(mqtt_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_dropped_with_a_counted_reason_and_the_consumer_goes_on_on_the_embedded_broker(
) {
    bad_frames_dropped_on_mqtt(base(TransportKind::Embedded), None).await;
}

/// Publishes every kind of result and event of two cameras.
async fn publish_mixed_events(t: &AgentTransport) {
    // Snapshots come from workers; the agent's handle sends the same result kind.
    t.publish_result("cam-1", "snapshots/5", small_jpeg())
        .unwrap();
    for (camera, kind) in [
        ("cam-1", "motion"),
        ("cam-1", "detections"),
        ("cam-1", "fire"),
        ("cam-1", "events/gun"),
        ("cam-2", "events/fire"),
        ("cam-2", "knife"),
    ] {
        let body = format!("{{\"camera\":\"{camera}\",\"kind\":\"{kind}\"}}");
        t.publish_result(camera, kind, Bytes::from(body)).unwrap();
    }
    assert!(t.flush(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_to_fire_events_receives_only_fire_events_on_rabbitmq() {
    let _serial = rabbit_serial().await;
    let cfg = amqp_cfg();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_topology(&ch, &cfg).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        cfg.events_exchange.as_str().into(),
        "*.*.fire".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish_mixed_events(&agent).await;
    let mut keys = Vec::new();
    while let Some(m) = ch
        .basic_get(q.name().clone(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        keys.push(m.delivery.routing_key.to_string());
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{DEVICE}.cam-1.fire"),
            format!("{DEVICE}.cam-2.fire")
        ]
    );
    amqp_cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_fire_events_receives_only_fire_events_on_mosquitto() {
    let cfg = mqtt_cfg(&mqtt_url());
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let u = url::Url::parse(&mqtt_url()).unwrap();
    let opts = rumqttc::MqttOptions::new(unique("fire"), u.host_str().unwrap(), u.port().unwrap());
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    let filter = format!("{}/+/+/events/fire", cfg.topic_prefix);
    client
        .subscribe(&filter, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let topics = Arc::new(Mutex::new(Vec::new()));
    let sink = topics.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(ev) = el.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    sink.lock().unwrap().push(p.topic)
                }
                _ => {}
            }
        }
    });
    subscribed_rx.await.unwrap();
    publish_mixed_events(&agent).await;
    // A last fire event marks the end: once it is in, everything published before it
    // over the same connection is in too, so nothing is waited for by the clock.
    agent
        .publish_result("cam-end", "events/fire", Bytes::from_static(b"{}"))
        .unwrap();
    assert!(agent.flush(WAIT).await);
    let p = &cfg.topic_prefix;
    let end = format!("{p}/{DEVICE}/cam-end/events/fire");
    wait::until_async("the end marker", WAIT, || {
        topics.lock().unwrap().contains(&end)
    })
    .await;
    let mut got = topics.lock().unwrap().clone();
    got.retain(|t| *t != end);
    got.sort();
    assert_eq!(
        got,
        [
            format!("{p}/{DEVICE}/cam-1/events/fire"),
            format!("{p}/{DEVICE}/cam-2/events/fire")
        ]
    );
}

/// A subscriber with a persistent session on every topic under `prefix`: messages
/// published while it is away are queued by the broker and arrive when it returns.
fn persistent_subscriber(
    port: u16,
    id: &str,
    prefix: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, el) = rumqttc::AsyncClient::new(opts, 16);
    client
        .try_subscribe(format!("{prefix}/#"), rumqttc::QoS::AtLeastOnce)
        .unwrap();
    (client, el)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_away_the_buffer_keeps_events_and_the_newest_frames() {
    let mut broker = Mosquitto::start();
    let mut cfg = mqtt_cfg(&broker.url());
    cfg.buffer_size = IntIn::new(5).unwrap();
    cfg.redeliver_max = IntIn::new(0).unwrap();
    let sub_id = unique("all");
    // Register the subscriber's session, then take the broker away.
    let (_c, mut el) = persistent_subscriber(broker.port, &sub_id, &cfg.topic_prefix);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    drop(el);
    broker.stop();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let jpeg = small_jpeg();
    for seq in 0..4 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    for i in 0..3 {
        agent
            .publish_result("cam-a", "fire", Bytes::from(format!("{{\"n\":{i}}}")))
            .unwrap();
    }
    for seq in 4..10 {
        agent.publish_frame(frame("cam-a", seq, &jpeg)).unwrap();
    }
    // 5 places: 3 events and the 2 newest frames; 8 frames dropped and counted.
    assert_eq!(agent.stats().get("dropped.frame_overflow"), 8);
    assert_eq!(agent.stats().get("dropped.event_overflow"), 0);
    broker.restart();
    assert!(agent.flush(WAIT).await, "the agent reconnected and flushed");
    let (_c, mut el) = persistent_subscriber(broker.port, &sub_id, &cfg.topic_prefix);
    let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let frames_topic = format!("{}/{DEVICE}/frames", cfg.topic_prefix);
    let events_topic = format!("{}/{DEVICE}/cam-a/events/fire", cfg.topic_prefix);
    tokio::time::timeout(WAIT, async {
        while got.get(&frames_topic).map_or(0, |f| f.len()) < 2
            || got.get(&events_topic).map_or(0, |f| f.len()) < 3
        {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = el.poll().await.unwrap()
            {
                got.entry(p.topic).or_default().push(p.payload.to_vec());
            }
        }
    })
    .await
    .expect("the buffered messages arrive");
    let seqs: BTreeSet<u64> = got[&frames_topic]
        .iter()
        .map(|f| {
            edge_agent::wire::frame::decode(f, 1 << 20)
                .unwrap()
                .header
                .seq
        })
        .collect();
    assert_eq!(
        seqs,
        BTreeSet::from([8, 9]),
        "only the newest frames survive"
    );
    let events: Vec<_> = got[&events_topic]
        .iter()
        .map(|e| String::from_utf8_lossy(e).to_string())
        .collect();
    assert_eq!(events, [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_status_says_offline_at_a_clean_close_and_lost_by_last_will_on_mosquitto() {
    let cfg = mqtt_cfg(&mqtt_url());
    let u = url::Url::parse(&mqtt_url()).unwrap();
    let opts = rumqttc::MqttOptions::new(unique("st"), u.host_str().unwrap(), u.port().unwrap());
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    let topic = format!("{}/{DEVICE}/status", cfg.topic_prefix);
    client
        .subscribe(&topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = seen.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(ev) = el.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&p.payload).into());
            } else if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = ev {
                if let Some(s) = subscribed.take() {
                    let _ = s.send(());
                }
            }
        }
    });
    subscribed_rx.await.expect("the watcher subscribed");
    let count = |what: &str| seen.lock().unwrap().iter().filter(|s| *s == what).count();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    wait::until_async("online", WAIT, || count("online") == 1).await;
    // A clean close says offline itself and sends DISCONNECT: no will.
    assert!(agent.close(WAIT).await, "the close was not clean");
    wait::until_async("offline", WAIT, || count("offline") == 1).await;
    drop(agent);
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    wait::until_async("online again", WAIT, || count("online") == 2).await;
    drop(agent); // vanishes without DISCONNECT: the broker sends the will
    wait::until_async("lost by will", WAIT, || count("lost") == 1).await;
    // In order: the will of the second connection is the only one.
    assert_eq!(
        *seen.lock().unwrap(),
        ["online", "offline", "online", "lost"],
        "a clean close must not leave a will behind"
    );
    // Clear the retained status so the broker keeps nothing of the test.
    client
        .publish(&topic, rumqttc::QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
    // The watcher sees the empty retained message: the broker has it.
    wait::until_async("the retained status cleared", WAIT, || {
        seen.lock().unwrap().iter().any(String::is_empty)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_results_round_trip_over_mqtts_with_a_custom_ca() {
    let pki = TestPki::new();
    let broker = Mosquitto::start_tls(&pki);
    let mut cfg = mqtt_cfg(&format!("mqtts://localhost:{}", broker.port));
    cfg.ca_file = Some(pki.ca());
    round_trip(cfg.clone()).await;
    // A client that does not trust this CA never connects.
    cfg.ca_file = None;
    let stranger = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    wait::until_async("a refused handshake", WAIT, || {
        stranger.stats().get("connect_failures") >= 1
    })
    .await;
    assert!(!stranger.is_connected());
}

/// A broker password with every character that URLs and form encoding treat specially,
/// given through `transport.password_file`, opens a private Mosquitto that lets in only
/// that user; a wrong password is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_with_url_special_characters_logs_in_to_mosquitto() {
    let password = "p+a&s%25s @w:o/rd#?";
    let broker = Mosquitto::start_with_password("edge", password);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broker-pw"), format!("{password}\n")).unwrap();
    let text = format!(
        "[device]\nid = \"{DEVICE}\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://gate/s\"\n\
         [transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://edge@127.0.0.1:{}\"\n\
         password_file = \"broker-pw\"\n",
        broker.port
    );
    let loaded = edge_agent::config::load::load_texts(
        &[("agent.toml".into(), text)],
        &[],
        Some(dir.path().to_path_buf()),
    )
    .unwrap_or_else(|e| panic!("config loads: {e}"));
    let mut cfg = mqtt_cfg("mqtt://unused");
    cfg.mqtt_url = loaded.config.transport.mqtt_url.clone();
    round_trip(cfg.clone()).await;

    cfg.mqtt_url =
        SecretUrl::parse(&format!("mqtt://edge:wrong@127.0.0.1:{}", broker.port)).unwrap();
    let refused = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    wait::until_async("a refused connection", WAIT, || {
        refused.stats().get("connect_failures") >= 1
    })
    .await;
    assert!(!refused.is_connected());
}

/// Connects a plain rumqttc client as `user`/`password` (none: anonymous) and says
/// whether the broker accepted it with a CONNACK.
async fn mqtt_login(port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
    let mut opts = rumqttc::MqttOptions::new(unique("login"), "127.0.0.1", port);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 4);
    let polled = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    return if a.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("refused: {:?}", a.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(format!("refused: {e}")),
            }
        }
    })
    .await;
    polled.unwrap_or_else(|_| Err("no answer".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_refuses_anonymous_clients_and_wrong_passwords() {
    let mut cfg = base(TransportKind::Embedded);
    // A downstream service's login, from the configuration.
    cfg.mqtt_url = SecretUrl::parse("mqtt://downstream:d%40wn@127.0.0.1").unwrap();
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let port = agent.broker_addr().unwrap().port();
    let wcfg = agent.worker_config(&cfg);
    let url = url::Url::parse(wcfg.mqtt_url.expose()).unwrap();
    let (user, password) = (url.username(), url.password().unwrap());
    assert!(password.len() >= 32, "a generated password");
    assert_eq!(mqtt_login(port, Some((user, password))).await, Ok(()));
    assert_eq!(mqtt_login(port, Some(("downstream", "d@wn"))).await, Ok(()));
    let anonymous = mqtt_login(port, None).await;
    assert!(anonymous.is_err(), "anonymous client accepted");
    let wrong = mqtt_login(port, Some((user, "not-the-password"))).await;
    assert!(wrong.is_err(), "wrong password accepted");
    // Another run of the broker has other credentials.
    let other = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    assert_ne!(other.worker_config(&cfg).mqtt_url, wcfg.mqtt_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_embedded_port_fails_with_an_error_naming_the_port() {
    // Another MQTT broker answers there: it must not be taken for ours.
    let other = Mosquitto::start();
    let mut cfg = base(TransportKind::Embedded);
    cfg.embedded_port = IntIn::new(i64::from(other.port)).unwrap();
    let err = match AgentTransport::connect(&cfg, DEVICE, &Default::default()).await {
        Ok(_) => panic!(
            "the agent took another broker on port {} for its own",
            other.port
        ),
        Err(e) => e.to_string(),
    };
    let want = format!(
        "transport.embedded_port {} is taken by another process",
        other.port
    );
    assert!(err.contains(&want), "{err}");
}

/// A worker's snapshot reaches the agent's results as `snapshots/{id}`, bytes intact
/// (the agent keeps it for the page and sends it up the uplink). Published again until
/// the agent's subscription is in place: MQTT keeps nothing published before it.
async fn the_agent_reads_back_worker_snapshots(cfg: TransportConfig) {
    let agent = AgentTransport::connect(&cfg, DEVICE, &Default::default())
        .await
        .unwrap();
    let mut results = agent.results().unwrap();
    let worker = subscribed_worker(&worker_cfg(&cfg, &agent)).await;
    let jpeg = small_jpeg();
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        worker
            .publish_snapshot_for(DEVICE, "cam-1", "cam-1-1700000000000-7", jpeg.clone())
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), results.next()).await {
            Ok(Some(r)) => break r,
            Ok(None) => panic!("the results stream ended"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("no snapshot reached the agent within {WAIT:?}"),
        }
    };
    assert_eq!(
        (got.device.as_str(), got.camera.as_str(), got.kind.as_str()),
        (DEVICE, "cam-1", "snapshots/cam-1-1700000000000-7")
    );
    assert_eq!(got.payload, jpeg, "the snapshot's bytes");
    assert_eq!(
        (got.seq, got.first_answer),
        (None, false),
        "it answers no frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_back_worker_snapshots_on_the_embedded_broker() {
    the_agent_reads_back_worker_snapshots(base(TransportKind::Embedded)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_back_worker_snapshots_on_rabbitmq() {
    let _serial = rabbit_serial().await;
    let cfg = amqp_cfg();
    the_agent_reads_back_worker_snapshots(cfg.clone()).await;
    amqp_cleanup(&cfg).await;
}
