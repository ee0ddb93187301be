//! The full cycle through each transport, as a downstream service sees it: the
//! `edge-agent run` binary watches an in-process RTSP camera whose red square moves
//! once; a test client subscribed to the agent's topics (embedded broker, Mosquitto)
//! or bound to its events exchange (RabbitMQ) sees the motion event, the detections
//! with their per-stage latency, a snapshot that decodes, then one `fire` incident: a
//! `start` that names that snapshot and, once the square stops being seen, its `end`.
//! Workers are counted in /proc: none before the motion, one started from zero, none
//! again after the cooldown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_agent::ingest::synthetic::Scene;

use crate::common::agent::{children_of, http_get, metric, Agent};
use crate::common::broker::{amqp_tap, amqp_url, free_port, mqtt_url, rabbit_serial, unique};
use crate::common::rtsp_server::RtspTestServer;
use crate::common::wait;

/// One message as a downstream service got it: the part of the topic or routing key
/// after device and camera (`motion`, `detections`, `snapshots/ID`, `events/CLASS`),
/// the camera, and the payload.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) camera: String,
    pub(crate) kind: String,
    pub(crate) payload: Bytes,
}

pub(crate) type Inbox = Arc<Mutex<Vec<Seen>>>;

/// The scene: still for 4 s, the square moves for 3 s, then still for hours, so the
/// worker has nothing to do after the one event and must go back to zero.
// One window of movement, on purpose.
#[allow(clippy::single_range_in_vec_init)]
fn scene() -> Scene {
    Scene {
        width: 640,
        height: 360,
        fps: 10,
        period: 1_000_000,
        moves: vec![40..70],
        objects: Vec::new(),
    }
}

fn config(device: &str, camera_url: &str, transport: &str) -> String {
    config_forgetting(device, camera_url, transport, "3s")
}

/// [`config`] with the tracks' `forget_after`.
fn config_forgetting(device: &str, camera_url: &str, transport: &str, forget: &str) -> String {
    format!(
        r#"
[device]
id = "{device}"

[[cameras]]
id = "gate"
url = "{camera_url}"

[transport]
{transport}
# A frame the broker dropped would only come back after this: the cycle must not need it
# (MQTT keeps nothing published before the first worker subscribed; the agent resends
# such frames when that worker is ready).
redeliver_after = "10m"

[scaling]
max_workers = 1
# The cycle checks the cold-start share of a frame that waits for the worker it started;
# pre-warm (tests/scale.rs) would start that worker at the motion candidate instead.
prewarm_on_motion = false
cooldown_period = "3s"
polling_interval = "250ms"

[events.tracks]
# The square rests after its move and no frame is escalated any more: its incident
# ends this long after its last sighting.
forget_after = "{forget}"

[telemetry]
metrics_listen = "127.0.0.1:0"
"#
    )
}

/// MQTT subscriber on `{prefix}/{device}/#`; resolves once the broker acknowledged it.
pub(crate) async fn mqtt_subscribe(
    port: u16,
    prefix: &str,
    device: &str,
) -> (Inbox, rumqttc::AsyncClient) {
    mqtt_subscribe_as(port, prefix, device, None).await
}

/// [`mqtt_subscribe`] logged in as (user, password).
async fn mqtt_subscribe_as(
    port: u16,
    prefix: &str,
    device: &str,
    login: Option<(&str, &str)>,
) -> (Inbox, rumqttc::AsyncClient) {
    let mut opts = rumqttc::MqttOptions::new(unique("sub"), "127.0.0.1", port);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{prefix}/{device}/#"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let strip = format!("{prefix}/{device}/");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let rest = p.topic.strip_prefix(&strip).unwrap_or(&p.topic);
                    // The frames to the workers, besides what they publish.
                    if rest == "frames" {
                        sink.lock().unwrap().push(Seen {
                            camera: String::new(),
                            kind: "frames".into(),
                            payload: p.payload,
                        });
                    } else if let Some((camera, kind)) = rest.split_once('/') {
                        sink.lock().unwrap().push(Seen {
                            camera: camera.into(),
                            kind: kind.into(),
                            payload: p.payload,
                        });
                    }
                }
                Ok(_) => {}
                // The embedded broker goes away with the agent.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("subscription acknowledged")
        .unwrap();
    (inbox, client)
}

