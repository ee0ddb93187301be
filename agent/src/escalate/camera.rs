//! The per-camera loop between ingest and the transport: grey frames through the motion
//! detector and event state machine; motion transitions and the frames chosen by the
//! [`EscalationPolicy`] go out as [`Escalation`]s on a bounded channel to the one task
//! that owns the transport. No transport code here, so it is testable on its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::policy::EscalationPolicy;
use crate::ingest::{CameraConfig, CameraHandle, ColourFrame, GreyFrame};
use crate::motion::{Detector, EventTracker, MotionTransition, NormBox};
use crate::telemetry::metrics::{self, metrics};

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

/// Runs until the grey channel closes or shutdown. `out` is bounded: when it is full
/// a frame is dropped and counted (motion transitions wait for room, they are small
/// and must not be lost).
pub async fn run(
    cam: CameraConfig,
    handle: Arc<CameraHandle>,
    mut grey: mpsc::Receiver<GreyFrame>,
    out: mpsc::Sender<Escalation>,
    shutdown: CancellationToken,
) {
    let id = cam.id.to_string();
    let motion = cam.motion.at_fps(cam.analysis_fps.as_u32());
    let mut detector: Option<Detector> = None;
    let mut tracker = EventTracker::new(&cam.motion, &id);
    let mut policy = EscalationPolicy::new(&cam.escalation);
    let quality = cam.escalation.jpeg_quality.get() as u8;
    let labels = metrics::camera(&id);
    // The newest colour frame sent: when analysis lags behind the ring, two analysed
    // frames can resolve to the same kept frame, which must not go out twice.
    let mut last_sent: Option<u64> = None;
    // Idle decode: since when the camera has shown nothing (no motion, no candidate, no
    // event); idle after the motion quiet period of that.
    let mut still_since: Option<SystemTime> = None;
    loop {
        let frame = tokio::select! {
            f = grey.recv() => match f { Some(f) => f, None => break },
            _ = shutdown.cancelled() => break,
        };
        if !cam.motion.enabled {
            continue;
        }
        let fresh =
            !matches!(&detector, Some(d) if d.width() == frame.width && d.height() == frame.height);
        if fresh {
            debug!(camera = %id, width = frame.width, height = frame.height, "Motion detector (re)initialised.");
            detector = Some(Detector::new(&motion, frame.width, frame.height));
        }
        let Some(det) = detector.as_mut() else {
            continue;
        };
        let m = match det.process(&frame.data) {
            Ok(m) => m.clone(),
            Err(e) => {
                if metrics::should_log(&format!("motion-{id}"), Duration::from_secs(60)) {
                    warn!(camera = %id, error = %e, "Frame rejected by the motion detector.");
                }
                metrics()
                    .dropped
                    .get_or_create(&metrics::reason(&id, "motion_error"))
                    .inc();
                continue;
            }
        };
        let motion_at = SystemTime::now();
        if let Ok(d) = motion_at.duration_since(frame.captured) {
            metrics()
                .stage_latency
                .get_or_create(&metrics::stage("capture_to_motion"))
                .observe(d.as_secs_f64());
        }
        let was_pending = tracker.pending() > 0;
        let transition = tracker.update(frame.captured, &m);
        let change = match (was_pending, tracker.pending() > 0) {
            (false, true) => Some(Candidate::Seen),
            (true, false) if tracker.current().is_none() => Some(Candidate::Dropped),
            _ => None,
        };
        if let Some(change) = change {
            let c = Escalation::Candidate {
                camera: id.clone(),
                change,
            };
            if out.send(c).await.is_err() {
                break;
            }
        }
        let still = !m.has_motion() && tracker.current().is_none() && tracker.pending() == 0;
        let since = *still_since.get_or_insert(frame.captured);
        if !still {
            still_since = None;
        }
        let idle = still
            && frame.captured.duration_since(since).unwrap_or_default()
                >= cam.motion.quiet_period.get();
        if handle.set_idle(idle) {
            metrics()
                .camera_idle
                .get_or_create(&labels)
                .set(i64::from(idle));
            debug!(camera = %id, idle, "Decode mode changed (idle: key frames only).");
        }
        if let Some(t) = transition {
            if let MotionTransition::Started(e) = &t {
                metrics().motion_events.get_or_create(&labels).inc();
                info!(camera = %id, event = %e.id, "Motion started.");
            } else if let MotionTransition::Ended(e) = &t {
                info!(camera = %id, event = %e.id, frames = e.frames, "Motion ended.");
            }
            if out.send(Escalation::Motion(t)).await.is_err() {
                break;
            }
        }
        let Some(event) = tracker.current() else {
            continue;
        };
        if !m.has_motion() || !policy.should_send(&event.id, frame.captured) {
            continue;
        }
        let Some(colour) = handle.colour_frame_off_runtime(frame.seq).await else {
            metrics()
                .dropped
                .get_or_create(&metrics::reason(&id, "colour_frame_gone"))
                .inc();
            continue;
        };
        if last_sent.is_some_and(|s| colour.seq <= s) {
            metrics()
                .dropped
                .get_or_create(&metrics::reason(&id, "colour_frame_repeat"))
                .inc();
            continue;
        }
        let boxes = m
            .boxes
            .iter()
            .map(|b| b.normalised(frame.width, frame.height))
            .collect();
        let colour_seq = colour.seq;
        let item = Escalation::Frame(EscalatedFrame {
            event_id: event.id.clone(),
            colour,
            boxes,
            jpeg_quality: quality,
            motion_at,
        });
        match out.try_send(item) {
            Ok(()) => last_sent = Some(colour_seq),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics()
                    .dropped
                    .get_or_create(&metrics::reason(&id, "escalation_queue_full"))
                    .inc();
                if metrics::should_log(&format!("escalate-full-{id}"), Duration::from_secs(30)) {
                    warn!(camera = %id, "Escalation queue full: frame dropped.");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    if let Some(t) = tracker.finish() {
        let _ = out.try_send(Escalation::Motion(t));
    }
}
