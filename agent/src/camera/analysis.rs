//! One camera's analysis loop, between its ingest pipeline and the escalator: grey
//! frames through the motion detector and event state machine; motion transitions and
//! the frames chosen by the [`EscalationPolicy`] go out as [`Escalation`]s on a bounded
//! channel to the one task that owns publishing. No transport code here, so it is
//! testable on its own.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::CameraConfig;
use crate::escalate::escalator::{Candidate, EscalatedFrame, Escalation};
use crate::escalate::policy::EscalationPolicy;
use crate::escalate::verify::{Paced, VerifyRequest};
use crate::escalate::{DetectRegions, EscalationConfig};
use crate::ingest::{CameraHandle, CropRequest, GreyFrame};
use crate::motion::{Detector, EventTracker, FrameMotion, MotionTransition, NormBox};
use crate::telemetry::metrics::{self, metrics, DropReason};

/// What became of a frame the policy wanted.
#[derive(Debug, PartialEq, Eq)]
enum Offered {
    Sent,
    /// Its colour copy had left the ring.
    NoColour,
    QueueFull,
    Closed,
}

/// Hands a frame the policy wanted to the escalator; only one that went spends budget.
fn offer(
    policy: &mut EscalationPolicy,
    captured: SystemTime,
    item: Option<Escalation>,
    out: &mpsc::Sender<Escalation>,
) -> Offered {
    let Some(item) = item else {
        return Offered::NoColour;
    };
    match out.try_send(item) {
        Ok(()) => {
            policy.spent(captured);
            Offered::Sent
        }
        Err(mpsc::error::TrySendError::Full(_)) => Offered::QueueFull,
        Err(mpsc::error::TrySendError::Closed(_)) => Offered::Closed,
    }
}

/// The newest motion a camera saw, for the page: its boxes in fractions of the frame
/// (empty once the frame shows none) and when. Written only when it changes, so a
/// still camera costs nothing here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastMotion {
    pub boxes: Vec<NormBox>,
    pub at: Option<SystemTime>,
}

/// Runs until the grey channel closes or shutdown. `out` is bounded: when it is full
/// a frame is dropped and counted (motion transitions wait for room, they are small
/// and must not be lost). No verification frames and no page: see [`run_with`].
pub async fn run(
    cam: CameraConfig,
    handle: Arc<CameraHandle>,
    grey: mpsc::Receiver<GreyFrame>,
    out: mpsc::Sender<Escalation>,
    shutdown: CancellationToken,
) {
    // Its sender gone at once: the loop never waits on it.
    let (_, checks) = mpsc::channel(1);
    run_loop(Analysis::new(cam, handle, out), grey, checks, shutdown).await
}

/// [`run`], with verification frames asked for on `checks` (see
/// [`crate::escalate::verify`]: the next frame the budget allows goes, motion or not),
/// and each change of the motion boxes handed to `seen` (the page).
pub async fn run_with(
    cam: CameraConfig,
    handle: Arc<CameraHandle>,
    grey: mpsc::Receiver<GreyFrame>,
    checks: mpsc::Receiver<VerifyRequest>,
    out: mpsc::Sender<Escalation>,
    seen: tokio::sync::watch::Sender<LastMotion>,
    shutdown: CancellationToken,
) {
    let mut analysis = Analysis::new(cam, handle, out);
    analysis.seen = Some(seen);
    run_loop(analysis, grey, checks, shutdown).await
}

async fn run_loop(
    mut analysis: Analysis,
    mut grey: mpsc::Receiver<GreyFrame>,
    mut checks: mpsc::Receiver<VerifyRequest>,
    shutdown: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            f = grey.recv() => match f { Some(f) => f, None => break },
            Some(req) = checks.recv() => {
                match analysis.check.as_mut() {
                    Some(pending) => pending.merge(req),
                    None => analysis.check = Some(req),
                }
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        if analysis.frame(frame).await.is_break() {
            break;
        }
    }
    analysis.finish().await;
}

/// The escalator stopped reading: the camera's loop ends.
struct Closed;

