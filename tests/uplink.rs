//! The uplink on real brokers: frames stay on the embedded broker, events go to a
//! private Mosquitto (started here, so stopping it cuts nobody else's tests) through the
//! disk spool. Demo cameras give motion events on a known rhythm, with escalation off
//! so no worker is needed. `amqp`: the same on the real RabbitMQ, cut by a TCP proxy,
//! and its nacks; `disk`: a full disk under the spool; `properties`: what an AMQP
//! consumer at the centre sees (message ids, the status queue, detections);
//! `snapshots`: snapshots up before the incident that names them.

mod amqp;
mod central;
mod disk;
mod properties;
mod snapshots;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::common::agent::{http_get, metric, Agent};
use crate::common::broker::{free_port, unique, Mosquitto};
use crate::common::wait;

const LONG: Duration = Duration::from_secs(60);

/// A persistent-session subscriber on the uplink broker: it keeps its subscription
/// over the broker's restart (Mosquitto saves sessions at SIGTERM) and reconnects by
/// itself, so what the broker queued for it meanwhile arrives.
struct Consumer {
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    async fn start(port: u16, filter: String) -> Consumer {
        let mut opts = rumqttc::MqttOptions::new(unique("uplink-consumer"), "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, flag) = (got.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock()
                            .unwrap()
                            .push((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        flag.store(true, std::sync::atomic::Ordering::Release);
                    }
                    Ok(_) => {}
                    // The broker is away: try again (the event loop reconnects).
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        wait::until_async("the consumer's SUBACK", LONG, || {
            subscribed.load(std::sync::atomic::Ordering::Acquire)
        })
        .await;
        Consumer { got, _task: task }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(topic, p)| {
                let mut v: serde_json::Value = serde_json::from_slice(p)
                    .unwrap_or_else(|e| panic!("{topic}: not JSON ({e}): {p:?}"));
                v["_topic"] = topic.clone().into();
                v
            })
            .collect()
    }
}

fn config(device: &str, prefix: &str, port: u16, spool: &std::path::Path, extra: &str) -> String {
    let cam = |id: &str| {
        format!("[[cameras]]\nid = \"{id}\"\nurl = \"demo://{id}?width=160&height=90&fps=10\"\nescalation = {{ enabled = false }}\n")
    };
    format!(
        "[device]\nid = \"{device}\"\nstop_timeout = \"5s\"\n{}{}\
         [telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nheartbeat_interval = \"1s\"\n\
         [uplink]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopic_prefix = \"{prefix}\"\n\
         [uplink.spool]\ndir = \"{}\"\n{extra}",
        cam("gate"),
        cam("yard"),
        spool.display()
    )
}

fn start(file: &std::path::Path) -> (Agent, String) {
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let addr = agent.metrics_addr(LONG);
    (agent, addr)
}

fn health(addr: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, "/health")).unwrap_or_default()
}

fn spooled(addr: &str) -> Option<u64> {
    health(addr)["uplink"]["spool"]["messages"].as_u64()
}

async fn wait_health(
    agent: &Agent,
    addr: &str,
    what: &str,
    f: impl FnMut(&serde_json::Value) -> bool,
) {
    wait_health_within(agent, addr, what, LONG, f).await
}

async fn wait_health_within(
    agent: &Agent,
    addr: &str,
    what: &str,
    within: Duration,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) {
    wait::value_async_explained(
        what,
        within,
        || f(&health(addr)).then_some(()),
        || format!("; health {}; log:\n{}", health(addr), agent.log_text()),
    )
    .await
}

/// The motion transitions an agent logged: (camera, event id, state).
fn logged(agent: &Agent) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (lifecycle, state) in [("motion_started", "start"), ("motion_ended", "end")] {
        for v in agent.in_state(lifecycle) {
            out.push((
                v["camera"].as_str().unwrap_or_default().to_string(),
                v["event"].as_str().unwrap_or_default().to_string(),
                state.to_string(),
            ));
        }
    }
    out
}

