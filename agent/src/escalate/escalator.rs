//! The escalator: the one task that publishes what the cameras' analysis loops hand
//! it. Motion transitions become motion messages; escalated frames are encoded (one
//! JPEG with the whole frame and its crops), stamped and published to the local frames
//! queue or, when the local workers cannot keep up, to the remote one
//! (`scale::offload`); the scaler is woken at once, and motion candidates pre-warm a
//! worker when `scaling.prewarm_on_motion` asks for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::clock::Stamp;
use crate::image;
use crate::ingest::ColourFrame;
use crate::motion::{MotionTransition, NormBox};
use crate::scale::offload::{self, Offload};
use crate::scale::prewarm::CandidateStarts;
use crate::scale::{ScalingConfig, Wake};
use crate::telemetry::metrics::{self, metrics};
use crate::transport::AgentTransport;
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

/// Owns publishing: motion transitions become motion messages, escalated frames are
/// encoded and published as frame messages, and the scaler is woken at once.
pub async fn run(
    mut rx: mpsc::Receiver<Escalation>,
    transport: Arc<AgentTransport>,
    device: String,
    wake: Arc<Wake>,
    scaling: watch::Receiver<ScalingConfig>,
    pool: crate::scale::PoolHandle,
    mut offloader: Offloader,
) {
    let mut starts = CandidateStarts::default();
    while let Some(item) = rx.recv().await {
        match item {
            Escalation::Candidate { camera, change } if scaling.borrow().prewarm_on_motion => {
                match change {
                    Candidate::Seen => {
                        if starts.seen(&camera, pool.status().running) {
                            metrics()
                                .prewarm_starts
                                .get_or_create(&metrics::camera(&camera))
                                .inc();
                        }
                        wake.candidate();
                    }
                    Candidate::Dropped => {
                        if starts.dropped(&camera) {
                            metrics()
                                .false_starts
                                .get_or_create(&metrics::camera(&camera))
                                .inc();
                        }
                    }
                }
            }
            Escalation::Candidate { .. } => {}
            Escalation::Motion(t) => {
                if let MotionTransition::Started(e) = &t {
                    starts.confirmed(&e.camera);
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
                if let Err(e) =
                    transport.publish_result(&e.camera, "motion", Bytes::from(v.to_string()))
                {
                    warn!(camera = %e_camera(&t), error = %e, "Motion message not published.");
                }
            }
            Escalation::Frame(f) => {
                let cold = pool.status().ready == 0;
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
                        let queue = offloader.route(&pool.status());
                        match transport.publish_frame_to(msg, queue.as_deref()) {
                            Ok(()) => {
                                metrics()
                                    .escalations
                                    .get_or_create(&metrics::camera(&camera))
                                    .inc();
                                offloader.sent(&camera);
                                if queue.is_none() {
                                    wake.frame();
                                }
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

/// Local first, remote when needed (`scale::offload`), for the escalator.
pub struct Offloader {
    /// `remote_queue` in it never changes while running (a restart applies it).
    pub cfg: watch::Receiver<ScalingConfig>,
    pub local_backlog: Arc<AtomicU64>,
    /// The decision for the last frame, to log changes only.
    pub last: Option<Offload>,
}

impl Offloader {
    /// The queue for the next frame: None for the local one.
    fn route(&mut self, pool: &crate::scale::PoolStatus) -> Option<String> {
        let backlog = self.local_backlog.load(Ordering::Relaxed);
        let cfg = self.cfg.borrow().clone();
        let now = offload::decide(&cfg, pool, backlog);
        if now != self.last {
            match now {
                Some(why) => info!(
                    lifecycle = "offload_remote",
                    reason = why.label(),
                    workers = pool.running,
                    ready = pool.ready,
                    backlog,
                    offload_backlog = cfg.offload_backlog.get(),
                    "Offloading frames to the remote queue."
                ),
                None => info!(
                    lifecycle = "offload_local",
                    workers = pool.running,
                    backlog,
                    "Frames go to local workers again."
                ),
            }
            self.last = now;
        }
        now.and(cfg.remote_queue)
    }

    /// Counts a frame sent where [`Offloader::route`] said.
    fn sent(&self, camera: &str) {
        match self.last {
            Some(why) => {
                metrics()
                    .offloaded
                    .get_or_create(&vec![
                        ("camera", camera.to_string()),
                        ("reason", why.label().to_string()),
                    ])
                    .inc();
            }
            // Until the next poll, a frame sent locally is local backlog.
            None => {
                self.local_backlog.fetch_add(1, Ordering::Relaxed);
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