/// A queue bound to `{device}.#` on the events exchange, consumed into the inbox.
async fn amqp_subscribe(
    cfg: &edge_agent::transport::TransportConfig,
    device: &str,
) -> (Inbox, lapin::Connection) {
    use futures::StreamExt;
    let (conn, mut consumer) = amqp_tap(cfg, &format!("{device}.#"), "full-cycle").await;
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let strip = format!("{device}.");
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let key = d.routing_key.to_string();
            let rest = key.strip_prefix(&strip).unwrap_or(&key);
            let Some((camera, suffix)) = rest.split_once('.') else {
                continue;
            };
            let kind = match suffix {
                "motion" | "detections" | "clips" => suffix.to_string(),
                s if s.starts_with("snapshot.") => format!("snapshots/{}", &s[9..]),
                class => format!("events/{class}"),
            };
            sink.lock().unwrap().push(Seen {
                camera: camera.into(),
                kind,
                payload: Bytes::from(d.data),
            });
        }
    });
    (inbox, conn)
}

/// The square as detected, in arrival order (`captured_ms:x+w`), for failure messages.
fn fire_sightings(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.kind == "detections")
        .map(|s| {
            let d = json(&s.payload);
            let fires: Vec<String> = d["detections"]["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["class"] == "fire")
                .map(|i| format!("{}+{}", i["x"], i["w"]))
                .collect();
            format!("{}:{}", d["captured_ms"], fires.join(","))
        })
        .collect()
}

/// A frame message as the agent publishes it: it decodes, and its header follows its
/// schema. Returns the header.
fn check_frame(p: &Bytes) -> edge_agent::wire::FrameHeader {
    let msg = edge_agent::wire::frame::decode(p, 64 << 20)
        .unwrap_or_else(|e| panic!("frame message does not decode: {e}"));
    let v = serde_json::to_value(&msg.header).unwrap();
    crate::common::schema::check("frame-header.v2.json", &v);
    msg.header
}

pub(crate) fn json(p: &Bytes) -> serde_json::Value {
    serde_json::from_slice(p).unwrap_or_else(|e| panic!("not JSON ({e}): {p:?}"))
}