/// One camera's state between frames: its detector, event tracker and escalation
/// budget, and what it last did (the colour frame sent, since when it is still).
struct Analysis {
    id: String,
    cam: CameraConfig,
    handle: Arc<CameraHandle>,
    out: mpsc::Sender<Escalation>,
    detector: Option<Detector>,
    tracker: EventTracker,
    policy: EscalationPolicy,
    quality: u8,
    labels: metrics::Labels,
    /// The newest colour frame sent: when analysis lags behind the ring, two analysed
    /// frames can resolve to the same kept frame, which must not go out twice.
    last_sent: Option<u64>,
    /// Idle decode: since when the camera has shown nothing (no motion, no candidate,
    /// no event); idle after the motion quiet period of that.
    still_since: Option<SystemTime>,
    /// Where the page reads the newest motion boxes.
    seen: Option<tokio::sync::watch::Sender<LastMotion>>,
    /// A verification frame asked for and not sent yet.
    check: Option<VerifyRequest>,
    /// When each track was last looked for: never twice within its `min_gap`.
    paced: Paced,
}

impl Analysis {
    fn new(cam: CameraConfig, handle: Arc<CameraHandle>, out: mpsc::Sender<Escalation>) -> Self {
        let id = cam.id.to_string();
        Analysis {
            tracker: EventTracker::new(&cam.motion, &id),
            policy: EscalationPolicy::new(&cam.escalation),
            quality: cam.escalation.jpeg_quality.get() as u8,
            labels: metrics::camera(&id),
            id,
            cam,
            handle,
            out,
            detector: None,
            last_sent: None,
            still_since: None,
            seen: None,
            check: None,
            paced: Paced::default(),
        }
    }

    /// One grey frame: motion, the event state, the decode mode, then (during an
    /// event, when the policy wants it) its colour copy out to the escalator.
    async fn frame(&mut self, frame: GreyFrame) -> ControlFlow<Closed> {
        if !self.cam.motion.enabled {
            return ControlFlow::Continue(());
        }
        let Some(m) = self.detect(&frame) else {
            return ControlFlow::Continue(());
        };
        let motion_at = SystemTime::now();
        if let Ok(d) = motion_at.duration_since(frame.captured) {
            metrics()
                .stage_latency
                .get_or_create(&metrics::stage("capture_to_motion"))
                .observe(d.as_secs_f64());
        }
        self.show(&frame, &m);
        let transition = self.track(&frame, &m).await?;
        self.update_idle(&frame, &m);
        if let Some(t) = transition {
            self.announce(t).await?;
        }
        self.escalate(&frame, &m, motion_at).await?;
        self.verify(&frame, motion_at).await
    }

    /// The frame's motion; a new size, or a new rate (the source's frame rate changed
    /// under a higher `analysis_fps`), starts a new detector. A rejected frame is
    /// counted and gives `None`.
    fn detect(&mut self, frame: &GreyFrame) -> Option<FrameMotion> {
        let id = &self.id;
        let fresh = !matches!(&self.detector, Some(d) if d.width() == frame.width && d.height() == frame.height && d.fps() == frame.fps);
        if fresh {
            debug!(camera = %id, width = frame.width, height = frame.height, "Motion detector (re)initialised.");
            self.detector = Some(Detector::new(
                &self.cam.motion,
                frame.width,
                frame.height,
                frame.fps,
            ));
        }
        let det = self.detector.as_mut()?;
        match det.process(&frame.data) {
            Ok(m) => Some(m.clone()),
            Err(e) => {
                if metrics::should_log(&format!("motion-{id}"), Duration::from_secs(60)) {
                    warn!(camera = %id, error = %e, "Frame rejected by the motion detector.");
                }
                metrics()
                    .dropped
                    .get_or_create(&metrics::drop_reason(id, DropReason::MotionError))
                    .inc();
                None
            }
        }
    }

    /// Hands the frame's boxes to the page when they changed (nothing to nothing is no
    /// change: a still camera writes nothing).
    fn show(&self, frame: &GreyFrame, m: &FrameMotion) {
        let Some(seen) = &self.seen else { return };
        seen.send_if_modified(|last| {
            if m.boxes.is_empty() && last.boxes.is_empty() {
                return false;
            }
            last.boxes = m
                .boxes
                .iter()
                .map(|b| b.normalised(frame.width, frame.height))
                .collect();
            last.at = Some(frame.captured);
            true
        });
    }

