//! Scaling against the real `edge-agent worker` process, by subject: the worker pool's
//! supervision (`pool`), `edge-agent scaler` on a shared RabbitMQ queue (`scaler`), and
//! the agent scaling its own workers from camera motion (`agent`). The helpers they
//! share are here.

mod agent;
mod offload;
mod pool;
mod scaler;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use edge_agent::backoff::Backoff;
use edge_agent::clock::unix_ns_now;
use edge_agent::image::encode_rgb;
use edge_agent::scale::{run_owned, spawn_pool, WorkerSpec};
use edge_agent::transport::{AgentTransport, TransportConfig};
use edge_agent::wire::frame::VERSION;
use edge_agent::wire::{FrameHeader, FrameMessage};
use tokio_util::sync::CancellationToken;

use crate::common::agent::Agent;
use crate::common::broker::{amqp_url, unique};
use crate::common::models::{root, tiny_random};
use crate::common::procs::{alive, wait_gone};
use crate::common::wait;

fn worker_with_args(args: &[&str]) -> WorkerSpec {
    WorkerSpec {
        program: env!("CARGO_BIN_EXE_edge-agent").into(),
        args: args.iter().map(Into::into).collect(),
        env: vec![],
        input: None,
    }
}

/// A scaler configuration on random queue and exchange names.
struct Names {
    queue: String,
    exchange: String,
}

impl Names {
    fn new() -> Self {
        Self {
            queue: unique("frames"),
            exchange: unique("events"),
        }
    }

    fn transport_toml(&self) -> String {
        format!(
            "[transport]\nkind = \"amqp\"\namqp_url = \"{}\"\nframes_queue = \"{}\"\nevents_exchange = \"{}\"\nframe_ttl = \"300s\"\n",
            amqp_url(),
            self.queue,
            self.exchange
        )
    }

    fn transport(&self) -> TransportConfig {
        toml::from_str::<toml::Value>(&self.transport_toml()).unwrap()["transport"]
            .clone()
            .try_into()
            .unwrap()
    }
}

/// Deletes the durable queues and exchanges a test declared on the shared RabbitMQ.
async fn cleanup(names: &Names, devices: &[&str]) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for d in devices {
        edge_agent::transport::amqp::delete_topology(&ch, &names.transport(), d).await;
    }
    let _ = conn.close(200, "OK".into()).await;
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("scaler.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A small JPEG with a red square (the demo model calls it fire).
fn red_square_jpeg() -> Bytes {
    let (w, h) = (160u32, 120u32);
    let mut rgb = vec![40u8; (w * h * 3) as usize];
    for y in 40..80 {
        for x in 60..100 {
            let p = ((y * w + x) * 3) as usize;
            rgb[p..p + 3].copy_from_slice(&[230, 20, 20]);
        }
    }
    Bytes::from(encode_rgb(&rgb, w, h, 85).unwrap())
}

fn frame(device: &str, camera: &str, seq: u64, jpeg: &Bytes) -> FrameMessage {
    FrameMessage {
        header: FrameHeader {
            version: VERSION,
            device: device.into(),
            camera: camera.into(),
            event_id: format!("{camera}-1"),
            seq,
            captured: unix_ns_now(),
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
    }
}

/// Reads detections for `agents` until every (device, seq) in `want` is answered or
/// the deadline passes, pumping the scaler's log meanwhile; returns how many answers
/// each frame got, and the peak worker count seen in /proc.
async fn collect(
    scaler: &mut Agent,
    agents: &mut [(String, edge_agent::transport::Results)],
    want: &BTreeSet<(String, u64)>,
    timeout: Duration,
) -> (BTreeMap<(String, u64), u32>, usize) {
    let mut got: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut peak = 0;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !want.iter().all(|k| got.contains_key(k)) {
        peak = peak.max(scaler.children().len());
        for (device, results) in agents.iter_mut() {
            while let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_millis(20), results.next()).await
            {
                assert_eq!(&r.device, device, "results reach the frame's device");
                if r.kind == "detections" {
                    *got.entry((r.device.clone(), r.seq.unwrap())).or_default() += 1;
                }
            }
        }
    }
    (got, peak)
}

async fn wait_for_no_workers(scaler: &mut Agent, timeout: Duration) -> Vec<u32> {
    let mut left = Vec::new();
    wait::until_async("no workers", timeout, || {
        std::thread::sleep(Duration::from_millis(50));
        left = scaler.children();
        left.is_empty()
    })
    .await;
    left
}

/// A queue of the test's own on the events exchange, receiving every detections
/// message for `device` (not only the first answer, so duplicates show).
async fn detections_tap(exchange: &str, device: &str) -> (lapin::Connection, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // The exchange as the transport declares it (durable topic), in case we are first.
    crate::common::broker::declare_topic_exchange(&ch, exchange).await;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.into(),
        format!("{device}.*.detections").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

/// Drains what the tap has now into `got` ((camera, seq) -> answers).
async fn drain_tap(tap: &mut lapin::Consumer, got: &mut BTreeMap<(String, u64), u32>) {
    use futures::StreamExt;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(20), tap.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        let key = (
            v["camera"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        );
        *got.entry(key).or_default() += 1;
    }
}

/// `n` demo cameras, each escalating a burst of 15 frames and then next to nothing (15
/// per 10 minutes): a bounded burst, while the demo square keeps moving.
fn cameras_toml(n: usize, enabled: bool) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[cameras]]\nid = \"cam{i}\"\nurl = \"demo://moving-square\"\nenabled = {enabled}\n[cameras.escalation]\nbudget = 15\nbudget_window = \"10m\"\nmin_interval = \"100ms\"\n"
            )
        })
        .collect()
}