/// Runs the cycle and checks what the downstream client saw. `subscribe` is called
/// once the agent is up (the embedded broker exists only then).
async fn full_cycle<F, Fut>(device: &str, transport: &str, subscribe: F)
where
    F: FnOnce(&Agent) -> Fut,
    Fut: std::future::Future<Output = (Inbox, Box<dyn std::any::Any + Send>)>,
{
    let srv = RtspTestServer::start(scene());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, config(device, &srv.url("/gate"), transport)).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let (inbox, _keep) = subscribe(&agent).await;
    let metrics_addr = agent.metrics_addr(Duration::from_secs(30));

    // Watch workers and messages until the event is out and the workers are gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut zero_before_motion, mut peak, mut back_to_zero) = (false, 0, false);
    loop {
        let kids = children_of(agent.pid).len();
        let seen = inbox.lock().unwrap().clone();
        let motion = seen.iter().any(|s| s.kind == "motion");
        let event = seen
            .iter()
            .any(|s| s.kind == "events/fire" && json(&s.payload)["state"] == "end");
        if !motion && peak == 0 && kids == 0 {
            zero_before_motion = true;
        }
        peak = peak.max(kids);
        if event && kids == 0 && !agent.in_state("worker_stopped").is_empty() {
            back_to_zero = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scraped = http_get(&metrics_addr, "/metrics");
    let seen = inbox.lock().unwrap().clone();
    let kinds: Vec<&str> = seen.iter().map(|s| s.kind.as_str()).collect();
    let log = agent.log_text();
    let ready = agent.worker_in_state("ready");
    let status = agent.stop();
    assert!(status.success(), "agent exit on SIGTERM: {status:?}");

    // Everything published follows its schema.
    for s in &seen {
        let schema = match s.kind.as_str() {
            "frames" => {
                check_frame(&s.payload);
                continue;
            }
            "motion" => "motion.v1.json",
            "detections" => "detections.v2.json",
            k if k.starts_with("events/") => {
                crate::common::schema::check_event(&json(&s.payload));
                continue;
            }
            "clips" => "clip.v1.json",
            _ => continue,
        };
        crate::common::schema::check(schema, &json(&s.payload));
    }

    // Motion event from the camera.
    let motion: Vec<serde_json::Value> = seen
        .iter()
        .filter(|s| s.kind == "motion")
        .map(|s| json(&s.payload))
        .collect();
    assert!(
        motion
            .iter()
            .any(|m| m["state"] == "start" && m["camera"] == "gate"),
        "no motion start in {motion:?}\nkinds: {kinds:?}\nlog:\n{log}"
    );
    // A worker from zero, and back.
    assert!(zero_before_motion, "workers before any motion");
    assert_eq!(peak, 1, "one worker started from zero (log:\n{log})");
    assert!(
        back_to_zero,
        "workers never back to zero after the event; kinds {kinds:?}\nlog:\n{log}"
    );

    // Detections, with the fire class and a consistent latency breakdown.
    let dets: Vec<serde_json::Value> = seen
        .iter()
        .filter(|s| s.kind == "detections" && s.camera == "gate")
        .map(|s| json(&s.payload))
        .collect();
    assert!(!dets.is_empty(), "no detections; kinds {kinds:?}");
    assert!(
        dets.iter().any(|d| d["detections"]["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["class"] == "fire"))),
        "the red square is detected as fire: {dets:?}"
    );
    let mut cold = 0;
    for d in &dets {
        let l = &d["latency"];
        let stages = l["stages"]
            .as_object()
            .unwrap_or_else(|| panic!("no latency stages in {d}"));
        for name in [
            "capture_to_motion",
            "motion_to_publish",
            "cold_start",
            "queue_wait",
            "worker_wait",
            "decode",
            "preprocess",
            "inference",
            "postprocess",
            "batch_other",
            "result_publish",
        ] {
            let v = stages[name].as_f64().unwrap_or(-1.0);
            assert!(v >= 0.0, "stage {name} = {v} in {l}");
        }
        let sum: f64 = stages.values().filter_map(|v| v.as_f64()).sum();
        let total = l["total_ms"].as_f64().unwrap();
        assert!(total > 0.0, "{l}");
        assert!(
            (sum - total).abs() < 0.01,
            "stages sum {sum} vs total {total}: {l}"
        );
        assert!(stages["inference"].as_f64().unwrap() > 0.0, "{l}");
        // Only a frame sent while no worker was ready has a cold-start share (it may
        // be 0 if the worker became ready while the frame was being encoded).
        let share = stages["cold_start"].as_f64().unwrap();
        if l["cold_start"] != true {
            assert_eq!(share, 0.0, "{l}");
        } else if share > 0.0 {
            cold += 1;
        }
        eprintln!("latency: {l}");
    }
    // The first frame is published before the scaler is woken, so it waits.
    assert!(
        cold >= 1,
        "no frame waited for the worker from zero: {dets:?}"
    );

    // One incident: a start, then an end, for the one square; each names a snapshot
    // that came before it and decodes as a JPEG.
    let incident: Vec<(usize, serde_json::Value)> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "events/fire")
        .map(|(i, s)| (i, json(&s.payload)))
        .filter(|(_, v)| v["state"] != "update")
        .collect();
    let states: Vec<&str> = incident
        .iter()
        .map(|(_, v)| v["state"].as_str().unwrap_or("?"))
        .collect();
    let sightings = fire_sightings(&seen);
    assert_eq!(
        states,
        ["start", "end"],
        "fire sightings (capture ms: x+w) {sightings:?}\n{incident:?}"
    );
    let (start, end) = (&incident[0].1, &incident[1].1);
    assert_eq!(start["incident"], end["incident"]);
    // Clips are on by default: the start names the clip being written (version 3),
    // the end the finished file, which the camera's `clips` topic announced.
    assert_eq!(
        (&start["class"], &start["camera"], &start["version"]),
        (&"fire".into(), &"gate".into(), &3.into())
    );
    let clip = start["clip"]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{start}"));
    assert_eq!(end["clip"]["file"], clip, "{end}");
    assert!(end["clip"]["bytes"].as_u64() > Some(0), "{end}");
    assert!(
        seen.iter()
            .any(|s| s.kind == "clips" && json(&s.payload)["file"] == clip),
        "no clips message for {clip}; kinds {kinds:?}"
    );
    assert_eq!(end["end_reason"], "forgotten", "{end}");
    assert!(end["frames"].as_u64().unwrap() >= 2, "{end}");
    assert!(end["best_score"].as_f64().unwrap() > 0.5, "{end}");
    assert_eq!(
        (&end["frame_width"], &end["frame_height"]),
        (&640.into(), &360.into())
    );
    for (ev_at, ev) in &incident {
        let snap_id = ev["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("no snapshot: {ev}"));
        let snap_at = kinds
            .iter()
            .position(|k| *k == format!("snapshots/{snap_id}"))
            .unwrap_or_else(|| panic!("snapshot {snap_id} never seen; kinds {kinds:?}"));
        assert!(snap_at < *ev_at, "snapshot after its event: {kinds:?}");
        let img = edge_agent::image::decode_jpeg(&seen[snap_at].payload)
            .expect("the snapshot decodes as a JPEG");
        assert_eq!((img.width, img.height), (640, 360));
    }

    // The worker said it was ready once subscribed, not after giving up waiting: its
    // `ready` lifecycle line says whether the broker acknowledged the subscription.
    assert!(!ready.is_empty(), "no worker ready line:\n{log}");
    for r in &ready {
        assert_eq!(
            r["acknowledged"], true,
            "the worker never saw its SUBACK: {r}"
        );
    }
    // Every escalated frame was answered (none waited for `redeliver_after`).
    let escalated =
        metric(&scraped, "edge_agent_escalations_total{camera=\"gate\"}").unwrap_or(0.0);
    let mut answered: Vec<u64> = dets.iter().filter_map(|d| d["seq"].as_u64()).collect();
    answered.sort_unstable();
    answered.dedup();
    assert!(escalated >= 1.0, "nothing escalated:\n{scraped}");
    assert_eq!(
        answered.len() as f64,
        escalated,
        "frames answered {answered:?} vs escalated {escalated}"
    );

    // The agent exported the stages it read back.
    for stage in [
        "capture_to_motion",
        "queue_wait",
        "inference",
        "result_publish",
    ] {
        let name = format!("edge_agent_stage_latency_seconds_count{{stage=\"{stage}\"}}");
        let n = metric(&scraped, &name).unwrap_or(0.0);
        assert!(n >= 1.0, "{name} = {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_over_the_embedded_broker() {
    let device = unique("fc-emb");
    let port = free_port();
    // The embedded broker refuses anonymous clients: the downstream service logs in.
    let transport = format!(
        "kind = \"embedded\"\nembedded_port = {port}\nmqtt_url = \"mqtt://downstream:d%40wn@127.0.0.1\""
    );
    full_cycle(&device, &transport, |agent| {
        let device = device.clone();
        let ready = agent.wait_state("broker_listening", 1, Duration::from_secs(30));
        assert!(ready["addr"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}")));
        async move {
            let login = Some(("downstream", "d@wn"));
            let (inbox, client) = mqtt_subscribe_as(port, "edge", &device, login).await;
            (inbox, Box::new(client) as Box<dyn std::any::Any + Send>)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_over_mosquitto() {
    let device = unique("fc-mqtt");
    let prefix = unique("edge");
    let url = url::Url::parse(&mqtt_url()).unwrap();
    let port = url.port().unwrap_or(1883);
    // Subscribed before the agent starts: nothing it publishes is missed.
    let (inbox, client) = mqtt_subscribe(port, &prefix, &device).await;
    let transport = format!(
        "kind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{prefix}\"",
        mqtt_url()
    );
    let keep: Box<dyn std::any::Any + Send> = Box::new(client);
    let slot = Mutex::new(Some((inbox, keep)));
    full_cycle(&device, &transport, |_| {
        let v = slot.lock().unwrap().take().unwrap();
        async move { v }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_over_rabbitmq() {
    let _serial = rabbit_serial().await;
    let device = unique("fc-amqp");
    let transport = format!(
        "kind = \"amqp\"\namqp_url = \"{}\"\nframes_queue = \"{}\"\nevents_exchange = \"{}\"",
        amqp_url(),
        unique("frames"),
        unique("events")
    );
    let cfg = edge_agent::config::Config::from_toml_str(
        "test",
        &config(&device, "rtsp://127.0.0.1:1/x", &transport),
    )
    .unwrap()
    .transport;
    let (inbox, conn) = amqp_subscribe(&cfg, &device).await;
    let keep: Box<dyn std::any::Any + Send> = Box::new(conn);
    let slot = Mutex::new(Some((inbox, keep)));
    full_cycle(&device, &transport, |_| {
        let v = slot.lock().unwrap().take().unwrap();
        async move { v }
    })
    .await;
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    edge_agent::transport::amqp::delete_topology(&ch, &cfg, &device).await;
}

/// The square moves, rests (the worker scales in to zero), moves again (a worker starts
/// again): tracks live in the agent, so it is one incident, and it ends when the agent
/// stops, with every detection of the square counted in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_view_is_one_incident_across_scale_in_and_out_and_ends_at_stop() {
    let device = unique("inc-mqtt");
    let prefix = unique("edge");
    let url = url::Url::parse(&mqtt_url()).unwrap();
    let (inbox, _client) = mqtt_subscribe(url.port().unwrap_or(1883), &prefix, &device).await;
    // 25 s apart: room for the first move's frames to be answered (slowly, on a
    // loaded machine), motion to end and the cooldown to pass.
    let srv = RtspTestServer::start(Scene {
        moves: vec![40..70, 290..320],
        ..scene()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let transport = format!(
        "kind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{prefix}\"",
        mqtt_url()
    );
    // A small budget keeps the backlog of each move short.
    let cfg = config_forgetting(&device, &srv.url("/gate"), &transport, "60s").replace(
        "\nurl = \"rtsp",
        "\nescalation = { budget = 4, budget_window = \"10s\" }\nurl = \"rtsp",
    );
    std::fs::write(&file, cfg).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);

    // Worker counts as they change: 0, 1 (first move), 0 (rest), 1 (second move), 0.
    let mut counts = vec![0];
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts != [0, 1, 0, 1, 0] && Instant::now() < deadline {
        let kids = children_of(agent.pid).len();
        if counts.last() != Some(&kids) {
            counts.push(kids);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log_text();
    assert_eq!(counts, [0, 1, 0, 1, 0], "workers over time\nlog:\n{log}");
    let status = agent.stop();
    assert!(status.success(), "agent exit on SIGTERM: {status:?}");
    // Mosquitto delivers what the agent published before it stopped.
    let ended = |seen: &[Seen]| {
        seen.iter()
            .any(|s| s.kind == "events/fire" && json(&s.payload)["state"] == "end")
    };
    wait::until_async("the incident's end", Duration::from_secs(10), || {
        ended(&inbox.lock().unwrap())
    })
    .await;

    let seen = inbox.lock().unwrap().clone();
    // Frames answered with the square in them (a frame answered twice counts once).
    let mut fire_frames: Vec<u64> = seen
        .iter()
        .filter(|s| s.kind == "detections")
        .map(|s| json(&s.payload))
        .filter(|d| {
            d["detections"]["items"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["class"] == "fire"))
        })
        .filter_map(|d| d["seq"].as_u64())
        .collect();
    fire_frames.sort_unstable();
    fire_frames.dedup();
    let fire_frames = fire_frames.len();
    let incident: Vec<serde_json::Value> = seen
        .iter()
        .filter(|s| s.kind == "events/fire")
        .map(|s| json(&s.payload))
        .filter(|v| v["state"] != "update")
        .collect();
    for v in &incident {
        crate::common::schema::check_event(v);
    }
    let states: Vec<&str> = incident
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["start", "end"],
        "fire sightings (capture ms: x+w) {:?}\n{incident:?}",
        fire_sightings(&seen)
    );
    let end = &incident[1];
    assert_eq!(end["incident"], incident[0]["incident"]);
    assert_eq!(end["end_reason"], "agent_stopped", "{end}");
    assert_eq!(
        end["frames"].as_u64().unwrap() as usize,
        fire_frames,
        "every frame with the square counted in the one incident: {end}"
    );
    // It spans both moves, 25 s apart.
    assert!(end["duration_ms"].as_u64().unwrap() > 20_000, "{end}");
}

/// What a downstream service saw while the agent watched `scene` over Mosquitto, with
/// `camera_keys` added to the camera's table, until `done` held for it (or two
/// minutes), and the agent's log.
async fn watch(
    scene: Scene,
    camera_keys: &str,
    forget: &str,
    done: impl Fn(&[Seen]) -> bool,
) -> (Vec<Seen>, String) {
    let device = unique("watch");
    let prefix = unique("edge");
    let url = url::Url::parse(&mqtt_url()).unwrap();
    let (inbox, _client) = mqtt_subscribe(url.port().unwrap_or(1883), &prefix, &device).await;
    let srv = RtspTestServer::start(scene);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let transport = format!(
        "kind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{prefix}\"",
        mqtt_url()
    );
    let cfg = config_forgetting(&device, &srv.url("/gate"), &transport, forget)
        .replace("\nurl = \"rtsp", &format!("\n{camera_keys}\nurl = \"rtsp"));
    std::fs::write(&file, cfg).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&inbox.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log_text();
    let status = agent.stop();
    assert!(status.success(), "agent exit on SIGTERM: {status:?}");
    let seen = inbox.lock().unwrap().clone();
    (seen, log)
}

/// The incident messages of `class`, start and end only, in arrival order.
fn incidents(seen: &[Seen], class: &str) -> Vec<serde_json::Value> {
    let kind = format!("events/{class}");
    seen.iter()
        .filter(|s| s.kind == kind)
        .map(|s| json(&s.payload))
        .filter(|v| v["state"] != "update")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::single_range_in_vec_init)] // one window of movement
async fn two_objects_in_view_are_two_incidents_each_with_its_end() {
    // Two red squares, one above the other, moving right and back together.
    let lane = |y| edge_agent::ingest::synthetic::SceneObject {
        x: 60,
        y,
        size: 40,
        travel: 200,
        moves: vec![40..70],
        yuv: edge_agent::ingest::synthetic::OBJECT_YUV,
    };
    let scene = Scene {
        objects: vec![lane(60), lane(260)],
        ..scene()
    };
    let ends = |seen: &[Seen]| {
        incidents(seen, "fire")
            .iter()
            .filter(|v| v["state"] == "end")
            .count()
    };
    let (seen, log) = watch(scene, "", "3s", |s| ends(s) >= 2).await;
    let incident = incidents(&seen, "fire");
    for v in &incident {
        crate::common::schema::check_event(v);
    }
    let sightings = fire_sightings(&seen);
    let ids = |state: &str| {
        let mut ids: Vec<String> = incident
            .iter()
            .filter(|v| v["state"] == state)
            .map(|v| v["incident"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let (starts, ended) = (ids("start"), ids("end"));
    assert_eq!(
        starts.len(),
        2,
        "two incidents, one per square; sightings {sightings:?}\n{incident:?}\nlog:\n{log}"
    );
    assert_ne!(starts[0], starts[1]);
    assert_eq!(ended, starts, "each incident ends: {incident:?}");
    // One incident per lane: their boxes are in the two squares' rows.
    let mut rows: Vec<f64> = incident
        .iter()
        .filter(|v| v["state"] == "end")
        .map(|v| v["box"]["y"].as_f64().unwrap())
        .collect();
    rows.sort_by(f64::total_cmp);
    assert!(
        (rows[0] - 60.0).abs() < 12.0 && (rows[1] - 260.0).abs() < 12.0,
        "incident rows {rows:?}: {incident:?}"
    );
    for v in incident.iter().filter(|v| v["state"] == "end") {
        assert_eq!(v["end_reason"], "forgotten", "{v}");
        assert!(v["frames"].as_u64().unwrap() >= 2, "{v}");
    }
}

/// A 1280x720 camera: a dark square (which the test model does not find, but motion
/// does) carries a 6-pixel red spot across the frame. Scaled to `detect_width` (640) and
/// then to the 160-pixel model input, the spot is under a pixel and the whole frame
/// misses it; a crop around the motion at camera resolution shows it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::single_range_in_vec_init)] // one window of movement
async fn a_small_object_the_whole_frame_misses_is_found_in_crops_around_motion() {
    use edge_agent::ingest::synthetic::{SceneObject, DARK_YUV, OBJECT_YUV};
    let carrier = |x, y, size, yuv| SceneObject {
        x,
        y,
        size,
        travel: 600,
        moves: vec![40..70],
        yuv,
    };
    let scene = Scene {
        width: 1280,
        height: 720,
        objects: vec![
            carrier(160, 336, 48, DARK_YUV),
            carrier(180, 356, 6, OBJECT_YUV),
        ],
        ..scene()
    };
    // Motion ended, and every frame sent (a frame the agent sent again counts once)
    // answered.
    let answered = |seen: &[Seen]| {
        let seqs = |kind: &str| {
            let mut v: Vec<u64> = seen
                .iter()
                .filter(|s| s.kind == kind)
                .filter_map(|s| match kind {
                    "frames" => edge_agent::wire::frame::decode(&s.payload, 64 << 20)
                        .ok()
                        .map(|m| m.header.seq),
                    _ => json(&s.payload)["seq"].as_u64(),
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (sent, answered) = (seqs("frames"), seqs("detections"));
        let ended = seen
            .iter()
            .any(|s| s.kind == "motion" && json(&s.payload)["state"] == "end");
        ended && sent.len() >= 3 && sent.iter().all(|s| answered.contains(s))
    };
    // "whole" said explicitly; crops are the default (no `regions` key).
    let keys = "escalation = { regions = \"whole\" }\nanalysis_width = 640";
    let crops = "escalation = { crop_size = 160 }\nanalysis_width = 640";
    let mut results = Vec::new();
    for (name, keys) in [("whole", keys), ("crops", crops)] {
        let (seen, log) = watch(scene.clone(), keys, "3s", answered).await;
        let frames: Vec<_> = seen
            .iter()
            .filter(|s| s.kind == "frames")
            .map(|s| check_frame(&s.payload))
            .collect();
        let dets: Vec<serde_json::Value> = seen
            .iter()
            .filter(|s| s.kind == "detections")
            .map(|s| json(&s.payload))
            .collect();
        assert!(
            answered(&seen),
            "{name}: {} frames sent, {} answered\nlog:\n{log}",
            frames.len(),
            dets.len()
        );
        for h in &frames {
            assert_eq!((h.width, h.height), (640, 360), "{name}");
            assert_eq!((h.source_width, h.source_height), (1280, 720), "{name}");
            assert_eq!(h.regions.is_empty(), name == "whole", "{name}: {h:?}");
        }
        for d in &dets {
            crate::common::schema::check("detections.v2.json", d);
            let d = &d["detections"];
            assert_eq!((&d["width"], &d["height"]), (&1280.into(), &720.into()));
        }
        let fires: Vec<serde_json::Value> = dets
            .iter()
            .flat_map(|d| {
                d["detections"]["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|i| i["class"] == "fire")
            .collect();
        results.push((name, fires, log));
    }
    let (_, whole, _) = &results[0];
    assert!(
        whole.is_empty(),
        "the whole frame found the spot: {whole:?}"
    );
    let (_, crops, log) = &results[1];
    assert!(!crops.is_empty(), "the crops missed the spot\nlog:\n{log}");
    // In camera pixels, on the spot's path (row 356..362, columns 180..786).
    for f in crops {
        let (x, y, w, h) = (
            f["x"].as_f64().unwrap(),
            f["y"].as_f64().unwrap(),
            f["w"].as_f64().unwrap(),
            f["h"].as_f64().unwrap(),
        );
        assert!(
            (y - 356.0).abs() < 6.0 && (h - 6.0).abs() < 6.0,
            "spot row: {f}"
        );
        assert!(x > 170.0 && x + w < 796.0 && w < 12.0, "spot column: {f}");
    }
}
