//! Results: what comes back from the workers for this device's cameras. Detections are
//! counted and their latency exported; detections of event classes feed each camera's
//! tracks, and the agent publishes one incident (`events/{class}`: start, updates, end)
//! per tracked object. Tracks live here, not in the workers, so they survive workers
//! scaling to zero and back.

pub mod clips;
pub mod config;
pub mod filter;
pub mod geometry;
pub mod incidents;
pub mod snapshots;
pub mod stationary;
pub mod track;
pub mod zones;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::escalate::verify::VerifyRequest;
use crate::wire::detections::DetectionsIn;
pub use config::{ClipsConfig, EventsConfig, TracksConfig};
use incidents::{IncidentEvent, Incidents};

use crate::clips::{FinishedClip, Recorders};
use crate::telemetry::metrics::{self, metrics};
use crate::transport::{AgentTransport, ResultMessage, Results};
use crate::uplink::Events;
use clips::Clips;
use snapshots::Snapshots;

/// How often forgotten tracks are looked for.
const TICK: Duration = Duration::from_millis(250);

/// The newest incidents of each camera, in their latest state, for the page: at most
/// [`RecentIncidents::PER_CAMERA`] per camera, newest first; and the snapshots the
/// workers published, kept in memory (bounded) so the page can show them.
pub struct RecentIncidents {
    incidents: std::sync::Mutex<BTreeMap<String, VecDeque<IncidentEvent>>>,
    snapshots: Snapshots,
}

impl RecentIncidents {
    pub const PER_CAMERA: usize = 10;

    /// Keeps up to `snapshot_memory` bytes of snapshots.
    pub fn new(snapshot_memory: u64) -> RecentIncidents {
        RecentIncidents {
            incidents: Default::default(),
            snapshots: Snapshots::new(snapshot_memory),
        }
    }

    /// Keeps `events`: an incident already kept takes its new state in place. The
    /// snapshot each names is marked as used, so it stays while its incident is recent.
    pub fn record(&self, events: &[IncidentEvent]) {
        let mut all = crate::sync::lock(&self.incidents);
        for e in events {
            if let Some(id) = &e.snapshot {
                self.snapshots.touch(id);
            }
            let list = all.entry(e.camera.clone()).or_default();
            match list.iter_mut().find(|k| k.incident == e.incident) {
                Some(kept) => *kept = e.clone(),
                None => {
                    list.push_front(e.clone());
                    list.truncate(Self::PER_CAMERA);
                }
            }
        }
    }

    /// The camera's incidents, newest first.
    pub fn of(&self, camera: &str) -> Vec<IncidentEvent> {
        crate::sync::lock(&self.incidents)
            .get(camera)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The snapshots kept.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }
}

/// The recorders the incidents drive, and where their finished files arrive.
pub struct ClipFeed {
    pub recorders: Arc<Recorders>,
    pub finished: tokio::sync::mpsc::Receiver<FinishedClip>,
}

/// What the results loop hands on: incident events, a clip file finished, or a
/// snapshot a worker published, or a detections message received (for
/// `uplink.detections`).
enum Out {
    Events(Vec<IncidentEvent>),
    Clip(FinishedClip),
    Snapshot(ResultMessage),
    Detections { camera: String, payload: Bytes },
}

/// Where the results loop's output goes: incident events (and clip notices) out, the
/// page's recent incidents, the cameras' clip recorders, and requests for
/// verification frames for stationary objects (the cameras' loops answer).
pub struct Outlets {
    pub events: Arc<Events>,
    pub recent: Arc<RecentIncidents>,
    pub clips: Option<ClipFeed>,
    pub checks: tokio::sync::mpsc::Sender<VerifyRequest>,
}

