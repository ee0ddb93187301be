//! The worker loop, independent of the transport: frames (JPEG bytes, their camera and
//! sequence number, and an ack callback) come in on a bounded channel; detections and
//! snapshots go out through a [`ResultSink`]; a frame is acked only after the broker
//! confirmed its detections, so a worker that exits in between (forced out by its grace
//! period) leaves the frame to be delivered again instead of acking an answer that never
//! left. A frame with detections of an event class gets a snapshot
//! (privacy classes pixelated), handed over before the detections that name it: the
//! agent's incident events refer to it, so a consumer that fetches it finds it. Workers
//! publish no events: incidents are the agent's (`crate::results`).
//!
//! When several frames wait, up to [`Pipeline::max_batch`] run in one session call.
//! A payload that is not a JPEG is rejected and the loop goes on; a failing model
//! requeues what it holds and stops the loop with the error.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::EventsConfig;
use super::image::{self, RgbImage};
use super::pipeline::{Detections, Pipeline};
use super::snapshot;
use super::InferError;
use crate::escalate::message::unix_ns_now;
use crate::shutdown::Shutdown;
use crate::telemetry::latency::{Latency, Marks};
use crate::telemetry::metrics::{self, metrics};

/// What the worker needs to know about a frame besides its pixels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// The device that sent the frame; its results go back to it (a worker behind
    /// `edge-agent scaler` serves many devices). Empty: the worker's own device.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    pub camera: String,
    pub seq: u64,
    /// Capture time, milliseconds since the Unix epoch.
    pub captured_ms: u64,
}

/// How a frame's message ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Handled: detections (and event) handed over.
    Done,
    /// Never handle again (not a JPEG).
    Reject(String),
    /// Could not be finished now (sink or model failure); deliver again.
    Requeue(String),
}

/// Settles a frame's message with the broker; awaited in frame order (see [`Settle`]).
pub type Acker = Box<dyn FnOnce(AckOutcome) -> AckSent + Send>;
pub type AckSent = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct WorkItem {
    pub meta: FrameMeta,
    pub jpeg: bytes::Bytes,
    pub ack: Acker,
    /// The frame's latency marks so far (agent stamps, worker receipt); with them
    /// the detections carry a per-stage `latency` object.
    pub marks: Option<Marks>,
}

/// Version of the detections message (`schemas/detections.v1.json`).
pub const DETECTIONS_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectionsMessage {
    /// [`DETECTIONS_VERSION`].
    pub version: u32,
    #[serde(flatten)]
    pub meta: FrameMeta,
    pub detections: Detections,
    /// Per-stage latency from capture to this message (frames from the agent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Id of this frame's snapshot, handed over just before (frames with detections of
    /// an event class only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Where it was stored, with `events.snapshot_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Its id ([`snapshot_id`]); the file name adds `.jpg`.
    pub name: String,
    pub meta: FrameMeta,
    pub jpeg: Vec<u8>,
}

/// Where results go (the transport implements it). Errors are reasons in words; the
/// frame is then requeued.
pub trait ResultSink: Send + Sync + 'static {
    /// Hands the detections over (in frame order) and returns the broker's confirmation,
    /// which the frame's ack waits for while the next frames run.
    fn detections(
        &self,
        msg: &DetectionsMessage,
    ) -> impl Future<Output = Result<Confirmation, String>> + Send;
    fn snapshot(&self, snap: &Snapshot) -> impl Future<Output = Result<(), String>> + Send;
}

/// The broker's word that handed-over detections arrived.
pub struct Confirmation(Pin<Box<dyn Future<Output = Result<(), String>> + Send>>);

impl Confirmation {
    pub fn new(f: impl Future<Output = Result<(), String>> + Send + 'static) -> Self {
        Confirmation(Box::pin(f))
    }
    /// Already confirmed (a sink whose hand-over is its confirmation).
    pub fn done() -> Self {
        Confirmation::new(std::future::ready(Ok(())))
    }
    /// How the frame's message ends once the broker answered (or did not in time).
    async fn outcome(self) -> AckOutcome {
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.0).await {
            Ok(Ok(())) => AckOutcome::Done,
            Ok(Err(reason)) => {
                tracing::warn!(%reason, "Detections not confirmed by the broker; frame requeued.");
                AckOutcome::Requeue(reason)
            }
            Err(_) => {
                tracing::warn!(within = ?CONFIRM_TIMEOUT, "Detections not confirmed by the broker in time; frame requeued.");
                AckOutcome::Requeue(format!(
                    "detections not confirmed by the broker within {CONFIRM_TIMEOUT:?}"
                ))
            }
        }
    }
}