/// The spool position in a message id (`<epoch>-<seq, hex>`).
fn seq_of(id: &str) -> (String, u64) {
    let (epoch, seq) = id.rsplit_once('-').unwrap_or_else(|| panic!("id {id}"));
    (epoch.to_string(), u64::from_str_radix(seq, 16).unwrap())
}

/// Duplicates only under one message id (same content), and per camera the first copy
/// of each message in spool order.
fn check_order_and_duplicates(msgs: &[serde_json::Value]) {
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    let mut by_content: BTreeMap<String, String> = BTreeMap::new();
    let mut firsts: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for m in msgs {
        let id = m["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no message_id in {m}"))
            .to_string();
        let mut content = m.clone();
        content.as_object_mut().unwrap().remove("message_id");
        let content = content.to_string();
        if let Some(before) = by_id.insert(id.clone(), content.clone()) {
            assert_eq!(before, content, "one message_id, two contents");
            continue;
        }
        if let Some(other) = by_content.insert(content.clone(), id.clone()) {
            panic!("the same message under two ids, {other} and {id}: {content}");
        }
        let camera = m["camera"].as_str().unwrap().to_string();
        firsts.entry(camera).or_default().push(seq_of(&id));
    }
    for (camera, seqs) in firsts {
        for w in seqs.windows(2) {
            if w[0].0 == w[1].0 {
                assert!(w[0].1 < w[1].1, "{camera}: out of order: {seqs:?}");
            }
        }
    }
}