    /// Feeds the event tracker; a candidate seen or dropped goes out at once (waiting
    /// for room). Returns the event's transition, if any.
    async fn track(
        &mut self,
        frame: &GreyFrame,
        m: &FrameMotion,
    ) -> ControlFlow<Closed, Option<MotionTransition>> {
        let tracker = &mut self.tracker;
        let was_pending = tracker.pending() > 0;
        let transition = tracker.update(frame.captured, m);
        let change = match (was_pending, tracker.pending() > 0) {
            (false, true) => Some(Candidate::Seen),
            (true, false) if tracker.current().is_none() => Some(Candidate::Dropped),
            _ => None,
        };
        if let Some(change) = change {
            let c = Escalation::Candidate {
                camera: self.id.clone(),
                change,
            };
            if self.out.send(c).await.is_err() {
                return ControlFlow::Break(Closed);
            }
        }
        ControlFlow::Continue(transition)
    }

    /// Idle decode (key frames only) once the camera has been still for the motion
    /// quiet period.
    fn update_idle(&mut self, frame: &GreyFrame, m: &FrameMotion) {
        let tracker = &self.tracker;
        let still = !m.has_motion() && tracker.current().is_none() && tracker.pending() == 0;
        let since = *self.still_since.get_or_insert(frame.captured);
        if !still {
            self.still_since = None;
        }
        let idle = still
            && frame.captured.duration_since(since).unwrap_or_default()
                >= self.cam.motion.quiet_period.get();
        if self.handle.set_idle(idle) {
            metrics()
                .camera_idle
                .get_or_create(&self.labels)
                .set(i64::from(idle));
            debug!(camera = %self.id, idle, "Decode mode changed (idle: key frames only).");
        }
    }

    /// A motion start or end: logged, counted, and sent (waiting for room).
    async fn announce(&self, t: MotionTransition) -> ControlFlow<Closed> {
        let id = &self.id;
        if let MotionTransition::Started(e) = &t {
            metrics().motion_events.get_or_create(&self.labels).inc();
            info!(lifecycle = "motion_started", camera = %id, event = %e.id, "Motion started.");
        } else if let MotionTransition::Ended(e) = &t {
            info!(lifecycle = "motion_ended", camera = %id, event = %e.id, frames = e.frames, "Motion ended.");
        }
        if self.out.send(Escalation::Motion(t)).await.is_err() {
            return ControlFlow::Break(Closed);
        }
        ControlFlow::Continue(())
    }