/// How long a frame's ack waits for the broker to confirm its detections before the
/// frame is left for redelivery.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame's snapshot id: unique per camera and frame, usable in a topic and a routing
/// key (`[A-Za-z0-9_-]`).
pub fn snapshot_id(meta: &FrameMeta) -> String {
    format!("{}-{}-{}", meta.camera, meta.captured_ms, meta.seq).replace('.', "_")
}

/// The outputs of one frame, before they are handed over.
struct Output {
    detections: Detections,
    /// The snapshot JPEG, when an event class was detected.
    snapshot: Option<Vec<u8>>,
}

/// Runs until the channel closes or `shutdown` fires. Returns the pipeline's error if
/// the model fails (after requeueing the frames it held).
pub async fn run<S: ResultSink>(
    pipeline: Pipeline,
    events: EventsConfig,
    rx: mpsc::Receiver<WorkItem>,
    sink: S,
    shutdown: Shutdown,
) -> Result<(), InferError> {
    let (settle_tx, settle_rx) = mpsc::channel(SETTLE_QUEUE);
    let settler = tokio::spawn(settle(settle_rx));
    let result = run_frames(pipeline, events, rx, sink, shutdown, Settle(settle_tx)).await;
    // The frames taken are settled before the loop counts as finished.
    let _ = settler.await;
    result
}

/// Frames whose outcome is known or awaited (the broker's confirmation), at most, before
/// the loop waits for the oldest to settle.
const SETTLE_QUEUE: usize = 64;

type Pending = Pin<Box<dyn Future<Output = AckOutcome> + Send>>;

/// Acks frames in the order they came in, each once its outcome is known: MQTT brokers
/// take QoS 1 acks only in order (rumqttd drops a client that acks out of order), and
/// the broker confirms results in order anyway, so nothing waits longer for it.
#[derive(Clone)]
struct Settle(mpsc::Sender<(Pending, Acker)>);

impl Settle {
    async fn now(&self, ack: Acker, outcome: AckOutcome) {
        self.later(ack, Box::pin(std::future::ready(outcome))).await;
    }
    async fn later(&self, ack: Acker, outcome: Pending) {
        // The settler ends only after this sender is dropped.
        let _ = self.0.send((outcome, ack)).await;
    }
}

async fn settle(mut rx: mpsc::Receiver<(Pending, Acker)>) {
    while let Some((outcome, ack)) = rx.recv().await {
        ack(outcome.await).await;
    }
}

async fn run_frames<S: ResultSink>(
    pipeline: Pipeline,
    events: EventsConfig,
    mut rx: mpsc::Receiver<WorkItem>,
    sink: S,
    shutdown: Shutdown,
    settle: Settle,
) -> Result<(), InferError> {
    let mut pipeline = Some(pipeline);
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            item = rx.recv() => match item { Some(i) => i, None => return Ok(()) },
        };
        let max = pipeline.as_ref().map_or(1, Pipeline::max_batch);
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        let (metas, jpegs): (Vec<FrameMeta>, Vec<bytes::Bytes>) = batch
            .iter()
            .map(|i| (i.meta.clone(), i.jpeg.clone()))
            .unzip();
        let started = unix_ns_now();
        let mut marks: Vec<Option<Marks>> = batch.iter_mut().map(|i| i.marks.take()).collect();
        let mut acks: Vec<Option<Acker>> = batch.into_iter().map(|i| Some(i.ack)).collect();
        let p = pipeline
            .take()
            .expect("pipeline is returned after every batch");
        let events_cfg = events.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut p = p;
            let r = process(&mut p, &jpegs, &events_cfg);
            (p, r)
        })
        .await;
        let (p, results) = match joined {
            Ok(v) => v,
            Err(e) => {
                for a in acks.iter_mut().filter_map(Option::take) {
                    settle
                        .now(a, AckOutcome::Requeue("worker task failed".into()))
                        .await;
                }
                return Err(InferError::Run {
                    path: PathBuf::new(),
                    reason: format!("inference task failed: {e}"),
                });
            }
        };
        pipeline = Some(p);
        let processed = unix_ns_now();
        for m in marks.iter_mut().flatten() {
            m.started = started;
            m.processed = processed;
        }
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                for a in acks.iter_mut().filter_map(Option::take) {
                    settle.now(a, AckOutcome::Requeue(e.to_string())).await;
                }
                tracing::error!(error = %e, "Inference failed; worker stops.");
                return Err(e);
            }
        };
        for (((meta, result), ack), marks) in metas.into_iter().zip(results).zip(acks).zip(marks) {
            let ack = ack.expect("each frame is acked once");
            match result {
                Err(e) => {
                    let why = if e.is_bad_input() {
                        "not_jpeg"
                    } else {
                        "snapshot"
                    };
                    metrics()
                        .rejected
                        .get_or_create(&metrics::reason("worker", why))
                        .inc();
                    if metrics::should_log("worker-not-jpeg", std::time::Duration::from_secs(10)) {
                        tracing::warn!(camera = %meta.camera, seq = meta.seq, error = %e, "Frame rejected.");
                    }
                    settle.now(ack, AckOutcome::Reject(e.to_string())).await;
                }
                Ok(out) => match hand_over(&sink, &events, meta, out, marks).await {
                    Ok(confirmation) => {
                        settle.later(ack, Box::pin(confirmation.outcome())).await;
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "Results not handed over; frame requeued.");
                        settle.now(ack, AckOutcome::Requeue(reason)).await;
                    }
                },
            }
        }
    }
}

