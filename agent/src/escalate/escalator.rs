//! The escalator: the one task that publishes what the cameras' analysis loops hand
//! it. Motion transitions become motion messages; escalated frames are encoded (one
//! JPEG with the whole frame and its crops), stamped and published to the local frames
//! queue or, when the local workers cannot keep up, to the remote one.
//!
//! It talks to what comes after it in the flow through two ports it defines here:
//! [`Publish`] (the transport implements it) and [`Workers`] (the scaler's side
//! implements it: where a frame goes, waking the scaler, pre-warming on candidates).
//! So escalation imports neither the transport nor the scaler.

use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use crate::clock::Stamp;
use crate::image;
use crate::ingest::ColourFrame;
use crate::motion::{MotionTransition, NormBox};
use crate::telemetry::metrics::{self, metrics};
use crate::wire::regions;
use crate::wire::{FrameHeader, FrameMessage};

/// What the motion stage hands to the escalator.
#[derive(Debug)]
pub enum Escalation {
    /// A motion event started, grew or ended.
    Motion(MotionTransition),
    /// A frame of a motion event, to be sent to the detector.
    Frame(EscalatedFrame),
    /// A motion candidate appeared or went (see [`Candidate`]).
    Candidate { camera: String, change: Candidate },
}

/// A candidate is motion seen while no event is open, not yet confirmed by
/// `motion.start_frames`: the scaler starts a worker for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// The first frame with motion boxes.
    Seen,
    /// Motion stopped before the event was confirmed.
    Dropped,
}

#[derive(Debug)]
pub struct EscalatedFrame {
    pub event_id: String,
    pub colour: ColourFrame,
    /// Motion boxes of the triggering analysis frame, normalised.
    pub boxes: Vec<NormBox>,
    pub jpeg_quality: u8,
    /// When motion analysis of the frame finished.
    pub motion_at: SystemTime,
}

/// Where escalated frames and motion messages leave the box's analysis: the agent's
/// transport handle.
pub trait Publish {
    type Error: std::fmt::Display;
    /// A motion message (`schemas/motion.v1.json`) of `camera`.
    fn publish_motion(&self, camera: &str, payload: Bytes) -> Result<(), Self::Error>;
    /// A frame, to the local frames queue (`queue` None) or to `queue`.
    fn publish_frame(&self, msg: FrameMessage, queue: Option<&str>) -> Result<(), Self::Error>;
}

/// What the escalator asks of the workers' side: whether one is ready, where the next
/// frame goes, and what it should know of candidates and frames sent.
pub trait Workers {
    /// Whether a local worker is ready now (else a frame sent now meets a cold start).
    fn any_ready(&self) -> bool;
    /// A motion candidate of `camera` appeared (a worker may be started for it).
    fn candidate_seen(&mut self, camera: &str);
    /// It went without becoming an event.
    fn candidate_dropped(&mut self, camera: &str);
    /// `camera`'s motion event started.
    fn event_started(&mut self, camera: &str);
    /// The queue for the next frame: None for the local one.
    fn route(&mut self) -> Option<String>;
    /// A frame of `camera` was sent where [`Workers::route`] said.
    fn sent(&mut self, camera: &str);
}

/// Owns publishing: motion transitions become motion messages, escalated frames are
/// encoded and published as frame messages, and the workers' side hears of each.
pub async fn run<P: Publish, W: Workers>(
    mut rx: mpsc::Receiver<Escalation>,
    publish: P,
    device: String,
    mut workers: W,
) {
    while let Some(item) = rx.recv().await {
        match item {
            Escalation::Candidate { camera, change } => match change {
                Candidate::Seen => workers.candidate_seen(&camera),
                Candidate::Dropped => workers.candidate_dropped(&camera),
            },
            Escalation::Motion(t) => {
                if let MotionTransition::Started(e) = &t {
                    workers.event_started(&e.camera);
                }
                let (state, e) = match &t {
                    MotionTransition::Started(e) => ("start", e),
                    MotionTransition::Continued(e) => ("update", e),
                    MotionTransition::Ended(e) => ("end", e),
                };
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["state"] = state.into();
                v["device"] = device.clone().into();
                // schemas/motion.v1.json
                v["version"] = 1.into();
                if let Err(e) = publish.publish_motion(&e.camera, Bytes::from(v.to_string())) {
                    warn!(camera = %e_camera(&t), error = %e, "Motion message not published.");
                }
            }
            Escalation::Frame(f) => {
                let cold = !workers.any_ready();
                let camera = f.colour.camera.to_string();
                match tokio::task::spawn_blocking(move || encode_frame(f, cold)).await {
                    Ok(Ok(mut msg)) => {
                        msg.header.device = device.clone();
                        msg.header.stamp("published");
                        if let Some(d) = msg
                            .header
                            .stamps
                            .iter()
                            .find(|s| s.stage == "motion")
                            .map(|s| s.at_unix_ns)
                        {
                            let now = crate::clock::unix_ns_now();
                            metrics()
                                .stage_latency
                                .get_or_create(&metrics::stage("motion_to_publish"))
                                .observe(now.saturating_sub(d) as f64 / 1e9);
                        }
                        let queue = workers.route();
                        match publish.publish_frame(msg, queue.as_deref()) {
                            Ok(()) => {
                                metrics()
                                    .escalations
                                    .get_or_create(&metrics::camera(&camera))
                                    .inc();
                                workers.sent(&camera);
                            }
                            Err(e) => warn!(camera = %camera, error = %e, "Frame not escalated."),
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(camera = %camera, error = %e, "Frame could not be encoded.")
                    }
                    Err(e) => warn!(camera = %camera, error = %e, "Encoder task failed."),
                }
            }
        }
    }
}

fn e_camera(t: &MotionTransition) -> &str {
    &t.event().camera
}

/// The frame message of an escalated frame: one JPEG holding the whole frame and, below
/// it, its crops (`wire::regions::layout`).
fn encode_frame(f: EscalatedFrame, cold_start: bool) -> Result<FrameMessage, image::ImageError> {
    let c = &f.colour;
    let (regions, data) = if c.crops.is_empty() {
        let data = image::encode_rgb(&c.rgb, c.width, c.height, f.jpeg_quality)?;
        (Vec::new(), data)
    } else {
        let crops: Vec<_> = c.crops.iter().map(|k| (k.frame, &k.rgb[..])).collect();
        let (regions, payload, (pw, ph)) = regions::compose(&c.rgb, (c.width, c.height), &crops);
        (
            regions,
            image::encode_rgb(&payload, pw, ph, f.jpeg_quality)?,
        )
    };
    let ns = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let mut header = FrameHeader {
        version: crate::wire::frame::VERSION,
        device: String::new(),
        camera: c.camera.to_string(),
        event_id: f.event_id.clone(),
        seq: c.seq,
        captured: ns(c.captured),
        width: c.width,
        height: c.height,
        source_width: c.source_width,
        source_height: c.source_height,
        regions,
        boxes: f.boxes.iter().map(|b| [b.x, b.y, b.w, b.h]).collect(),
        stamps: vec![Stamp {
            stage: "motion".into(),
            at_unix_ns: ns(f.motion_at),
        }],
        cold_start,
    };
    header.stamp("encoded");
    Ok(FrameMessage {
        header,
        jpeg: Bytes::from(data),
    })
}