    /// During an event, a moving frame the policy wants goes out with its colour copy
    /// (cropped to the motion when the regions say so); a frame that cannot go is
    /// dropped and counted.
    async fn escalate(
        &mut self,
        frame: &GreyFrame,
        m: &FrameMotion,
        motion_at: SystemTime,
    ) -> ControlFlow<Closed> {
        let id = &self.id;
        let Some(event) = self.tracker.current() else {
            return ControlFlow::Continue(());
        };
        if !m.has_motion() || !self.policy.wants(frame.captured) {
            return ControlFlow::Continue(());
        }
        let boxes: Vec<NormBox> = m
            .boxes
            .iter()
            .map(|b| b.normalised(frame.width, frame.height))
            .collect();
        let crops = (self.cam.escalation.regions == DetectRegions::Motion).then(|| CropRequest {
            boxes: boxes.iter().map(|b| [b.x, b.y, b.w, b.h]).collect(),
            min_side: self.cam.escalation.crop_size.as_u32(),
            max_crops: self.cam.escalation.max_crops.get() as usize,
        });
        // The colour copy is converted off the runtime's threads.
        let colour = match self.handle.colour_frame_off_runtime(frame.seq, crops).await {
            // When analysis lags behind the ring, two analysed frames can resolve to the
            // same kept frame, which must not go out twice.
            Some(c) if self.last_sent.is_some_and(|s| c.seq <= s) => {
                metrics()
                    .dropped
                    .get_or_create(&metrics::drop_reason(id, DropReason::ColourFrameRepeat))
                    .inc();
                return ControlFlow::Continue(());
            }
            c => c,
        };
        let colour_seq = colour.as_ref().map(|c| c.seq);
        let item = colour.map(|colour| {
            Escalation::Frame(EscalatedFrame {
                event_id: event.id.clone(),
                colour,
                boxes,
                jpeg_quality: self.quality,
                motion_at,
            })
        });
        let reason = match offer(&mut self.policy, frame.captured, item, &self.out) {
            Offered::Sent => {
                self.last_sent = colour_seq;
                return ControlFlow::Continue(());
            }
            Offered::Closed => return ControlFlow::Break(Closed),
            Offered::NoColour => DropReason::ColourFrameGone,
            Offered::QueueFull => {
                if metrics::should_log(&format!("escalate-full-{id}"), Duration::from_secs(30)) {
                    warn!(camera = %id, "Escalation queue full: frame dropped.");
                }
                DropReason::EscalationQueueFull
            }
        };
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(id, reason))
            .inc();
        ControlFlow::Continue(())
    }

    /// A verification frame asked for goes out with this frame when the policy allows
    /// it (it spends the same budget as motion frames), cut around the boxes looked for
    /// when the camera escalates crops: there is no motion box to cut around.
    async fn verify(&mut self, frame: &GreyFrame, motion_at: SystemTime) -> ControlFlow<Closed> {
        let due = self
            .check
            .as_ref()
            .is_some_and(|c| self.paced.allows(c, frame.captured));
        if !due || !self.policy.wants(frame.captured) {
            return ControlFlow::Continue(());
        }
        let Some(req) = self.check.take() else {
            return ControlFlow::Continue(());
        };
        let crops = verify_crops(&self.cam.escalation, &req);
        let colour = match self.handle.colour_frame_off_runtime(frame.seq, crops).await {
            Some(c) if self.last_sent.is_some_and(|s| c.seq <= s) => None,
            c => c,
        };
        // The frame kept may be older than the one analysed: paced on its own time.
        let taken = colour.as_ref().map(|c| (c.seq, c.captured));
        if let Some((_, at)) = taken {
            if !self.paced.allows(&req, at) {
                self.check = Some(req);
                return ControlFlow::Continue(());
            }
        }
        let item = colour.map(|colour| {
            Escalation::Frame(EscalatedFrame {
                event_id: req.look.event_id(),
                colour,
                boxes: req
                    .boxes
                    .iter()
                    .map(|b| NormBox {
                        x: b[0],
                        y: b[1],
                        w: b[2],
                        h: b[3],
                    })
                    .collect(),
                jpeg_quality: self.quality,
                motion_at,
            })
        });
        match offer(&mut self.policy, frame.captured, item, &self.out) {
            Offered::Sent => {
                if let Some((seq, at)) = taken {
                    self.last_sent = Some(seq);
                    self.paced.sent(&req, at);
                }
                metrics().verifications.get_or_create(&self.labels).inc();
                debug!(camera = %self.id, look = %req.look.event_id(), "Verification frame sent.");
            }
            Offered::Closed => return ControlFlow::Break(Closed),
            // Tried again with the next frame.
            Offered::NoColour | Offered::QueueFull => self.check = Some(req),
        }
        ControlFlow::Continue(())
    }

    /// At stop: the end of the open event, if any.
    async fn finish(mut self) {
        if let Some(t) = self.tracker.finish() {
            send_last_transition(&self.id, t, &self.out).await;
        }
    }
}

/// The crops of a verification frame: with `regions = "motion"`, cut around the boxes
/// the request looks at (the tracks' last boxes, since there is no motion box to cut
/// around); `None` (the whole frame) otherwise, and for a request that looks at
/// everything (a baseline).
fn verify_crops(esc: &EscalationConfig, req: &VerifyRequest) -> Option<CropRequest> {
    (esc.regions == DetectRegions::Motion && !req.boxes.is_empty()).then(|| CropRequest {
        boxes: req.boxes.clone(),
        min_side: esc.crop_size.as_u32(),
        max_crops: esc.max_crops.get() as usize,
    })
}

