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
//! When several frames wait, up to [`Pipeline::max_batch`] run in one session call,
//! except the first call after the session opened, which takes only the oldest frame: a
//! worker started from zero finds the frames that queued while it loaded, the oldest is
//! the start of the incident that woke it, and its answer should not wait for a batch of
//! the later ones (nor share the session's slow first run with them).
//! A payload that is not a JPEG is rejected and the loop goes on; a failing model
//! requeues what it holds and stops the loop with the error.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::config::SnapshotConfig;
use super::pipeline::Pipeline;
use super::seams;
use super::snapshot;
use super::InferError;
use crate::clock::unix_ns_now;
use crate::image::{self, RgbImage};
use crate::shutdown::Shutdown;
use crate::telemetry::latency::Marks;
use crate::telemetry::metrics::{self, metrics, RejectReason};
pub use crate::wire::detections::{
    Detection, Detections, DetectionsMessage, FrameMeta, Latency, Timings, DETECTIONS_VERSION,
};
use crate::wire::regions::{self, Rect, Region};

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
pub type AckFn = Box<dyn FnOnce(AckOutcome) -> AckSent + Send>;
pub type AckSent = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a frame's JPEG is laid out (from its header): the whole frame at its top-left,
/// crops of the camera frame below it (`wire::regions`). The default is a JPEG that
/// is the whole frame, at the camera's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    /// Size of the whole frame in the JPEG; (0, 0): the whole JPEG.
    pub whole: (u32, u32),
    /// The camera frame's size, the pixels detections are given in; (0, 0): `whole`.
    pub source: (u32, u32),
    /// Crops to detect on instead of the whole frame.
    pub regions: Vec<Region>,
}

impl Payload {
    /// The size of the JPEG the layout describes: the whole frame and every crop
    /// below it (`wire::regions::layout`); `None` when the header gives no size.
    pub fn extent(&self) -> Option<(u32, u32)> {
        if self.whole == (0, 0) {
            return None;
        }
        let mut e = self.whole;
        for r in &self.regions {
            let p = r.in_payload();
            e.0 = e.0.max(p.x.saturating_add(p.w));
            e.1 = e.1.max(p.y.saturating_add(p.h));
        }
        Some(e)
    }
    /// The layout a frame header describes.
    pub fn of(h: &crate::wire::FrameHeader) -> Self {
        Self {
            whole: (h.width, h.height),
            source: h.source_size(),
            regions: h.regions.clone(),
        }
    }
}

pub struct WorkItem {
    pub meta: FrameMeta,
    pub jpeg: bytes::Bytes,
    pub payload: Payload,
    pub ack: AckFn,
    /// The frame's latency marks so far (agent stamps, worker receipt); with them
    /// the detections carry a per-stage `latency` object.
    pub marks: Option<Marks>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Its id ([`snapshot_id`]); the file name adds `.jpg`.
    pub name: String,
    pub meta: FrameMeta,
    pub jpeg: Vec<u8>,
}

/// Why a frame's results did not reach the broker; the frame is then requeued.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("result message could not be serialised: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("snapshot {}: {source}", path.display())]
    SnapshotFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("{what} not confirmed by the broker within {within:?}")]
    Unconfirmed {
        what: &'static str,
        within: Duration,
    },
}

/// Where results go (the transport implements it, `infer::broker::TransportSink`).
pub trait ResultSink: Send + Sync + 'static {
    /// Hands the detections over (in frame order) and returns the broker's confirmation,
    /// which the frame's ack waits for while the next frames run.
    fn detections(
        &self,
        msg: &DetectionsMessage,
    ) -> impl Future<Output = Result<Confirmation, SinkError>> + Send;
    fn snapshot(&self, snap: &Snapshot) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The broker's word that handed-over detections arrived.
pub struct Confirmation(Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>);