fn received_keys(msgs: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    msgs.iter()
        .map(|m| {
            (
                m["camera"].as_str().unwrap_or_default().to_string(),
                m["id"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spooled_through_an_outage_and_a_sigkill_all_arrive_in_order_per_camera() {
    let device = unique("uplink");
    let prefix = unique("central");
    let mut broker = Mosquitto::start();
    let consumer = Consumer::start(broker.port, format!("{prefix}/{device}/+/motion")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        config(&device, &prefix, broker.port, &dir.path().join("spool"), ""),
    )
    .unwrap();

    // Up: events flow and leave the spool.
    let (agent, addr) = start(&file);
    wait::until_async("motion events on the uplink", LONG, || {
        consumer.messages().len() >= 2
    })
    .await;
    wait_health(&agent, &addr, "the uplink connected", |h| {
        h["uplink"]["connected"] == true && h["uplink"]["kind"] == "mqtt"
    })
    .await;

    // Down: events are spooled.
    broker.stop();
    wait_health(
        &agent,
        &addr,
        "events spooled while the uplink is down",
        |h| {
            h["uplink"]["connected"] == false
                && h["uplink"]["spool"]["messages"].as_u64() >= Some(3)
        },
    )
    .await;
    // Every transition logged so far is committed once a few more are: they leave
    // the cameras' queue for the spool in order.
    let before_kill = logged(&agent);
    let depth = wait::value_async("the spool depth", LONG, || spooled(&addr)).await;
    wait_health(&agent, &addr, "more events spooled", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(depth + 3)
    })
    .await;
    let text = http_get(&addr, "/metrics");
    assert!(
        metric(&text, "edge_agent_uplink_spool_messages").is_some_and(|v| v >= 3.0),
        "{text}"
    );
    assert_eq!(metric(&text, "edge_agent_uplink_connected"), Some(0.0));
    agent.signal(libc::SIGKILL);
    drop(agent);

    // Restarted during the outage: the spool is read back and grows.
    let (agent, addr) = start(&file);
    let reopened = agent.wait_state("spool_opened", 1, LONG);
    assert!(
        reopened["messages"].as_u64() >= Some(depth + 3),
        "{reopened}"
    );
    let at_start = wait::value_async("the spool depth", LONG, || spooled(&addr)).await;
    wait_health(&agent, &addr, "events spooled after the restart", |h| {
        h["uplink"]["spool"]["messages"].as_u64() >= Some(at_start + 2)
    })
    .await;

    // Back: the spool drains, and what was logged up to now arrives.
    broker.restart();
    wait_health(&agent, &addr, "the spool drained", |h| {
        h["uplink"]["connected"] == true && h["uplink"]["spool"]["messages"] == 0
    })
    .await;
    let after = logged(&agent);
    wait_health(&agent, &addr, "later events sent", |h| {
        h["uplink"]["sent"].as_u64() >= Some(2)
    })
    .await;
    let expected: BTreeSet<_> = before_kill.into_iter().chain(after).collect();
    let msgs = wait::value_async_explained(
        "every logged motion transition on the uplink",
        LONG,
        || {
            let msgs = consumer.messages();
            let got = received_keys(&msgs);
            expected.is_subset(&got).then_some(msgs)
        },
        || {
            let got = received_keys(&consumer.messages());
            format!(
                "; missing {:?}",
                expected.difference(&got).collect::<Vec<_>>()
            )
        },
    )
    .await;
    check_order_and_duplicates(&msgs);
    for m in &msgs {
        assert_eq!(
            m["_topic"],
            format!("{prefix}/{device}/{}/motion", m["camera"].as_str().unwrap()).as_str()
        );
    }
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_evicts_the_oldest_counts_it_and_sends_the_rest_in_order() {
    let device = unique("uplink-full");
    let prefix = unique("central");
    // Nothing listens here yet: the uplink is down from the start.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        config(
            &device,
            &prefix,
            port,
            &dir.path().join("spool"),
            "max_bytes = 4096\n",
        ),
    )
    .unwrap();
    let (agent, addr) = start(&file);
    wait_health(&agent, &addr, "an eviction", |h| {
        h["uplink"]["evicted"].as_u64() >= Some(2)
    })
    .await;
    let h = health(&addr);
    assert!(h["uplink"]["spool"]["bytes"].as_u64() <= Some(4096), "{h}");
    let text = http_get(&addr, "/metrics");
    let evicted = text
        .lines()
        .find(|l| {
            l.starts_with("edge_agent_dropped_total{")
                && l.contains("place=\"uplink\"")
                && l.contains("reason=\"spool_evicted\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(evicted >= Some(2.0), "{text}");

    // The broker comes: what is left arrives, in order, without the evicted oldest.
    let broker = Mosquitto::start_on(port);
    let consumer = Consumer::start(broker.port, format!("{prefix}/{device}/+/motion")).await;
    wait_health(&agent, &addr, "the spool drained", |h| {
        h["uplink"]["connected"] == true && h["uplink"]["spool"]["messages"] == 0
    })
    .await;
    wait::until_async("spooled events on the uplink", LONG, || {
        !consumer.messages().is_empty()
    })
    .await;
    let msgs = consumer.messages();
    check_order_and_duplicates(&msgs);
    let first = msgs
        .iter()
        .map(|m| seq_of(m["message_id"].as_str().unwrap()).1)
        .min()
        .unwrap();
    assert!(first >= 2, "the oldest were evicted, yet seq {first} came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_file_is_moved_aside_and_events_flow_through_a_fresh_one() {
    let device = unique("uplink-corrupt");
    let prefix = unique("central");
    let broker = Mosquitto::start();
    let consumer = Consumer::start(broker.port, format!("{prefix}/{device}/+/motion")).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("spool.redb"), vec![0x5a; 20_000]).unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, config(&device, &prefix, broker.port, &spool, "")).unwrap();
    let (agent, addr) = start(&file);
    let aside = agent.wait_state("spool_moved_aside", 1, LONG);
    let moved = aside["moved_to"].as_str().unwrap().to_string();
    assert!(moved.contains("spool.redb.corrupt-"), "{aside}");
    assert_eq!(std::fs::read(&moved).unwrap(), vec![0x5a; 20_000]);
    wait::until_async("motion events on the uplink", LONG, || {
        consumer.messages().len() >= 2
    })
    .await;
    wait_health(&agent, &addr, "the uplink connected", |h| {
        h["uplink"]["connected"] == true
    })
    .await;
    check_order_and_duplicates(&consumer.messages());
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}