/// Reads results until `stop`, then ends the live incidents and waits (bounded) for
/// their messages to leave. `stop` comes after the workers stopped, so the answers to
/// the last frames still count. Every incident event is also kept in `recent`. With
/// `clips`, incidents drive the cameras' recorders and their events name their clips.
pub async fn run(
    transport: Arc<AgentTransport>,
    device: String,
    events: EventsConfig,
    scenes: BTreeMap<String, zones::Scene>,
    outlets: Outlets,
    stop: CancellationToken,
) {
    let Outlets {
        events: events_out,
        recent,
        clips,
        checks,
    } = outlets;
    let mut results = match transport.results() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "No result stream; no incidents and no end-to-end latency.");
            return;
        }
    };
    let mut incidents =
        Incidents::new(&device, events.tracks.clone(), events.classes.clone()).with_scenes(scenes);
    let (mut finished, mut link) = match clips {
        Some(c) => (Some(c.finished), Some(Clips::new(&device, c.recorders))),
        None => (None, None),
    };
    let mut out = |o: Out| {
        let events = match (o, link.as_mut()) {
            (Out::Snapshot(r), _) => {
                snapshot(&recent, &events_out, r);
                Vec::new()
            }
            (Out::Detections { camera, payload }, _) => {
                if let Err(e) = events_out.forward_detections(&camera, payload) {
                    warn!(camera = %camera, error = %e, "Detections not sent up the uplink.");
                }
                return;
            }
            (Out::Events(e), Some(l)) => l.events(e, Instant::now()),
            (Out::Events(e), None) => e,
            (Out::Clip(c), Some(l)) => {
                let (msg, ends) = l.finished(&c);
                announce(&events_out, &msg);
                ends
            }
            (Out::Clip(_), None) => Vec::new(),
        };
        recent.record(&events);
        publish(&events_out, events);
    };
    ask(&checks, incidents.baselines());
    serve(
        &mut results,
        &mut incidents,
        finished.as_mut(),
        &stop,
        DRAIN,
        &mut out,
        |due| ask(&checks, due),
    )
    .await;
    // The cameras stopped before the results: their recorders end their clips now,
    // so the incidents ended below can name them.
    let mut ended = incidents.finish(SystemTime::now());
    if let (Some(l), Some(rx)) = (link.as_mut(), finished.as_mut()) {
        let recorders = l.recorders().take_all();
        let _ = tokio::time::timeout(
            RECORDERS_STOP,
            tokio::task::spawn_blocking(move || drop(recorders)),
        )
        .await;
        while let Ok(c) = rx.try_recv() {
            let (msg, ends) = l.finished(&c);
            announce(&events_out, &msg);
            recent.record(&ends);
            publish(&events_out, ends);
        }
        ended = l.events(ended, Instant::now());
        ended.extend(l.release_all());
    }
    if !ended.is_empty() {
        info!(
            incidents = ended.len(),
            "Agent stopping: live incidents ended."
        );
        recent.record(&ended);
        publish(&events_out, ended);
        if !transport.flush(Duration::from_secs(3)).await {
            warn!("Incident end messages not all confirmed by the broker before stop.");
        }
    }
}

/// How long the recorders may take at stop to end their clips.
const RECORDERS_STOP: Duration = Duration::from_secs(5);

/// How long the results still queued at stop may take to be tracked (each takes
/// microseconds; the bound is for a queue that keeps filling).
const DRAIN: Duration = Duration::from_secs(1);

/// Tracks results until the stream ends or `stop`; then the results already queued are
/// tracked too (their frames were answered), for up to `drain_for`, and any left after
/// that are counted as dropped.
async fn serve(
    results: &mut Results,
    incidents: &mut Incidents,
    mut finished: Option<&mut tokio::sync::mpsc::Receiver<FinishedClip>>,
    stop: &CancellationToken,
    drain_for: Duration,
    mut out: impl FnMut(Out),
    mut checks: impl FnMut(Vec<VerifyRequest>),
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Stop first: what is queued then is drained below, under its deadline.
            biased;
            _ = stop.cancelled() => break,
            r = results.next() => match r {
                Some(r) => take(incidents, r, &mut out),
                None => return,
            },
            Some(c) = next_clip(&mut finished) => out(Out::Clip(c)),
            _ = tick.tick() => {
                let now = SystemTime::now();
                out(Out::Events(incidents.tick(now)));
                checks(incidents.checks(now));
            }
        }
    }
    let until = tokio::time::Instant::now() + drain_for;
    let (mut drained, mut dropped) = (0u64, 0u64);
    while let Some(r) = results.try_next() {
        if tokio::time::Instant::now() < until {
            take(incidents, r, &mut out);
            drained += 1;
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(
                "results",
                metrics::DropReason::Stopped,
            ))
            .inc_by(dropped);
        warn!(drained, dropped, within = ?drain_for, "Agent stopping: results still queued were not tracked in time.");
    } else if drained > 0 {
        info!(
            drained,
            "Agent stopping: results still queued were tracked."
        );
    }
}

/// The next finished clip; pending without recorders.
async fn next_clip(
    finished: &mut Option<&mut tokio::sync::mpsc::Receiver<FinishedClip>>,
) -> Option<FinishedClip> {
    match finished {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Announces a finished clip file on the camera's `clips` topic.
fn announce(events: &Events, msg: &clips::ClipMessage) {
    let body = match serde_json::to_vec(msg) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            warn!(error = %e, "Clip message not serialisable.");
            return;
        }
    };
    match events.publish(&msg.camera, "clips", body) {
        Ok(()) => {
            metrics()
                .published
                .get_or_create(&metrics::kind("clips"))
                .inc();
            info!(lifecycle = "clip_announced", camera = %msg.camera, file = %msg.file, duration_ms = msg.duration_ms, bytes = msg.bytes, "Clip announced.");
        }
        Err(e) => {
            warn!(camera = %msg.camera, file = %msg.file, error = %e, "Clip message not published.")
        }
    }
}

