//! Incidents and their clips, at the edge: the tracking ([`super::incidents`]) stays
//! pure, and here its events drive each camera's recorder and are completed with the
//! clip they name.
//!
//! A `start` names the clip being written (or the one that opens at the next key
//! frame). An `end` names the finished clip, which closes `post_capture` later (or at
//! `max_duration`, when the clip continues in a next file): the end waits for it, up to
//! a bound, and is sent without a clip when none came (a camera down, a write error).
//! Each finished file is also announced on the camera's `clips` topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::incidents::{ClipRef, IncidentEvent, State, EVENT_VERSION_WITH_CLIP};
use crate::clips::{FinishedClip, Recorders};

/// Version of the `clips` message (`schemas/clip.v1.json`).
pub const CLIP_VERSION: u32 = 1;

/// The `clips` message: a finished clip file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClipMessage {
    pub version: u32,
    pub device: String,
    pub camera: String,
    pub file: String,
    /// Wall time of the first frame, ms since the Unix epoch.
    pub start: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The incidents it shows.
    pub incidents: Vec<String>,
}

/// Ends waiting for their clip beyond `post_capture` + `max_duration` + this are sent
/// without one.
const END_WAIT_SLACK: Duration = Duration::from_secs(10);
/// A finished clip is remembered for its incident's end at most this long past the end
/// wait: an incident still live is refreshed by its next file every `max_duration`, so
/// what is older belongs to an end that went out already (without it) or never comes
/// (an incident dropped, the agent stopping).
const LATEST_KEEP: Duration = Duration::from_secs(600);
/// At most this many finished clips are remembered for ends to come; beyond, the
/// oldest is forgotten.
const LATEST_MAX: usize = 1024;

/// The incidents' link to the recorders.
pub struct Clips {
    device: String,
    recorders: Arc<Recorders>,
    /// Ends waiting for their clip, and until when.
    waiting: Vec<(IncidentEvent, Instant)>,
    /// The latest finished clip of each incident not yet ended, for an end whose clip
    /// was finished before it (a camera stopped, the agent stopping), and when it came.
    /// Bounded in age and number: see [`LATEST_KEEP`], [`LATEST_MAX`].
    latest: BTreeMap<String, (ClipRef, Instant, u64)>,
    /// Order of the finished clips, for forgetting the oldest.
    seq: u64,
}