/// Decodes and runs a batch. The outer error is the model's (stop); inner errors are
/// the frames' (reject).
fn process(
    p: &mut Pipeline,
    jpegs: &[bytes::Bytes],
    events: &EventsConfig,
) -> Result<Vec<Result<Output, InferError>>, InferError> {
    let mut decoded: Vec<Result<(RgbImage, f64), InferError>> = Vec::with_capacity(jpegs.len());
    for j in jpegs {
        let t = Instant::now();
        decoded.push(image::decode_jpeg(j).map(|img| (img, t.elapsed().as_secs_f64() * 1e3)));
    }
    let good: Vec<&RgbImage> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().map(|(i, _)| i))
        .collect();
    let mut dets = p.run_images(&good)?.into_iter();
    let quality = events.snapshot_quality.as_u32() as u8;
    let mut out = Vec::with_capacity(jpegs.len());
    for d in decoded {
        out.push(match d {
            Err(e) => Err(e),
            Ok((img, decode_ms)) => {
                let mut detections = dets.next().expect("one result per decoded frame");
                detections.timings.decode_ms = decode_ms;
                detections.timings.total_ms += decode_ms;
                let eventful = detections
                    .items
                    .iter()
                    .any(|d| events.classes.contains(&d.class));
                if !eventful {
                    Ok(Output {
                        detections,
                        snapshot: None,
                    })
                } else {
                    snapshot::snapshot_jpeg(
                        &img,
                        &detections.items,
                        &events.privacy_classes,
                        quality,
                    )
                    .map(|jpeg| Output {
                        detections,
                        snapshot: Some(jpeg),
                    })
                }
            }
        });
    }
    Ok(out)
}

async fn hand_over<S: ResultSink>(
    sink: &S,
    events: &EventsConfig,
    meta: FrameMeta,
    out: Output,
    marks: Option<Marks>,
) -> Result<Confirmation, String> {
    let latency = marks.map(|mut m| {
        let t = &out.detections.timings;
        m.decode_ms = t.decode_ms;
        m.preprocess_ms = t.preprocess_ms;
        m.inference_ms = t.inference_ms;
        m.postprocess_ms = t.postprocess_ms;
        m.result_at = unix_ns_now();
        Latency::compute(&m)
    });
    let (mut snapshot, mut snapshot_path) = (None, None);
    if let Some(jpeg) = out.snapshot {
        let id = snapshot_id(&meta);
        if let Some(dir) = &events.snapshot_dir {
            let path = dir.join(format!("{id}.jpg"));
            write_atomically(&path, &jpeg)
                .await
                .map_err(|e| format!("snapshot {}: {e}", path.display()))?;
            snapshot_path = Some(path);
        }
        let snap = Snapshot {
            name: id.clone(),
            meta: meta.clone(),
            jpeg,
        };
        sink.snapshot(&snap).await?;
        snapshot = Some(id);
    }
    let msg = DetectionsMessage {
        version: DETECTIONS_VERSION,
        meta,
        detections: out.detections,
        latency,
        snapshot,
        snapshot_path,
    };
    // Counted by the transport when the broker confirms it, as every publish is.
    sink.detections(&msg).await
}

/// Writes to a temporary name and renames, so a reader never sees half a file.
async fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("jpg.part");
    tokio::fs::write(&tmp, data).await?;
    tokio::fs::rename(&tmp, path).await
}