/// A snapshot a worker published (`kind` `snapshots/{id}`): kept for the page and, when
/// it is new, handed to the uplink before the incident that will name it (the worker
/// publishes it, confirmed, before the detections the incident comes from).
fn snapshot(recent: &RecentIncidents, events: &Events, r: ResultMessage) {
    let Some(id) = r.kind.strip_prefix("snapshots/") else {
        return;
    };
    if !recent.snapshots().insert(id, r.payload.clone()) {
        return;
    }
    if let Err(e) = events.forward_snapshot(&r.camera, id, r.payload) {
        warn!(camera = %r.camera, snapshot = %id, error = %e, "Snapshot not handed to the uplink.");
    }
}

/// One result handed on: a snapshot to the store and up; a frame's first detections
/// message as it came (the uplink may send it up), then the incident events its
/// tracking gives.
fn take(incidents: &mut Incidents, r: ResultMessage, out: &mut impl FnMut(Out)) {
    if r.kind.starts_with("snapshots/") {
        out(Out::Snapshot(r));
        return;
    }
    if r.kind == "detections" && r.first_answer {
        out(Out::Detections {
            camera: r.camera.clone(),
            payload: r.payload.clone(),
        });
    }
    out(Out::Events(handle(incidents, r)));
}

/// One result: detections are measured and tracked; incident events (this agent's
/// own, read back) are ignored.
fn handle(incidents: &mut Incidents, r: ResultMessage) -> Vec<IncidentEvent> {
    if r.kind != "detections" || !r.first_answer {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
        return rejected(&r, "not JSON");
    };
    if let Some(captured) = v["captured_ms"].as_u64() {
        let now = crate::clock::unix_ns_now() / 1_000_000;
        metrics()
            .stage_latency
            .get_or_create(&metrics::stage("end_to_end"))
            .observe(now.saturating_sub(captured) as f64 / 1e3);
    }
    observe_stages(&v["latency"]);
    let d: DetectionsIn = match serde_json::from_value(v) {
        Ok(d) => d,
        Err(e) => return rejected(&r, &e.to_string()),
    };
    info!(lifecycle = "detections", camera = %r.camera, seq = d.seq, detections = d.detections.items.len(), "Detections received.");
    incidents.detections(&r.camera, &d, SystemTime::now())
}

/// Hands verification requests to the cameras. Full policy: a request is dropped and
/// counted; its tracks are asked for again a check interval later.
fn ask(checks: &tokio::sync::mpsc::Sender<VerifyRequest>, due: Vec<VerifyRequest>) {
    for req in due {
        let camera = req.camera.clone();
        if checks.try_send(req).is_err() {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    &camera,
                    metrics::DropReason::VerifyQueueFull,
                ))
                .inc();
            if metrics::should_log(&format!("verify-full-{camera}"), Duration::from_secs(60)) {
                warn!(camera = %camera, "Verification request not handed to the camera (queue full or camera gone); asked again later.");
            }
        }
    }
}

fn rejected(r: &ResultMessage, why: &str) -> Vec<IncidentEvent> {
    metrics()
        .rejected
        .get_or_create(&metrics::reject_reason(
            "results",
            metrics::RejectReason::BadDetections,
        ))
        .inc();
    if metrics::should_log("bad-detections", Duration::from_secs(60)) {
        warn!(camera = %r.camera, seq = ?r.seq, error = %why, "Detections message not understood; not tracked.");
    }
    Vec::new()
}

/// Incidents go where `[uplink]` says (the spool, or the frames transport).
fn publish(transport: &Events, events: Vec<IncidentEvent>) {
    for e in events {
        let state = serde_json::to_value(e.state).unwrap_or_default();
        let state = state.as_str().unwrap_or("?");
        let body = match serde_json::to_vec(&e) {
            Ok(b) => Bytes::from(b),
            Err(err) => {
                warn!(error = %err, "Incident event not serialisable.");
                continue;
            }
        };
        match transport.publish(&e.camera, &format!("events/{}", e.class), body) {
            Ok(()) => {
                metrics()
                    .incidents
                    .get_or_create(&vec![
                        ("camera", e.camera.clone()),
                        ("class", e.class.clone()),
                        ("state", state.to_string()),
                    ])
                    .inc();
                metrics()
                    .published
                    .get_or_create(&metrics::kind("events"))
                    .inc();
                info!(lifecycle = "incident", camera = %e.camera, class = %e.class, incident = %e.incident, state, frames = e.frames, "Incident event published.");
            }
            Err(err) => {
                warn!(camera = %e.camera, class = %e.class, error = %err, "Incident event not published.")
            }
        }
    }
}