/// The end of the camera's open event, at stop: it waits for room like every
/// transition (a consumer that saw the start must see the end). The escalator reads
/// until every sender is gone, and the camera's stop deadline bounds the wait; only a
/// closed queue loses it, counted.
async fn send_last_transition(id: &str, t: MotionTransition, out: &mpsc::Sender<Escalation>) {
    if out.send(Escalation::Motion(t)).await.is_err() {
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(
                id,
                DropReason::MotionTransitionClosed,
            ))
            .inc();
        warn!(camera = %id, "Escalation queue closed: the motion end at stop was lost.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ColourFrame;
    use crate::values::{Dur, IntIn};

    fn frame(seq: u64) -> Escalation {
        Escalation::Frame(EscalatedFrame {
            event_id: "gate-1".into(),
            colour: ColourFrame {
                camera: "gate".into(),
                seq,
                captured: SystemTime::UNIX_EPOCH,
                width: 2,
                height: 2,
                rgb: vec![0; 12],
                source_width: 2,
                source_height: 2,
                crops: Vec::new(),
            },
            boxes: Vec::new(),
            jpeg_quality: 80,
            motion_at: SystemTime::UNIX_EPOCH,
        })
    }

    #[tokio::test]
    async fn the_motion_end_at_stop_waits_for_room_in_a_full_queue() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(frame(0)).unwrap();
        let ended = MotionTransition::Ended(crate::motion::MotionEvent {
            id: "gate-1".into(),
            camera: "gate".into(),
            start: SystemTime::UNIX_EPOCH,
            end: Some(SystemTime::UNIX_EPOCH),
            boxes: Vec::new(),
            union: Default::default(),
            frames: 3,
        });
        let send = tokio::spawn(async move { send_last_transition("gate", ended, &tx).await });
        // The escalator is busy with the frame; it catches up later.
        tokio::task::yield_now().await;
        assert!(matches!(rx.recv().await, Some(Escalation::Frame(_))));
        match rx.recv().await {
            Some(Escalation::Motion(MotionTransition::Ended(e))) => assert_eq!(e.id, "gate-1"),
            other => panic!("the motion end was lost: {other:?}"),
        }
        send.await.unwrap();
        assert!(rx.recv().await.is_none(), "nothing else was sent");
    }

    #[test]
    fn frames_that_never_went_spend_no_escalation_budget() {
        // A budget of 2 frames a minute; the escalator is busy (queue of 1, full).
        let mut policy = EscalationPolicy::new(&EscalationConfig {
            budget: IntIn::new(2).unwrap(),
            budget_window: Dur::secs(60),
            min_interval: Dur::ms(0),
            ..EscalationConfig::default()
        });
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(frame(0)).unwrap();
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(100 + s);
        for s in 0..5 {
            assert!(policy.wants(at(s)));
            assert_eq!(
                offer(&mut policy, at(s), Some(frame(s)), &tx),
                Offered::QueueFull
            );
            assert!(policy.wants(at(s)));
            assert_eq!(offer(&mut policy, at(s), None, &tx), Offered::NoColour);
        }
        // The escalator catches up: the whole budget is still there.
        rx.try_recv().unwrap();
        for s in [10, 11] {
            assert!(policy.wants(at(s)), "frame at {s}s within the budget");
            assert_eq!(
                offer(&mut policy, at(s), Some(frame(s)), &tx),
                Offered::Sent
            );
            rx.try_recv().unwrap();
        }
        assert!(!policy.wants(at(12)), "two sent: the budget is spent");
        drop(rx);
        assert!(policy.wants(at(200)));
        assert_eq!(
            offer(&mut policy, at(200), Some(frame(9)), &tx),
            Offered::Closed
        );
    }

    /// Issue #29: with crops in use, a stationary object's verification frame is cut
    /// around the track's last box. The request goes the real way: results' tracks ask
    /// for it, `route_checks` hands it to the camera, the camera plans its crops, and
    /// `wire::regions::plan` cuts the camera frame.
    #[tokio::test]
    async fn a_stationary_tracks_verification_frame_is_cut_around_its_last_box() {
        use crate::results::config::{StationaryConfig, TracksConfig};
        use crate::results::incidents::Incidents;
        use crate::wire::detections::{Detection, DetectionsBody, DetectionsIn};
        use crate::wire::regions::{self, Plan, Rect};

        // A 1280 x 720 camera; a fire comes in from the left and stops far from the
        // centre, low and right, at (1000, 560) 48 x 40.
        let (w, h) = (1280u32, 720u32);
        let t0 = 1_700_000_000_000u64;
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(t0 + ms);
        let det = |seq: u64, x: f32| DetectionsIn {
            seq,
            captured_ms: t0 + seq * 200,
            event_id: String::new(),
            snapshot: None,
            detections: DetectionsBody {
                width: w,
                height: h,
                items: vec![Detection {
                    class_id: 0,
                    class: "fire".into(),
                    score: 0.9,
                    x,
                    y: 560.0,
                    w: 48.0,
                    h: 40.0,
                }],
            },
        };
        let cfg = TracksConfig {
            forget_after: Dur::secs(6),
            stationary: StationaryConfig {
                enabled: true,
                check_interval: Dur::secs(10),
                ..Default::default()
            },
            ..TracksConfig::default()
        };
        let mut inc = Incidents::new("dev", cfg, vec!["fire".into()]);
        for (seq, x) in [(0u64, 960.0), (1, 980.0), (2, 1000.0)] {
            inc.detections("gate", &det(seq, x), at(seq * 200));
        }
        inc.tick(at(3_000));
        let mut asked = inc.checks(at(3_400));
        assert_eq!(asked.len(), 1, "one verification frame asked for");

        // Through the router to the camera's channel.
        let (to_router, from_results) = mpsc::channel(4);
        let (to_camera, mut at_camera) = mpsc::channel(4);
        let routes: crate::camera::CheckRoutes = Default::default();
        crate::sync::lock(&routes).insert("gate".into(), to_camera);
        let router = tokio::spawn(crate::camera::route_checks(from_results, routes));
        to_router.send(asked.remove(0)).await.unwrap();
        let req = at_camera.recv().await.expect("the camera got the request");
        drop(to_router);
        router.await.unwrap();

        // The camera escalates crops of 256 px around motion.
        let esc = EscalationConfig {
            regions: DetectRegions::Motion,
            crop_size: IntIn::new(256).unwrap(),
            ..EscalationConfig::default()
        };
        let crops = verify_crops(&esc, &req).expect("crops are asked for, not the whole frame");
        let squares = match regions::plan(&crops.boxes, w, h, crops.min_side, crops.max_crops) {
            Plan::Crops(s) => s,
            whole => panic!("the verification frame went whole: {whole:?}"),
        };
        assert_eq!(squares.len(), 1, "{squares:?}");
        let Rect { x, y, w: cw, h: ch } = squares[0];
        // The crop holds the track's last box (1000, 560, 48, 40), at crop size.
        assert!(
            x <= 1000 && y <= 560 && x + cw >= 1048 && y + ch >= 600,
            "the crop {:?} misses the track's last box",
            squares[0]
        );
        assert!(cw < w && ch < h && cw >= 256, "{:?}", squares[0]);
        // Centred on the last box (1024, 580), not on an earlier one (the first: 984).
        let centre = |a: u32, len: u32| f64::from(a) + f64::from(len) / 2.0;
        assert!(
            (centre(x, cw) - 1024.0).abs() <= 16.0 && (centre(y, ch) - 580.0).abs() <= 16.0,
            "the crop {:?} is not centred on the track's last box",
            squares[0]
        );

        // Whole frames escalated, or a baseline (looks at everything): no crops.
        let whole = EscalationConfig {
            regions: DetectRegions::Whole,
            ..esc.clone()
        };
        assert!(verify_crops(&whole, &req).is_none());
        let baseline = VerifyRequest {
            look: crate::escalate::verify::Look::Baseline,
            boxes: Vec::new(),
            ..req.clone()
        };
        assert!(verify_crops(&esc, &baseline).is_none());
    }
}
