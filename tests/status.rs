//! The agent's status as a fleet dashboard or Home Assistant sees it on a real
//! Mosquitto (or RabbitMQ): the retained `online` status, a heartbeat with health at
//! `telemetry.heartbeat_interval`, retained discovery configs per camera, `offline`
//! at the stop (and no last will: the agent disconnects cleanly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::common::agent::Agent;
use crate::common::broker::{amqp_tap, amqp_url, mqtt_url, rabbit_serial, unique};
use crate::common::wait;

#[derive(Clone, Debug)]
struct Msg {
    topic: String,
    payload: Bytes,
    retain: bool,
}

/// A client subscribed to `filters`; every publish it gets lands in the returned list.
async fn subscriber(filters: &[String]) -> (Arc<Mutex<Vec<Msg>>>, rumqttc::AsyncClient) {
    let u = url::Url::parse(&mqtt_url()).unwrap();
    let mut opts = rumqttc::MqttOptions::new(
        unique("status"),
        u.host_str().unwrap(),
        u.port().unwrap_or(1883),
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
    for f in filters {
        client
            .subscribe(f.as_str(), rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let got: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let sink = got.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let want_acks = filters.len();
    tokio::spawn(async move {
        let (mut acks, mut tx) = (0, Some(tx));
        while let Ok(ev) = el.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    acks += 1;
                    if acks == want_acks {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    sink.lock().unwrap().push(Msg {
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                    })
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("subscribed")
        .unwrap();
    (got, client)
}

async fn wait_for(what: &str, agent: &Agent, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait::value_async_explained(
        what,
        timeout,
        || f().then_some(()),
        || {
            format!(
                "; agent log:
{}",
                agent.log_text()
            )
        },
    )
    .await
}

fn json(p: &Bytes) -> serde_json::Value {
    serde_json::from_slice(p).unwrap_or_else(|e| panic!("not JSON ({e}): {p:?}"))
}

fn check_heartbeat(h: &serde_json::Value, device: &str) {
    assert_eq!(h["status"], "online", "{h}");
    assert_eq!(h["device"], device, "{h}");
    assert!(h["version"].as_str().is_some_and(|v| !v.is_empty()), "{h}");
    assert!(h["uptime_s"].is_u64(), "{h}");
    assert!(h["workers"]["running"].is_u64(), "{h}");
    assert!(h["broker_connected"].is_boolean(), "{h}");
    for cam in ["gate", "yard"] {
        assert!(
            h["cameras"][cam]["state"].is_string(),
            "camera {cam} in {h}"
        );
    }
}

/// Heartbeats come every `telemetry.heartbeat_interval` (1 s here), and say so. Never
/// sooner (a beat may come a little early only by the gap between the two clocks the
/// agent and its `at_ms` read); later by at most what a machine at load 10 still meets:
/// the agent's loop turns late there, but not by seconds.
fn check_interval(beats: &[serde_json::Value], every: Duration) {
    let every_ms = every.as_millis() as u64;
    for h in beats {
        assert_eq!(h["interval_s"].as_f64(), Some(every.as_secs_f64()), "{h}");
    }
    for pair in beats.windows(2) {
        let (a, b) = (pair[0]["at_ms"].as_u64(), pair[1]["at_ms"].as_u64());
        let gap = b.zip(a).map(|(b, a)| b.saturating_sub(a)).unwrap_or(0);
        assert!(
            gap + 20 >= every_ms && gap <= 4 * every_ms,
            "heartbeats {gap} ms apart, interval {every_ms} ms: {beats:?}"
        );
    }
}

fn config(device: &str, transport: &str) -> String {
    format!(
        r#"
[device]
id = "{device}"

[[cameras]]
id = "gate"
url = "demo://gate?width=320&height=180&fps=5"

[[cameras]]
id = "yard"
url = "demo://yard?width=320&height=180&fps=5"

[transport]
{transport}

[telemetry]
metrics_listen = ""
heartbeat_interval = "1s"
home_assistant = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_home_assistant_discovery_are_retained_on_mosquitto() {
    let device = unique("ha");
    let prefix = unique("edge");
    let status_topic = format!("{prefix}/{device}/status");
    let health_topic = format!("{prefix}/{device}/health");
    let (got, _c) = subscriber(&[
        format!("{prefix}/{device}/#"),
        "homeassistant/#".to_string(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let transport = format!(
        "kind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{prefix}\"",
        mqtt_url()
    );
    std::fs::write(&file, config(&device, &transport)).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);

    let of = |topic: &str| -> Vec<Msg> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    };
    wait_for("three heartbeats", &agent, Duration::from_secs(30), || {
        of(&health_topic).len() >= 3
    })
    .await;
    let beats: Vec<serde_json::Value> =
        of(&health_topic).iter().map(|m| json(&m.payload)).collect();
    for h in &beats {
        check_heartbeat(h, &device);
    }
    check_interval(&beats[..3], Duration::from_secs(1));
    assert!(
        of(&status_topic).iter().any(|m| m.payload == "online"),
        "no online status"
    );

    // Discovery: one motion binary sensor and one detections sensor per camera.
    let mut discovery = Vec::new();
    for cam in ["gate", "yard"] {
        for (kind, what) in [("binary_sensor", "motion"), ("sensor", "detections")] {
            let topic = format!("homeassistant/{kind}/{device}_{cam}_{what}/config");
            wait_for(&topic, &agent, Duration::from_secs(10), || {
                !of(&topic).is_empty()
            })
            .await;
            let c = json(&of(&topic)[0].payload);
            for key in [
                "name",
                "unique_id",
                "state_topic",
                "availability_topic",
                "device",
            ] {
                assert!(!c[key].is_null(), "{topic}: no {key} in {c}");
            }
            assert_eq!(c["availability_topic"], status_topic.as_str(), "{c}");
            assert_eq!(
                c["state_topic"],
                format!("{prefix}/{device}/{cam}/{what}").as_str(),
                "{c}"
            );
            assert!(c["device"]["identifiers"][0].is_string(), "{c}");
            discovery.push((topic, c["unique_id"].as_str().unwrap().to_string()));
        }
    }
    let mut ids: Vec<&String> = discovery.iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "unique ids differ: {discovery:?}");

    // A client that connects now gets the retained discovery, status and heartbeat.
    let mut late_filters: Vec<String> = discovery.iter().map(|(t, _)| t.clone()).collect();
    late_filters.push(status_topic.clone());
    late_filters.push(health_topic.clone());
    let (late, _c2) = subscriber(&late_filters).await;
    wait_for("retained messages", &agent, Duration::from_secs(10), || {
        late.lock().unwrap().len() >= late_filters.len()
    })
    .await;
    for m in late.lock().unwrap().iter() {
        assert!(m.retain, "{} not retained", m.topic);
    }

    let log = agent.log_text();
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    wait::value_async_explained(
        "a clean offline status at the stop",
        Duration::from_secs(10),
        || {
            of(&status_topic)
                .iter()
                .any(|m| m.payload == "offline")
                .then_some(())
        },
        || format!(" (statuses: {:?}); log:\n{log}", of(&status_topic)),
    )
    .await;
    // A message of ours after the agent's exit: whatever the broker did on the agent's
    // disconnect (a will) is delivered before it.
    let marker = format!("{prefix}/{device}/marker");
    _c.publish(&marker, rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    wait::until_async("our own marker message", Duration::from_secs(10), || {
        !of(&marker).is_empty()
    })
    .await;
    let statuses: Vec<Bytes> = of(&status_topic).into_iter().map(|m| m.payload).collect();
    assert_eq!(
        statuses.last().map(|b| &b[..]),
        Some(&b"offline"[..]),
        "the agent did not say goodbye (DISCONNECT) and the broker published its will: {statuses:?}"
    );
    assert!(
        !statuses.iter().any(|p| p == "lost"),
        "last will published at a clean stop: {statuses:?}"
    );

    // Leave no retained messages behind on the shared broker.
    for t in &late_filters {
        _c.publish(t, rumqttc::QoS::AtLeastOnce, true, Vec::<u8>::new())
            .await
            .unwrap();
    }
    // The late subscriber sees each one emptied: the broker holds nothing more.
    wait::until_async(
        "the retained messages cleared",
        Duration::from_secs(10),
        || {
            let late = late.lock().unwrap();
            late_filters
                .iter()
                .all(|t| late.iter().any(|m| m.topic == *t && m.payload.is_empty()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_goes_to_the_events_exchange_on_rabbitmq() {
    use futures::StreamExt;
    let _serial = rabbit_serial().await;
    let device = unique("hb");
    let transport = format!(
        "kind = \"amqp\"\namqp_url = \"{}\"\nframes_queue = \"{}\"\nevents_exchange = \"{}\"",
        amqp_url(),
        unique("frames"),
        unique("events")
    );
    let text = config(&device, &transport);
    let cfg = edge_agent::config::Config::from_toml_str("test", &text)
        .unwrap()
        .transport;
    let (conn, mut consumer) = amqp_tap(&cfg, &format!("{device}.health"), "hb").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let mut beats = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while beats.len() < 3 {
            let d = consumer.next().await.unwrap().unwrap();
            beats.push(json(&Bytes::from(d.data)));
        }
    })
    .await;
    let log = agent.log_text();
    let status = agent.stop();
    let ch = conn.create_channel().await.unwrap();
    edge_agent::transport::amqp::delete_topology(&ch, &cfg, &device).await;
    assert!(r.is_ok(), "no three heartbeats; log:\n{log}");
    for h in &beats {
        check_heartbeat(h, &device);
    }
    check_interval(&beats, Duration::from_secs(1));
    // Discovery is MQTT's; on AMQP the agent says so instead.
    assert!(
        log.contains("telemetry.home_assistant needs an MQTT transport"),
        "{log}"
    );
    assert!(status.success(), "{status:?}");
}