/// Exports a detections message's per-stage latency (the worker's `latency` object)
/// as histograms, plus `result_delivery`: its hand-over at the worker to its arrival
/// here. Cold-start time is observed only for frames that waited for a worker.
fn observe_stages(latency: &serde_json::Value) {
    let Ok(l) = serde_json::from_value::<crate::telemetry::latency::Latency>(latency.clone())
    else {
        return;
    };
    let observe = |stage: &str, ms: f64| {
        metrics()
            .stage_latency
            .get_or_create(&metrics::stage(stage))
            .observe(ms / 1e3);
    };
    for (stage, ms) in l.stages.iter() {
        if stage != "cold_start" || l.cold_start {
            observe(stage, ms);
        }
    }
    let now = crate::clock::unix_ns_now();
    observe(
        "result_delivery",
        now.saturating_sub(l.result_at_unix_ns) as f64 / 1e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Inbound;

    fn queued(n: u64) -> (tokio::sync::mpsc::Sender<ResultMessage>, Results) {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for seq in 0..n {
            tx.try_send(ResultMessage {
                device: "dev".into(),
                camera: "gate".into(),
                kind: "detections".into(),
                payload: Bytes::from(format!("{{\"seq\":{seq}}}")),
                seq: Some(seq),
                first_answer: true,
            })
            .unwrap();
        }
        (tx, Inbound { rx })
    }

    fn incidents() -> Incidents {
        let e = EventsConfig::default();
        Incidents::new("dev", e.tracks, e.classes)
    }

    fn stopped_drops() -> u64 {
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(
                "results",
                metrics::DropReason::Stopped,
            ))
            .get()
    }

    fn event(camera: &str, incident: &str, state: incidents::State) -> IncidentEvent {
        let b = incidents::PixelBox {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        };
        IncidentEvent {
            version: incidents::EVENT_VERSION,
            state,
            device: "dev".into(),
            camera: camera.into(),
            class: "person".into(),
            incident: incident.into(),
            started_ms: 1,
            last_seen_ms: 1,
            ended_ms: None,
            duration_ms: 0,
            frames: 1,
            best_score: 0.9,
            snapshot: None,
            clip: None,
            bbox: b,
            box_norm: b,
            frame_width: 1,
            frame_height: 1,
            end_reason: None,
            zones: None,
            entered_zones: None,
            stationary: false,
            stationary_since_ms: None,
        }
    }

    #[test]
    fn recent_incidents_keep_the_newest_of_each_camera_in_their_latest_state() {
        use incidents::State::{End, Start};
        let recent = RecentIncidents::new(0);
        recent.record(&[event("gate", "a", Start), event("yard", "y", Start)]);
        recent.record(&[event("gate", "a", End)]);
        let gate = recent.of("gate");
        assert_eq!(
            gate.len(),
            1,
            "an incident's new state replaces its old one"
        );
        assert_eq!(gate[0].state, End);
        let many: Vec<_> = (0..RecentIncidents::PER_CAMERA + 3)
            .map(|i| event("gate", &format!("n{i}"), Start))
            .collect();
        recent.record(&many);
        let gate = recent.of("gate");
        assert_eq!(gate.len(), RecentIncidents::PER_CAMERA);
        let last = RecentIncidents::PER_CAMERA + 2;
        assert_eq!(gate[0].incident, format!("n{last}"), "newest first");
        assert_eq!(recent.of("yard").len(), 1, "another camera keeps its own");
        assert!(recent.of("nowhere").is_empty());
    }

    #[tokio::test]
    async fn results_still_queued_at_stop_are_tracked_before_the_loop_ends() {
        let (_tx, mut results) = queued(40);
        let stop = CancellationToken::new();
        stop.cancel();
        serve(
            &mut results,
            &mut incidents(),
            None,
            &stop,
            DRAIN,
            |_| {},
            |_| {},
        )
        .await;
        assert!(results.try_next().is_none(), "a queued result was left");
    }

    #[tokio::test]
    async fn results_left_after_the_drain_deadline_are_counted_as_dropped() {
        let before = stopped_drops();
        let (_tx, mut results) = queued(7);
        let stop = CancellationToken::new();
        stop.cancel();
        serve(
            &mut results,
            &mut incidents(),
            None,
            &stop,
            Duration::ZERO,
            |_| {},
            |_| {},
        )
        .await;
        assert!(results.try_next().is_none());
        assert_eq!(stopped_drops() - before, 7);
    }
}