impl Confirmation {
    pub fn new(f: impl Future<Output = Result<(), SinkError>> + Send + 'static) -> Self {
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
                AckOutcome::Requeue(reason.to_string())
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
    events: SnapshotConfig,
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
struct Settle(mpsc::Sender<(Pending, AckFn)>);

impl Settle {
    async fn now(&self, ack: AckFn, outcome: AckOutcome) {
        self.later(ack, Box::pin(std::future::ready(outcome))).await;
    }
    async fn later(&self, ack: AckFn, outcome: Pending) {
        // The settler ends only after this sender is dropped.
        let _ = self.0.send((outcome, ack)).await;
    }
}

async fn settle(mut rx: mpsc::Receiver<(Pending, AckFn)>) {
    while let Some((outcome, ack)) = rx.recv().await {
        ack(outcome.await).await;
    }
}

async fn run_frames<S: ResultSink>(
    pipeline: Pipeline,
    events: SnapshotConfig,
    mut rx: mpsc::Receiver<WorkItem>,
    sink: S,
    shutdown: Shutdown,
    settle: Settle,
) -> Result<(), InferError> {
    let mut pipeline = Some(pipeline);
    let mut first_call = true;
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            item = rx.recv() => match item { Some(i) => i, None => return Ok(()) },
        };
        let max = if std::mem::take(&mut first_call) {
            1
        } else {
            pipeline.as_ref().map_or(1, Pipeline::max_batch)
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        let metas: Vec<FrameMeta> = batch.iter().map(|i| i.meta.clone()).collect();
        let jpegs: Vec<(bytes::Bytes, Payload)> = batch
            .iter_mut()
            .map(|i| (i.jpeg.clone(), std::mem::take(&mut i.payload)))
            .collect();
        let started = unix_ns_now();
        let mut marks: Vec<Option<Marks>> = batch.iter_mut().map(|i| i.marks.take()).collect();
        let mut acks: Vec<Option<AckFn>> = batch.into_iter().map(|i| Some(i.ack)).collect();
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
                    let why = match e {
                        InferError::Oversized { .. } => RejectReason::Oversized,
                        _ if e.is_bad_input() => RejectReason::NotJpeg,
                        _ => RejectReason::Snapshot,
                    };
                    metrics()
                        .rejected
                        .get_or_create(&metrics::reject_reason("worker", why))
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
                        settle
                            .now(ack, AckOutcome::Requeue(reason.to_string()))
                            .await;
                    }
                },
            }
        }
    }
}

/// A decoded frame: the whole frame (for the snapshot) and what the model looks at.
struct Decoded {
    whole: RgbImage,
    source: (u32, u32),
    /// The model's inputs and where each lies in the camera frame (`None`: the whole
    /// frame).
    inputs: Vec<(RgbImage, Option<Rect>)>,
    decode_ms: f64,
}