struct Settled {
    escalated: BTreeMap<String, u64>,
    /// When every frame escalated so far was first seen answered.
    drained: Option<Instant>,
    /// When, after that, no worker process was left.
    zero: Option<Instant>,
    left: Vec<u32>,
}

/// Waits (two minutes at most) until every frame the agent escalated is answered and
/// no worker process is left, calling `tick` as it goes.
async fn settle(
    agent: &mut Agent,
    tap: &mut lapin::Consumer,
    got: &mut BTreeMap<(String, u64), u32>,
    cameras: usize,
    tick: &mut dyn FnMut(&Agent),
) -> Settled {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Settled {
        escalated: BTreeMap::new(),
        drained: None,
        zero: None,
        left: Vec::new(),
    };
    loop {
        std::thread::sleep(Duration::from_millis(50));
        tick(agent);
        drain_tap(tap, got).await;
        out.escalated = escalated_per_camera(agent, cameras);
        let all = answered_per_camera(got, cameras) == out.escalated;
        if !all {
            out.drained = None;
            out.zero = None;
        } else if out.drained.is_none() {
            out.drained = Some(Instant::now());
        }
        out.left = agent.children();
        if all && out.left.is_empty() {
            out.zero.get_or_insert_with(Instant::now);
            return out;
        }
        if Instant::now() > deadline {
            return out;
        }
    }
}

/// Escalations per camera from the agent's /metrics.
fn escalated_per_camera(agent: &Agent, cameras: usize) -> BTreeMap<String, u64> {
    let m = agent.get("/metrics");
    (1..=cameras)
        .map(|i| {
            let cam = format!("cam{i}");
            let name = format!("edge_agent_escalations_total{{camera=\"{cam}\"}}");
            let n = crate::common::procs::metric(&m, &name).unwrap_or(0.0) as u64;
            (cam, n)
        })
        .collect()
}

/// Distinct frames answered per camera.
fn answered_per_camera(
    got: &BTreeMap<(String, u64), u32>,
    cameras: usize,
) -> BTreeMap<String, u64> {
    let mut per: BTreeMap<String, u64> = (1..=cameras).map(|i| (format!("cam{i}"), 0)).collect();
    for (cam, _) in got.keys() {
        *per.entry(cam.clone()).or_default() += 1;
    }
    per
}

/// The identities `(camera, seq)` of the frames waiting in `queue`, read without
/// taking them: each is fetched unacked and goes back when the connection closes.
async fn queued_frames(queue: &str) -> Vec<(String, u64)> {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
    {
        let f = edge_agent::wire::frame::decode(&m.delivery.data, usize::MAX)
            .unwrap_or_else(|e| panic!("a frame in {queue} that does not decode: {e}"));
        ids.push((f.header.camera, f.header.seq));
    }
    let _ = conn.close(200, "OK".into()).await;
    ids
}

/// A GPU server's config on the test's AMQP names: YOLOv4-tiny with random weights
/// (~45 ms a frame on one thread, no detection passes 0.99), prefetch 4, and the given
/// `[scaling]` lines.
fn gpu_server_config(dir: &std::path::Path, names: &Names, scaling: &str) -> String {
    write_config(
        dir,
        &format!(
            "[device]\nid = \"gpu-server\"\n{}prefetch = 4\n[scaling]\n{scaling}[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nthreads = 1\nconfidence = 0.99\n",
            names.transport_toml(),
            tiny_random("pytorch").display(),
            root().join("models/coco.names").display()
        ),
    )
}
