//! The worker's side of the broker link: a delivered frame becomes a [`WorkItem`] whose
//! acknowledgement settles the delivery, and results leave through [`TransportSink`] on
//! the [`WorkerTransport`]. The loop itself (`frame_loop`) knows neither.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use super::frame_loop::{
    AckFn, AckOutcome, Confirmation, DetectionsMessage, FrameMeta, Payload, ResultSink, SinkError,
    Snapshot, WorkItem,
};
use crate::telemetry::latency::Marks;
use crate::telemetry::metrics::RejectReason;
use crate::transport::{Delivery, WorkerTransport};

/// How long a snapshot may wait for the broker's confirmation.
const SNAPSHOT_CONFIRM: Duration = Duration::from_secs(10);

/// Publishes a worker's results on its transport: detections to the device that sent
/// the frame (a worker behind `edge-agent scaler` serves many), else to its own.
pub struct TransportSink {
    transport: Arc<WorkerTransport>,
    device: String,
}

impl TransportSink {
    pub fn new(transport: Arc<WorkerTransport>, device: &str) -> TransportSink {
        TransportSink {
            transport,
            device: device.to_string(),
        }
    }

    /// The device a result goes to: the frame's sender, else this worker's own.
    fn device_of<'a>(&'a self, meta: &'a FrameMeta) -> &'a str {
        if meta.device.is_empty() {
            &self.device
        } else {
            &meta.device
        }
    }
}

fn json(v: &impl serde::Serialize) -> Result<Bytes, SinkError> {
    Ok(Bytes::from(serde_json::to_vec(v)?))
}

impl ResultSink for TransportSink {
    async fn detections(&self, msg: &DetectionsMessage) -> Result<Confirmation, SinkError> {
        let device = self.device_of(&msg.meta);
        let confirmed = self.transport.publish_result_then(
            device,
            &msg.meta.camera,
            "detections",
            json(msg)?,
        )?;
        Ok(Confirmation::new(async move { Ok(confirmed.await?) }))
    }
    async fn snapshot(&self, snap: &Snapshot) -> Result<(), SinkError> {
        let device = self.device_of(&snap.meta);
        let publish = self.transport.publish_snapshot_for(
            device,
            &snap.meta.camera,
            &snap.name,
            Bytes::from(snap.jpeg.clone()),
        );
        match tokio::time::timeout(SNAPSHOT_CONFIRM, publish).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SinkError::Unconfirmed {
                what: "snapshot",
                within: SNAPSHOT_CONFIRM,
            }),
        }
    }
}

/// The work item of one delivered frame. Its acknowledgement settles the delivery with
/// the broker and then calls `settled` (the connection must not close before the ack
/// is sent, so whoever closes it waits for that). `ready_at`: when this worker became
/// ready (Unix ns), for the latency marks.
pub fn work_item(d: Delivery, ready_at: u64, settled: impl FnOnce() + Send + 'static) -> WorkItem {
    let h = &d.msg.header;
    let mut marks = Marks::from_header(h.captured, &h.stamps, h.cold_start);
    marks.received = crate::clock::unix_ns_now();
    marks.worker_ready = ready_at;
    if d.redelivered {
        info!(lifecycle = "frame_redelivered", device = %h.device, camera = %h.camera, seq = h.seq, "Frame redelivered: a worker before this one took it and did not finish.");
    }
    let meta = FrameMeta {
        device: h.device.clone(),
        camera: h.camera.clone(),
        seq: h.seq,
        captured_ms: h.captured / 1_000_000,
        event_id: h.event_id.clone(),
    };
    let jpeg = d.msg.jpeg.clone();
    let payload = Payload::of(h);
    let ack: AckFn = Box::new(move |outcome| {
        Box::pin(async move {
            let r = match outcome {
                AckOutcome::Done => d.ack().await,
                AckOutcome::Reject(_) => d.reject(RejectReason::NotJpeg).await,
                // Handed back, never just dropped: an AMQP delivery left unsettled
                // holds a prefetch slot until the worker reconnects (see
                // `Delivery::requeue` for MQTT).
                AckOutcome::Requeue(why) => {
                    warn!(reason = %why, "Frame left for redelivery.");
                    d.requeue().await
                }
            };
            if let Err(e) = r {
                warn!(error = %e, "Ack failed; the frame may be delivered again.");
            }
            settled();
        })
    });
    WorkItem {
        meta,
        jpeg,
        payload,
        ack,
        marks: Some(marks),
    }
}