/// Decodes a frame's JPEG and cuts it as its [`Payload`] says; a layout that does not
/// fit the JPEG is a bad frame. The JPEG's size is read from its header first: one
/// larger than its frame header announces, or than `max_pixels`, is refused undecoded.
fn cut(jpeg: &[u8], payload: &Payload, max_pixels: u64) -> Result<Decoded, InferError> {
    let t = Instant::now();
    let (w, h) = image::jpeg_size(jpeg)?;
    let oversized = |reason: String| InferError::Oversized {
        width: w,
        height: h,
        reason,
    };
    if w as u64 * h as u64 > max_pixels {
        return Err(oversized(format!(
            "more than inference.max_frame_pixels = {max_pixels}"
        )));
    }
    if let Some(announced) = payload.extent() {
        if w > announced.0 || h > announced.1 {
            return Err(oversized(format!(
                "its frame header announces {}x{}",
                announced.0, announced.1
            )));
        }
    }
    let img = image::decode_jpeg(jpeg)?;
    let whole = match payload.whole {
        (0, 0) => (img.width, img.height),
        s => s,
    };
    let source = match payload.source {
        (0, 0) => whole,
        s => s,
    };
    let bad = |what: String| InferError::BadImage {
        bytes: jpeg.len(),
        reason: format!("{what} is outside the {}x{} JPEG", img.width, img.height),
    };
    let part = |r: &Rect| -> Result<RgbImage, InferError> {
        if !r.within(img.width, img.height) {
            return Err(bad(format!("region {r:?}")));
        }
        Ok(RgbImage::new(
            r.w,
            r.h,
            regions::cut_rgb(&img.data, img.width, r),
        )?)
    };
    let whole_rect = Rect {
        x: 0,
        y: 0,
        w: whole.0,
        h: whole.1,
    };
    let inputs = payload
        .regions
        .iter()
        .map(|r| part(&r.in_payload()).map(|i| (i, Some(r.frame))))
        .collect::<Result<Vec<_>, _>>()?;
    let whole = if whole == (img.width, img.height) {
        img
    } else {
        part(&whole_rect).map_err(|_| bad(format!("whole frame {}x{}", whole.0, whole.1)))?
    };
    let inputs = if inputs.is_empty() {
        vec![(whole.clone(), None)]
    } else {
        inputs
    };
    Ok(Decoded {
        whole,
        source,
        inputs,
        decode_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// One frame's detections in camera pixels, from its inputs' detections: a crop's
/// boxes are shifted by its place, the whole frame's scaled to the camera's size, and
/// pieces of one object cut by the edge between two crops joined ([`seams`]).
fn to_camera(d: &Decoded, per_input: Vec<Detections>) -> Detections {
    let mut items = Vec::new();
    let mut timings = Timings::default();
    let mut provider = "";
    for (det, (img, frame)) in per_input.into_iter().zip(&d.inputs) {
        provider = det.provider;
        let t = &det.timings;
        timings.preprocess_ms += t.preprocess_ms;
        timings.inference_ms += t.inference_ms;
        timings.postprocess_ms += t.postprocess_ms;
        timings.batch = timings.batch.max(t.batch);
        for mut i in det.items {
            let b = [i.x, i.y, i.w, i.h];
            let [x, y, w, h] = match frame {
                Some(f) => regions::crop_to_camera(b, f),
                None => regions::rescale(b, (img.width, img.height), d.source),
            };
            (i.x, i.y, i.w, i.h) = (x, y, w, h);
            items.push((*frame, i));
        }
    }
    let items = seams::join_cut_objects(items);
    timings.decode_ms = d.decode_ms;
    timings.total_ms =
        d.decode_ms + timings.preprocess_ms + timings.inference_ms + timings.postprocess_ms;
    let regions = d.inputs.iter().filter(|(_, f)| f.is_some()).count();
    Detections {
        items,
        provider,
        width: d.source.0,
        height: d.source.1,
        regions,
        timings,
    }
}

/// Detects on one frame's JPEG laid out as `payload` says, boxes in camera pixels: what
/// the worker does with a frame, without snapshot or hand-over (benchmarks use it).
pub fn detect(p: &mut Pipeline, jpeg: &[u8], payload: &Payload) -> Result<Detections, InferError> {
    let d = cut(jpeg, payload, p.max_frame_pixels())?;
    let inputs: Vec<&RgbImage> = d.inputs.iter().map(|(i, _)| i).collect();
    let per_input = p.run_images(&inputs)?;
    Ok(to_camera(&d, per_input))
}

/// Decodes and runs a batch. The outer error is the model's (stop); inner errors are
/// the frames' (reject).
fn process(
    p: &mut Pipeline,
    jpegs: &[(bytes::Bytes, Payload)],
    events: &SnapshotConfig,
) -> Result<Vec<Result<Output, InferError>>, InferError> {
    let max_pixels = p.max_frame_pixels();
    let decoded: Vec<Result<Decoded, InferError>> = jpegs
        .iter()
        .map(|(j, payload)| cut(j, payload, max_pixels))
        .collect();
    let inputs: Vec<&RgbImage> = decoded
        .iter()
        .flatten()
        .flat_map(|d| d.inputs.iter().map(|(i, _)| i))
        .collect();
    let mut dets = p.run_images(&inputs)?.into_iter();
    let quality = events.snapshot_quality.as_u32() as u8;
    let mut out = Vec::with_capacity(jpegs.len());
    for d in decoded {
        out.push(match d {
            Err(e) => Err(e),
            Ok(d) => {
                let mine: Vec<Detections> = dets.by_ref().take(d.inputs.len()).collect();
                let detections = to_camera(&d, mine);
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
                    // The snapshot is the whole frame: boxes back to its size.
                    let on_whole: Vec<Detection> = detections
                        .items
                        .iter()
                        .map(|i| {
                            let [x, y, w, h] = regions::rescale(
                                [i.x, i.y, i.w, i.h],
                                d.source,
                                (d.whole.width, d.whole.height),
                            );
                            Detection {
                                x,
                                y,
                                w,
                                h,
                                ..i.clone()
                            }
                        })
                        .collect();
                    let on_whole = with_privacy_outside_crops(p, &d, on_whole, events)?;
                    snapshot::snapshot_jpeg(&d.whole, &on_whole, &events.privacy_classes, quality)
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

/// The snapshot is the whole frame, but with crops the model saw only the crops: a
/// privacy-class object elsewhere was never looked for. So, for a snapshot with privacy
/// classes set, the model also runs on the whole frame and what it finds of those
/// classes is pixelated too (it is not published: the crops' detections are the
/// frame's). One more run, on eventful frames only.
fn with_privacy_outside_crops(
    p: &mut Pipeline,
    d: &Decoded,
    mut on_whole: Vec<Detection>,
    events: &SnapshotConfig,
) -> Result<Vec<Detection>, InferError> {
    let crops = d.inputs.iter().any(|(_, frame)| frame.is_some());
    if !crops || events.privacy_classes.is_empty() {
        return Ok(on_whole);
    }
    let whole = p.run_images(&[&d.whole])?;
    on_whole.extend(
        whole
            .into_iter()
            .flat_map(|det| det.items)
            .filter(|i| events.privacy_classes.contains(&i.class)),
    );
    Ok(on_whole)
}

async fn hand_over<S: ResultSink>(
    sink: &S,
    events: &SnapshotConfig,
    meta: FrameMeta,
    out: Output,
    marks: Option<Marks>,
) -> Result<Confirmation, SinkError> {
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
            if let Err(source) = write_atomically(&path, &jpeg).await {
                return Err(SinkError::SnapshotFile { path, source });
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::encode_rgb;

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    /// A 64x96 payload: a 64x32 whole frame on top, one 48x48 crop at row 48 of a
    /// 256x128 camera frame.
    fn payload(regions: Vec<Region>) -> (Vec<u8>, Payload) {
        let jpeg = encode_rgb(&vec![90; 64 * 96 * 3], 64, 96, 90).unwrap();
        (
            jpeg,
            Payload {
                whole: (64, 32),
                source: (256, 128),
                regions,
            },
        )
    }

    #[test]
    fn a_payload_is_cut_as_its_layout_says_and_a_layout_outside_it_is_a_bad_frame() {
        let crop = Region {
            frame: rect(100, 40, 48, 48),
            at: [0, 48],
        };
        let (jpeg, p) = payload(vec![crop]);
        let d = cut(&jpeg, &p, u64::MAX).unwrap();
        assert_eq!((d.whole.width, d.whole.height), (64, 32));
        assert_eq!(d.source, (256, 128));
        assert_eq!(d.inputs.len(), 1);
        assert_eq!((d.inputs[0].0.width, d.inputs[0].0.height), (48, 48));
        assert_eq!(d.inputs[0].1, Some(crop.frame));

        // No regions: the whole frame is the model's input.
        let (_, p) = payload(Vec::new());
        let jpeg = encode_rgb(&vec![90; 64 * 32 * 3], 64, 32, 90).unwrap();
        let d = cut(&jpeg, &p, u64::MAX).unwrap();
        assert_eq!(d.inputs.len(), 1);
        assert_eq!(d.inputs[0].1, None);

        let rows = [
            (
                "crop below the JPEG",
                vec![Region {
                    frame: rect(0, 0, 48, 48),
                    at: [0, 60],
                }],
                (64, 32),
                "region",
            ),
            (
                "whole frame larger than the JPEG",
                vec![],
                (64, 128),
                "whole frame",
            ),
        ];
        for (name, regions, whole, says) in rows {
            let (jpeg, mut p) = payload(regions);
            p.whole = whole;
            let err = cut(&jpeg, &p, u64::MAX)
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(err.is_bad_input(), "{name}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(says) && msg.contains("64x96"), "{name}: {msg}");
        }
    }

    /// A JPEG whose start-of-frame says `w`x`h` over 16x16 pixels of data: what a
    /// hostile publisher sends to make a worker allocate `w * h * 3` bytes.
    fn claiming(w: u16, h: u16) -> Vec<u8> {
        let mut jpeg = encode_rgb(&vec![90; 16 * 16 * 3], 16, 16, 90).unwrap();
        let sof = jpeg
            .windows(2)
            .position(|m| m[0] == 0xFF && (m[1] == 0xC0 || m[1] == 0xC2))
            .expect("a start-of-frame marker");
        jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_jpeg_larger_than_announced_or_than_the_maximum_is_refused_before_decoding() {
        let announced = |w, h| Payload {
            whole: (w, h),
            source: (0, 0),
            regions: Vec::new(),
        };
        let rows = [
            (
                claiming(8192, 8192),
                announced(640, 360),
                u64::MAX,
                "frame JPEG of 8192x8192 refused before decoding: its frame header announces 640x360",
            ),
            (
                claiming(8192, 8192),
                announced(0, 0),
                3840 * 4320,
                "frame JPEG of 8192x8192 refused before decoding: more than inference.max_frame_pixels = 16588800",
            ),
            (
                claiming(640, 480),
                announced(640, 360),
                u64::MAX,
                "frame JPEG of 640x480 refused before decoding: its frame header announces 640x360",
            ),
        ];
        for (jpeg, p, max, want) in rows {
            match cut(&jpeg, &p, max) {
                Err(e @ InferError::Oversized { .. }) => {
                    assert!(e.is_bad_input());
                    assert_eq!(e.to_string(), want);
                }
                Err(e) => panic!("{want}: refused for another reason: {e}"),
                Ok(d) => panic!("{want}: decoded {}x{}", d.whole.width, d.whole.height),
            }
        }
        // What the header announces, crops included, is decoded.
        let crop = Region {
            frame: rect(100, 40, 48, 48),
            at: [0, 48],
        };
        let (jpeg, p) = payload(vec![crop]);
        assert_eq!(p.extent(), Some((64, 96)));
        assert!(cut(&jpeg, &p, 64 * 96).is_ok());
        assert!(matches!(
            cut(&jpeg, &p, 64 * 96 - 1),
            Err(InferError::Oversized { .. })
        ));
    }

    #[test]
    fn boxes_of_crops_and_of_the_whole_frame_come_back_in_camera_pixels() {
        let det = |x: f32| Detection {
            class_id: 0,
            class: "fire".into(),
            score: 0.9,
            x,
            y: 4.0,
            w: 8.0,
            h: 6.0,
        };
        let dets = |items: Vec<Detection>, w, h| Detections {
            items,
            provider: "cpu",
            width: w,
            height: h,
            regions: 0,
            timings: Timings {
                inference_ms: 2.0,
                batch: 2,
                ..Timings::default()
            },
        };
        let img = |w, h| RgbImage::new(w, h, vec![0; (w * h * 3) as usize]).unwrap();
        let d = Decoded {
            whole: img(64, 32),
            source: (256, 128),
            inputs: vec![
                (img(48, 48), Some(rect(100, 40, 48, 48))),
                (img(48, 48), Some(rect(10, 20, 48, 48))),
            ],
            decode_ms: 1.0,
        };
        let got = to_camera(
            &d,
            vec![dets(vec![det(2.0)], 48, 48), dets(vec![det(30.0)], 48, 48)],
        );
        let boxes: Vec<[f32; 4]> = got.items.iter().map(|i| [i.x, i.y, i.w, i.h]).collect();
        assert_eq!(boxes, [[102.0, 44.0, 8.0, 6.0], [40.0, 24.0, 8.0, 6.0]]);
        assert_eq!((got.width, got.height, got.regions), (256, 128, 2));
        assert_eq!(
            got.timings.inference_ms, 4.0,
            "the frame's share of both runs"
        );
        assert_eq!(got.timings.total_ms, 5.0);

        let whole = Decoded {
            inputs: vec![(img(64, 32), None)],
            ..d
        };
        let got = to_camera(&whole, vec![dets(vec![det(2.0)], 64, 32)]);
        let b = &got.items[0];
        assert_eq!([b.x, b.y, b.w, b.h], [8.0, 16.0, 32.0, 24.0]);
        assert_eq!(got.regions, 0);
    }
}

/// Bounded fuzzing of the worker's JPEG path (issue #26 item 7), with a seeded generator
/// so a failure replays: valid frames of several sizes, with and without crops, mutated
/// by the frame format's own mutator (flips, overwrites, inserts, deletes, truncations)
/// and fed to the cut that reads the JPEG's size before decoding it. Every input is
/// either decoded within its announced size or refused with a reason, never a panic,
/// and nothing bigger than announced is ever decoded.
#[cfg(test)]
mod fuzz {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::image::encode_rgb;
    use crate::wire::regions::{Rect, Region};

    /// The corpus: (jpeg, payload) pairs the agent really sends.
    fn corpus() -> Vec<(Vec<u8>, Payload)> {
        let mut out = Vec::new();
        for (w, h) in [(16, 16), (64, 32), (96, 160)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
            let jpeg = encode_rgb(&rgb, w, h, 80).unwrap();
            out.push((jpeg.clone(), Payload::default()));
            out.push((
                jpeg,
                Payload {
                    whole: (w, h.min(16)),
                    source: (w * 4, h.min(16) * 4),
                    regions: vec![Region {
                        frame: Rect {
                            x: 0,
                            y: 0,
                            w: w.min(16),
                            h: 16,
                        },
                        at: [0, 16.min(h - 16)],
                    }],
                },
            ));
        }
        out
    }

    #[test]
    fn mutated_frames_are_decoded_within_their_size_or_refused_never_a_panic() {
        let mut rng = StdRng::seed_from_u64(0x6a70_6567);
        let corpus = corpus();
        let (mut refused, mut decoded) = (0u32, 0u32);
        for round in 0..1500 {
            let (base, payload) = &corpus[round % corpus.len()];
            let mut data = base.clone();
            for _ in 0..rng.random_range(1..4) {
                crate::wire::frame::fuzz::mutate(&mut rng, &mut data);
            }
            match cut(&data, payload, 64 * 64 * 1024) {
                Ok(d) => {
                    decoded += 1;
                    let (w, h) = (d.whole.width, d.whole.height);
                    if let Some((aw, ah)) = payload.extent() {
                        assert!(w <= aw && h <= ah, "round {round}: {w}x{h} over {aw}x{ah}");
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty(), "round {round}: an empty reason");
                }
            }
        }
        // Both ways are exercised: the mutations are not all fatal, nor all harmless.
        assert!(
            refused > 100 && decoded > 100,
            "{refused} refused, {decoded} decoded"
        );
    }
}