impl Clips {
    pub fn new(device: &str, recorders: Arc<Recorders>) -> Self {
        Self {
            device: device.to_string(),
            recorders,
            waiting: Vec::new(),
            latest: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Tells the recorders about `events`; returns those ready to publish (starts with
    /// their clip's name, ends of cameras without clips, and ends whose wait is over).
    pub fn events(&mut self, events: Vec<IncidentEvent>, now: Instant) -> Vec<IncidentEvent> {
        self.forget_old(now);
        let mut out = Vec::new();
        for mut e in events {
            match e.state {
                State::Start => {
                    if let Some(file) = self.recorders.incident_started(&e.camera, &e.incident) {
                        named(&mut e, ClipRef::named(file));
                    }
                    out.push(e);
                }
                State::Update => out.push(e),
                State::End => {
                    if self.recorders.incident_ended(&e.camera, &e.incident) {
                        let until = now + self.recorders.end_wait() + END_WAIT_SLACK;
                        self.waiting.push((e, until));
                    } else {
                        out.push(self.with_latest(e));
                    }
                }
            }
        }
        out.extend(self.expired(now));
        out
    }

    /// A finished file: its `clips` message, and the ends it completes.
    pub fn finished(&mut self, clip: &FinishedClip) -> (ClipMessage, Vec<IncidentEvent>) {
        let now = Instant::now();
        let r = ClipRef {
            file: clip.file.clone(),
            start: Some(clip.start_ms),
            duration_ms: Some(clip.duration_ms),
            bytes: Some(clip.bytes),
            sha256: Some(clip.sha256.clone()),
        };
        self.forget_old(now);
        for i in &clip.incidents {
            self.seq += 1;
            self.latest.insert(i.clone(), (r.clone(), now, self.seq));
        }
        while self.latest.len() > LATEST_MAX {
            let oldest = self
                .latest
                .iter()
                .min_by_key(|(_, (_, _, seq))| *seq)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.latest.remove(&k);
            }
        }
        let (done, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(e, _)| e.camera == clip.camera && clip.incidents.contains(&e.incident));
        self.waiting = still;
        let ends = done.into_iter().map(|(e, _)| self.with_latest(e)).collect();
        let msg = ClipMessage {
            version: CLIP_VERSION,
            device: self.device.clone(),
            camera: clip.camera.clone(),
            file: clip.file.clone(),
            start: clip.start_ms,
            duration_ms: clip.duration_ms,
            bytes: clip.bytes,
            sha256: clip.sha256.clone(),
            incidents: clip.incidents.clone(),
        };
        (msg, ends)
    }

    /// Ends whose wait is over, with the latest clip of their incident if any.
    pub fn expired(&mut self, now: Instant) -> Vec<IncidentEvent> {
        let (over, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.waiting = still;
        over.into_iter()
            .map(|(e, _)| {
                tracing::warn!(camera = %e.camera, incident = %e.incident, "No finished clip in time for the incident's end; sent without one.");
                self.with_latest(e)
            })
            .collect()
    }

    /// At stop: every end still waiting, with what clip there is.
    pub fn release_all(&mut self) -> Vec<IncidentEvent> {
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(e, _)| self.with_latest(e))
            .collect()
    }

    /// The recorders, for a stop.
    pub fn recorders(&self) -> &Arc<Recorders> {
        &self.recorders
    }

    fn with_latest(&mut self, mut e: IncidentEvent) -> IncidentEvent {
        if let Some((c, _, _)) = self.latest.remove(&e.incident) {
            named(&mut e, c);
        }
        e
    }

    /// Forgets the finished clips kept longer than the longest end wait plus
    /// [`LATEST_KEEP`]: their end went out already, or never comes.
    fn forget_old(&mut self, now: Instant) {
        let keep = self.recorders.end_wait() + END_WAIT_SLACK + LATEST_KEEP;
        self.latest
            .retain(|_, (_, at, _)| now.saturating_duration_since(*at) < keep);
    }

    /// Finished clips remembered for ends to come.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.latest.len()
    }
}

impl ClipRef {
    /// A clip known by its name only (being written).
    fn named(file: String) -> Self {
        Self {
            file,
            start: None,
            duration_ms: None,
            bytes: None,
            sha256: None,
        }
    }
}

fn named(e: &mut IncidentEvent, clip: ClipRef) {
    e.clip = Some(clip);
    e.version = EVENT_VERSION_WITH_CLIP;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::incidents::{EndReason, PixelBox, EVENT_VERSION};

    fn event(state: State) -> IncidentEvent {
        let b = PixelBox {
            x: 0.1,
            y: 0.1,
            w: 0.2,
            h: 0.2,
        };
        IncidentEvent {
            version: EVENT_VERSION,
            state,
            device: "dev".into(),
            camera: "gate".into(),
            class: "fire".into(),
            incident: "gate-fire-1-1".into(),
            started_ms: 1,
            last_seen_ms: 2,
            ended_ms: (state == State::End).then_some(3),
            duration_ms: 1,
            frames: 2,
            best_score: 0.9,
            snapshot: None,
            clip: None,
            bbox: b,
            box_norm: b,
            frame_width: 640,
            frame_height: 360,
            end_reason: (state == State::End).then_some(EndReason::Forgotten),
            zones: None,
            entered_zones: None,
            stationary: false,
            stationary_since_ms: None,
        }
    }

    fn finished() -> FinishedClip {
        FinishedClip {
            camera: "gate".into(),
            file: "gate-1700000000000.mp4".into(),
            path: "/tmp/gate-1700000000000.mp4".into(),
            start_ms: 1_700_000_000_000,
            duration_ms: 12_000,
            bytes: 123_456,
            sha256: "ab".repeat(32),
            incidents: vec!["gate-fire-1-1".into()],
        }
    }

    fn link() -> Clips {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let recorders = Recorders::new(tx, tokio_util::sync::CancellationToken::new());
        Clips::new("dev", Arc::new(recorders))
    }

    #[test]
    fn an_end_after_its_clip_finished_names_the_clip_as_version_three() {
        let mut l = link();
        let (msg, ends) = l.finished(&finished());
        assert!(ends.is_empty());
        crate::wire::schema::check("clip.v1.json", &serde_json::to_value(&msg).unwrap());
        let out = l.events(vec![event(State::End)], Instant::now());
        assert_eq!(out.len(), 1);
        let v = serde_json::to_value(&out[0]).unwrap();
        crate::wire::schema::check("event.v3.json", &v);
        assert_eq!(v["version"], 3);
        assert_eq!(v["clip"]["sha256"], "ab".repeat(32));
        assert_eq!(v["clip"]["start"], 1_700_000_000_000u64);
        // The clip is named once: a second end of the same id has none.
        let again = l.events(vec![event(State::End)], Instant::now());
        assert_eq!(again[0].clip, None);
        assert_eq!(again[0].version, EVENT_VERSION);
    }

    #[test]
    fn a_finished_clip_whose_end_never_comes_is_forgotten_after_a_while() {
        let mut l = link();
        let t0 = Instant::now();
        l.finished(&finished());
        assert_eq!(l.remembered(), 1);
        // Still named by an end shortly after.
        let soon = t0 + Duration::from_secs(60);
        l.events(Vec::new(), soon);
        assert_eq!(l.remembered(), 1);
        // An hour on, the incident's end never came (dropped, or its end went out
        // before the clip finished): the record is gone, and a late end names nothing.
        let late = t0 + END_WAIT_SLACK + LATEST_KEEP + Duration::from_secs(1);
        let out = l.events(vec![event(State::End)], late);
        assert_eq!(l.remembered(), 0);
        assert_eq!(out[0].clip, None);
    }

    #[test]
    fn finished_clips_remembered_for_ends_are_bounded_in_number_oldest_first() {
        let mut l = link();
        for i in 0..LATEST_MAX + 10 {
            let mut c = finished();
            c.incidents = vec![format!("gate-fire-1-{i}")];
            l.finished(&c);
        }
        assert_eq!(l.remembered(), LATEST_MAX);
        let end = |i: usize| {
            let mut e = event(State::End);
            e.incident = format!("gate-fire-1-{i}");
            e
        };
        let out = l.events(vec![end(0), end(LATEST_MAX + 9)], Instant::now());
        assert_eq!(out[0].clip, None, "the oldest was forgotten");
        assert!(out[1].clip.is_some(), "the newest is kept");
    }

    #[test]
    fn events_of_a_camera_without_clips_pass_unchanged_as_version_two() {
        let mut l = link();
        let evs = vec![event(State::Start), event(State::Update), event(State::End)];
        let out = l.events(evs.clone(), Instant::now());
        assert_eq!(out, evs);
        for e in &out {
            crate::wire::schema::check("event.v2.json", &serde_json::to_value(e).unwrap());
        }
    }

    #[test]
    fn a_start_naming_its_clip_fits_version_three_and_an_end_without_its_details_does_not() {
        let mut start = event(State::Start);
        named(&mut start, ClipRef::named("gate-1.mp4".into()));
        crate::wire::schema::check("event.v3.json", &serde_json::to_value(&start).unwrap());
        let mut end = event(State::End);
        named(&mut end, ClipRef::named("gate-1.mp4".into()));
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/event.v3.json")).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(!v.is_valid(&serde_json::to_value(&end).unwrap()));
    }
}
