//! Snapshots up the uplink (issue #27, item 1): the workers publish each snapshot on
//! the frames transport (the embedded broker here); the agent reads it back and sends
//! it through the spool to the central broker (a private Mosquitto) under the uplink's
//! prefix, before the incident that names it, with the same bytes the worker wrote to
//! `events.snapshot_dir`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::common::agent::{http_get, Agent};
use crate::common::broker::{unique, Mosquitto};
use crate::common::wait;

const LONG: Duration = Duration::from_secs(180);

/// Every message under `{prefix}/{device}/#` on the uplink broker, in arrival order.
async fn subscribe(port: u16, filter: String) -> Arc<Mutex<Vec<(String, Bytes)>>> {
    let mut opts = rumqttc::MqttOptions::new(unique("uplink-snapshots"), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
    client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = got.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut tx = Some(tx);
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    sink.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.clone()));
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("the subscription acknowledged")
        .unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incidents_snapshot_goes_up_the_uplink_before_it_with_the_same_bytes() {
    let device = unique("uplink-snap");
    let prefix = unique("central");
    let broker = Mosquitto::start();
    let got = subscribe(broker.port, format!("{prefix}/{device}/#")).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let file = dir.path().join("agent.toml");
    // A demo camera whose red square (`fire` to the test model) moves 2 s in 5.
    std::fs::write(
        &file,
        format!(
            "[device]\nid = \"{device}\"\n\
             [[cameras]]\nid = \"gate\"\nurl = \"demo://gate?width=640&height=360&fps=10\"\n\
             [scaling]\nmax_workers = 1\n\
             [events]\nsnapshot_dir = \"{}\"\n\
             [telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nheartbeat_interval = \"0s\"\n\
             [uplink]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic_prefix = \"{prefix}\"\n\
             [uplink.spool]\ndir = \"{}\"\n",
            snapshots.display(),
            broker.port,
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let addr = agent.metrics_addr(Duration::from_secs(30));

    // An incident start on the uplink, and the snapshot it names.
    let base = format!("{prefix}/{device}/gate/");
    let (incident_at, snapshot) = wait::value_async_explained(
        "a fire incident on the uplink",
        LONG,
        || {
            let got = got.lock().unwrap();
            got.iter().enumerate().find_map(|(i, (topic, p))| {
                if topic != &format!("{base}events/fire") {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_slice(p).ok()?;
                Some((i, v["snapshot"].as_str()?.to_string()))
            })
        },
        || format!("; log:\n{}", agent.log_text()),
    )
    .await;
    let msgs = got.lock().unwrap().clone();
    let topic = format!("{base}snapshots/{snapshot}");
    let (snap_at, up) = msgs
        .iter()
        .enumerate()
        .find(|(_, (t, _))| *t == topic)
        .map(|(i, (_, p))| (i, p.clone()))
        .unwrap_or_else(|| {
            let topics: Vec<&String> = msgs.iter().map(|(t, _)| t).collect();
            panic!("snapshot {snapshot} not on the uplink; topics {topics:?}")
        });
    assert!(
        snap_at < incident_at,
        "the snapshot came after the incident that names it"
    );
    // The same bytes the worker published (and wrote to snapshot_dir).
    let written = std::fs::read(snapshots.join(format!("{snapshot}.jpg"))).unwrap();
    assert_eq!(up.len(), written.len());
    assert!(
        up[..] == written[..],
        "the snapshot's bytes changed on the way up"
    );
    edge_agent::image::decode_jpeg(&up).expect("a JPEG");
    // Both went through the spool and left it once the broker confirmed them.
    let health: serde_json::Value = serde_json::from_str(&http_get(&addr, "/health")).unwrap();
    assert!(health["uplink"]["sent"].as_u64() >= Some(2), "{health}");
    // Not asserted here: on this loaded machine (load 25-45 on 2 cores) the stop was
    // seen unclean (escalator and results past the 20 s deadline, exit 1) with an
    // uplink and a worker; reported for its own look, see the branch's report.
    let _ = agent.stop_and_wait();
}
