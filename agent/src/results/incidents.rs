//! Incidents: each camera's [`Tracker`] fed from `detections` messages, and the
//! `events/{class}` messages its tracks make: `start` when a track is confirmed,
//! rate-limited `update`s while it lives, `end` when it is forgotten or the agent stops.
//! Pure: detections and times in, events out.
//!
//! When is a track forgotten? Results lag behind capture (queueing, a worker starting
//! from zero, a slow model), so wall-clock time since a track's last sighting would end
//! incidents whose frames are still on their way. A camera's clock is the capture time
//! of the newest frame answered: a track ends once frames taken `forget_after` after its
//! last sighting came back without it. When answers stop (no motion, nothing escalated)
//! the wall clock takes over, less an allowance for the lag seen lately (twice the
//! recent lag plus a second), so frames still in flight are waited for.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::filter::{judge, Filter};
use super::track::{BBox, Change, ClassRules, Frame, Sighting, Track, Tracker};
use super::zones::Scene;
use super::TracksConfig;
use crate::escalate::verify::{Look, VerifyRequest};
use crate::telemetry::metrics::{self, metrics};
use crate::wire::detections::DetectionsIn;

/// Version of the incident event message (`schemas/event.v2.json`).
pub const EVENT_VERSION: u32 = 2;
/// Version of an incident event that names its clip (`schemas/event.v3.json`: version
/// 2 and `clip`). Without clips the agent sends version 2, so a consumer of version 2
/// never meets a field it does not know.
pub const EVENT_VERSION_WITH_CLIP: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Start,
    Update,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Not seen for the class's `forget_after`.
    Forgotten,
    /// The agent stopped while the track was alive.
    AgentStopped,
    /// A verification frame no longer found the object (see `stationary`).
    NotFound,
    /// Stationary for `stationary.max_duration`.
    MaxDuration,
}

/// An incident's clip, as its events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClipRef {
    /// File name: `GET /clips/{file}` on the telemetry listener.
    pub file: String,
    /// Wall time of the clip's first frame, ms since the Unix epoch (end only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// SHA-256 of the file, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A box in the pixels of the frame the worker saw (`frame_width` x `frame_height`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PixelBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// The `events/{class}` message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentEvent {
    pub version: u32,
    pub state: State,
    pub device: String,
    pub camera: String,
    pub class: String,
    /// Unique per incident: camera, class, first sighting and track number.
    pub incident: String,
    /// Capture time of the first sighting, ms since the Unix epoch.
    pub started_ms: u64,
    /// Capture time of the latest sighting.
    pub last_seen_ms: u64,
    /// When the incident ended (end only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// First to latest sighting.
    pub duration_ms: u64,
    /// Frames the object was detected in.
    pub frames: u32,
    pub best_score: f32,
    /// Id of the best frame's snapshot: published before this message on
    /// `snapshots/{id}` (MQTT) or routing key `{device}.{camera}.snapshot.{id}` (AMQP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The incident's clip: on `start` the file being written (its name only), on `end`
    /// the finished file. Set at the edge, never by the tracking (see `results::clips`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipRef>,
    /// The latest box, in pixels of the frame the worker saw.
    #[serde(rename = "box")]
    pub bbox: PixelBox,
    /// The same box as fractions of the frame (0..=1): multiply by the camera's size.
    pub box_norm: PixelBox,
    pub frame_width: u32,
    pub frame_height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// The zones the object stands in now, by name (cameras with zones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Every zone it has stood in so far, in the order entered (cameras with zones
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entered_zones: Option<Vec<String>>,
    /// True while the object stands still (present only then).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stationary: bool,
    /// Since when it stands still (capture time, ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stationary_since_ms: Option<u64>,
}

type Rules = Box<dyn Fn(&str) -> Option<ClassRules> + Send>;

struct Camera {
    tracker: Tracker<Rules>,
    /// Its zones and object rules.
    scene: Scene,
    /// Whether pixel zones reaching past the frame were reported.
    warned_outside: bool,
    /// Size of the frames its boxes are in.
    frame: (u32, u32),
    /// Per track: when its last message went, and its frame count then.
    told: BTreeMap<u64, (SystemTime, u32)>,
    /// Capture time of the newest frame answered.
    looked_until: SystemTime,
    /// Recent lag from capture to answer: the largest seen, decaying by a tenth per
    /// answer.
    lag: Duration,
}

/// Every camera's tracks and the events they make.
pub struct Incidents {
    device: String,
    cfg: TracksConfig,
    classes: Vec<String>,
    cameras: BTreeMap<String, Camera>,
    /// Zones and object rules per camera id (none: the global rules alone).
    scenes: BTreeMap<String, Scene>,
}

/// A camera's state before its first detections.
fn new_camera(cfg: &TracksConfig, classes: &[String], scene: Option<&Scene>) -> Camera {
    let scene = scene.cloned().unwrap_or_default();
    let stationary = cfg.stationary.rules();
    let (cfg, classes, objects) = (cfg.clone(), classes.to_vec(), scene.objects.clone());
    let rules: Rules = Box::new(move |c: &str| {
        classes
            .iter()
            .any(|k| k == c)
            .then(|| cfg.rules_on(c, objects.get(c)))
    });
    Camera {
        tracker: Tracker::new(rules).with_stationary(stationary),
        scene,
        warned_outside: false,
        frame: (0, 0),
        told: BTreeMap::new(),
        looked_until: SystemTime::UNIX_EPOCH,
        lag: Duration::ZERO,
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `b` as fractions of a `frame`-sized picture, clamped to it (zeros without a size).
fn normalised(b: &BBox, frame: (u32, u32)) -> PixelBox {
    let (fw, fh) = (frame.0 as f32, frame.1 as f32);
    if fw <= 0.0 || fh <= 0.0 {
        return PixelBox {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            h: 0.0,
        };
    }
    let x0 = (b.x / fw).clamp(0.0, 1.0);
    let y0 = (b.y / fh).clamp(0.0, 1.0);
    let x1 = ((b.x + b.w) / fw).clamp(0.0, 1.0);
    let y1 = ((b.y + b.h) / fh).clamp(0.0, 1.0);
    PixelBox {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

impl Incidents {
    /// `classes`: the event classes, the only ones tracked.
    pub fn new(device: &str, cfg: TracksConfig, classes: Vec<String>) -> Self {
        Self {
            device: device.to_string(),
            cfg,
            classes,
            cameras: BTreeMap::new(),
            scenes: BTreeMap::new(),
        }
    }

    /// Gives cameras their zones and object rules (`[cameras.zones]`, `[cameras.objects]`).
    pub fn with_scenes(mut self, scenes: BTreeMap<String, Scene>) -> Self {
        self.scenes = scenes;
        self
    }

    /// Feeds one camera's detections message, arrived at `now`; returns the incidents
    /// it started.
    pub fn detections(
        &mut self,
        camera: &str,
        d: &DetectionsIn,
        now: SystemTime,
    ) -> Vec<IncidentEvent> {
        let captured = SystemTime::UNIX_EPOCH + Duration::from_millis(d.captured_ms);
        let bases: BTreeMap<&str, Filter> = self
            .classes
            .iter()
            .map(|c| (c.as_str(), Filter::of_class(&self.cfg, c)))
            .collect();
        let cam = self
            .cameras
            .entry(camera.to_string())
            .or_insert_with(|| new_camera(&self.cfg, &self.classes, self.scenes.get(camera)));
        cam.frame = (d.detections.width, d.detections.height);
        cam.looked_until = cam.looked_until.max(captured);
        let lag = now.duration_since(captured).unwrap_or_default();
        cam.lag = lag.max(cam.lag.mul_f32(0.9));
        if !cam.warned_outside && cam.frame.0 > 0 && cam.frame.1 > 0 {
            cam.warned_outside = true;
            for z in cam
                .scene
                .zones
                .iter()
                .filter(|z| z.shape.outside(cam.frame))
            {
                tracing::warn!(camera, zone = %z.name, width = cam.frame.0, height = cam.frame.1, "Zone points_px reach past the camera's frame: the part outside can never hold an object.");
            }
        }
        let mut sightings = Vec::new();
        for i in &d.detections.items {
            let bbox = BBox {
                x: i.x,
                y: i.y,
                w: i.w,
                h: i.h,
            };
            let Some(base) = bases.get(i.class.as_str()) else {
                // Not an event class: the tracker ignores it.
                continue;
            };
            match judge(&cam.scene, base, &i.class, &bbox, i.score, cam.frame) {
                Ok((zones, min_score)) => sightings.push(Sighting {
                    class: i.class.clone(),
                    score: i.score,
                    bbox,
                    zones,
                    min_score,
                }),
                Err(why) => {
                    metrics()
                        .filtered
                        .get_or_create(&metrics::filtered(camera, &i.class, why.as_str()))
                        .inc();
                    if metrics::should_log(
                        &format!("filtered-{camera}-{}-{}", i.class, why.as_str()),
                        Duration::from_secs(60),
                    ) {
                        tracing::info!(camera, class = %i.class, reason = why.as_str(), score = i.score, w = i.w, h = i.h, "Detection filtered: not tracked.");
                    }
                }
            }
        }
        let frame = Frame {
            captured,
            seq: d.seq,
            snapshot: d.snapshot.clone(),
            sightings,
        };
        let refused = cam.tracker.refused;
        let changes = match Look::of_event(&d.event_id) {
            Some(Look::Baseline) => cam.tracker.observe_background(&frame),
            Some(Look::Tracks(ids)) => {
                let mut changes = cam.tracker.observe(&frame);
                changes.extend(cam.tracker.verified(captured, &ids));
                changes
            }
            None => cam.tracker.observe(&frame),
        };
        let more = cam.tracker.refused - refused;
        if more > 0 {
            metrics()
                .dropped
                .get_or_create(&crate::telemetry::metrics::drop_reason(
                    camera,
                    crate::telemetry::metrics::DropReason::TracksFull,
                ))
                .inc_by(more);
            if metrics::should_log(&format!("tracks-full-{camera}"), Duration::from_secs(60)) {
                tracing::warn!(
                    camera,
                    refused = more,
                    max = super::track::MAX_TRACKS,
                    "Too many tracks: detections not tracked."
                );
            }
        }
        self.report(camera, changes, frame.captured)
    }

    /// Ends forgotten tracks and sends due updates at `now`.
    pub fn tick(&mut self, now: SystemTime) -> Vec<IncidentEvent> {
        let every = self.cfg.update_interval.get();
        let mut out = Vec::new();
        let ids: Vec<String> = self.cameras.keys().cloned().collect();
        for id in ids {
            let cam = self.camera(&id);
            let allowance = cam.lag * 2 + Duration::from_secs(1);
            let clock = cam
                .looked_until
                .max(now.checked_sub(allowance).unwrap_or(SystemTime::UNIX_EPOCH));
            let mut ended = cam.tracker.settle(clock);
            ended.extend(cam.tracker.expire(clock));
            standing_metrics(&id, &cam.tracker);
            let mut due = Vec::new();
            if !every.is_zero() {
                // Objects standing past `ignore_after` go quiet: no periodic updates.
                for t in cam
                    .tracker
                    .live()
                    .filter(|t| !cam.tracker.ignored(t, clock))
                {
                    let fresh = cam.told.get(&t.id).is_none_or(|(at, frames)| {
                        now.duration_since(*at).unwrap_or_default() >= every && t.frames > *frames
                    });
                    if fresh {
                        due.push(t.clone());
                    }
                }
            }
            out.extend(self.report(&id, ended, now));
            for t in due {
                out.push(self.event(&id, &t, State::Update, now, None));
            }
        }
        out
    }

    /// The verification frames due at `now` (wall clock), one per camera with tracks to
    /// look for, at most one per track per `stationary.check_interval`.
    pub fn checks(&mut self, now: SystemTime) -> Vec<VerifyRequest> {
        let mut out = Vec::new();
        for (id, cam) in self.cameras.iter_mut() {
            let due = cam.tracker.checks_due(now);
            if due.is_empty() {
                continue;
            }
            let boxes = due
                .iter()
                .map(|(_, b)| {
                    let n = normalised(b, cam.frame);
                    [n.x, n.y, n.w, n.h]
                })
                .collect();
            out.push(VerifyRequest {
                camera: id.clone(),
                look: Look::Tracks(due.into_iter().map(|(id, _)| id).collect()),
                boxes,
                min_gap: self.cfg.stationary.check_interval.get(),
            });
        }
        out
    }

    /// At start, with `stationary` on: one whole frame of each camera with zones or
    /// object rules configured (every camera the agent runs), to learn what is already
    /// there.
    pub fn baselines(&self) -> Vec<VerifyRequest> {
        if !self.cfg.stationary.enabled {
            return Vec::new();
        }
        self.scenes
            .keys()
            .map(|camera| VerifyRequest {
                camera: camera.clone(),
                look: Look::Baseline,
                boxes: Vec::new(),
                min_gap: Duration::ZERO,
            })
            .collect()
    }

    /// Ends every live incident (the agent stops).
    pub fn finish(&mut self, now: SystemTime) -> Vec<IncidentEvent> {
        let ids: Vec<String> = self.cameras.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            let ended = self.camera(&id).tracker.finish();
            for c in ended {
                if let Change::Ended(t) = c {
                    out.push(self.event(&id, &t, State::End, now, Some(EndReason::AgentStopped)));
                }
            }
        }
        out
    }

    /// Live incidents of `camera`.
    pub fn live(&self, camera: &str) -> usize {
        self.cameras
            .get(camera)
            .map_or(0, |c| c.tracker.live().count())
    }

    fn camera(&mut self, id: &str) -> &mut Camera {
        if !self.cameras.contains_key(id) {
            let cam = new_camera(&self.cfg, &self.classes, self.scenes.get(id));
            self.cameras.insert(id.to_string(), cam);
        }
        self.cameras.get_mut(id).expect("inserted above")
    }

    fn report(
        &mut self,
        camera: &str,
        changes: Vec<Change>,
        now: SystemTime,
    ) -> Vec<IncidentEvent> {
        changes
            .into_iter()
            .map(|c| match c {
                Change::Started(t) => self.event(camera, &t, State::Start, now, None),
                Change::Zones(t) | Change::Stationary(t) => {
                    self.event(camera, &t, State::Update, now, None)
                }
                Change::Ended(t) => {
                    self.event(camera, &t, State::End, now, Some(EndReason::Forgotten))
                }
                Change::NotFound(t) => {
                    self.event(camera, &t, State::End, now, Some(EndReason::NotFound))
                }
                Change::MaxDuration(t) => {
                    self.event(camera, &t, State::End, now, Some(EndReason::MaxDuration))
                }
            })
            .collect()
    }

    fn event(
        &mut self,
        camera: &str,
        t: &Track,
        state: State,
        now: SystemTime,
        end_reason: Option<EndReason>,
    ) -> IncidentEvent {
        let device = self.device.clone();
        let cam = self.camera(camera);
        if state == State::End {
            cam.told.remove(&t.id);
        } else {
            cam.told.insert(t.id, (now, t.frames));
        }
        let (first, last) = (ms(t.first_seen), ms(t.last_seen));
        let zoned = !cam.scene.zones.is_empty();
        IncidentEvent {
            version: EVENT_VERSION,
            state,
            device,
            camera: camera.to_string(),
            class: t.class.clone(),
            incident: format!("{camera}-{}-{first}-{}", t.class, t.id),
            started_ms: first,
            last_seen_ms: last,
            ended_ms: (state == State::End).then(|| ms(now).max(last)),
            duration_ms: last.saturating_sub(first),
            frames: t.frames,
            best_score: t.best_score,
            snapshot: t.best_snapshot.clone(),
            clip: None,
            bbox: PixelBox {
                x: t.bbox.x,
                y: t.bbox.y,
                w: t.bbox.w,
                h: t.bbox.h,
            },
            box_norm: normalised(&t.bbox, cam.frame),
            frame_width: cam.frame.0,
            frame_height: cam.frame.1,
            end_reason,
            zones: zoned.then(|| t.zones.clone()),
            entered_zones: zoned.then(|| t.entered.clone()),
            stationary: t.stationary_since.is_some(),
            stationary_since_ms: t.stationary_since.map(ms),
        }
    }
}

/// Tracks standing still, background objects and tracks held back (seen often enough
/// but below `threshold` or outside their required zones), per camera.
fn standing_metrics(camera: &str, tracker: &Tracker<Rules>) {
    let (stationary, background) = tracker.standing();
    let m = metrics();
    for (what, n) in [
        ("stationary", stationary),
        ("background", background),
        ("held_back", tracker.held_back().count()),
    ] {
        m.tracks
            .get_or_create(&vec![
                ("camera", camera.to_string()),
                ("state", what.to_string()),
            ])
            .set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Dur;
    use crate::wire::detections::{Detection, DetectionsBody};

    fn det(seq: u64, captured_ms: u64, items: &[(&str, f32, f32)]) -> DetectionsIn {
        DetectionsIn {
            seq,
            captured_ms,
            event_id: String::new(),
            snapshot: Some(format!("gate-{captured_ms}-{seq}")),
            detections: DetectionsBody {
                width: 640,
                height: 360,
                items: items
                    .iter()
                    .map(|&(class, score, x)| Detection {
                        class_id: 0,
                        class: class.into(),
                        score,
                        x,
                        y: 100.0,
                        w: 50.0,
                        h: 50.0,
                    })
                    .collect(),
            },
        }
    }

    fn incidents(update: Dur) -> Incidents {
        let cfg = TracksConfig {
            update_interval: update,
            forget_after: Dur::secs(5),
            ..TracksConfig::default()
        };
        Incidents::new("dev", cfg, vec!["fire".into(), "knife".into()])
    }

    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(T0 + ms)
    }

    #[test]
    fn a_fire_in_view_makes_one_start_some_updates_and_one_end() {
        let mut inc = incidents(Dur::secs(10));
        let mut out = Vec::new();
        for i in 0..60u64 {
            let ms = i * 500;
            out.extend(inc.detections(
                "gate",
                &det(
                    i,
                    T0 + ms,
                    &[
                        ("fire", 0.6 + (i % 7) as f32 * 0.05, 100.0),
                        ("person", 0.9, 300.0),
                    ],
                ),
                at(ms + 50),
            ));
            out.extend(inc.tick(at(ms + 100)));
        }
        assert_eq!(inc.live("gate"), 1);
        // Nothing answered after the frame of 29.5 s (answers lagged 50 ms): the wall
        // clock ends it 5 s later, plus 1.1 s for frames that may still be on their way.
        out.extend(inc.tick(at(35_550)));
        assert_eq!(inc.live("gate"), 1, "frames may still be on their way");
        out.extend(inc.tick(at(35_650)));
        let states: Vec<State> = out.iter().map(|e| e.state).collect();
        assert_eq!(states.first(), Some(&State::Start));
        assert_eq!(states.last(), Some(&State::End));
        assert_eq!(states.iter().filter(|s| **s == State::Start).count(), 1);
        assert_eq!(states.iter().filter(|s| **s == State::End).count(), 1);
        let updates = states.iter().filter(|s| **s == State::Update).count();
        assert!(
            (2..=3).contains(&updates),
            "an update every 10 s of 30: {states:?}"
        );
        let start = &out[0];
        // The better of its two frames so far (0.65 over 0.6).
        assert_eq!(
            start.snapshot.as_deref(),
            Some(format!("gate-{}-1", T0 + 500).as_str())
        );
        assert_eq!(
            (start.frames, start.frame_width, start.frame_height),
            (2, 640, 360)
        );
        let end = out.last().unwrap();
        assert_eq!(end.incident, start.incident);
        assert_eq!(end.frames, 60);
        assert_eq!(end.duration_ms, 29_500);
        assert_eq!(end.ended_ms, Some(T0 + 35_650));
        assert_eq!(end.end_reason, Some(EndReason::Forgotten));
        assert!((end.best_score - 0.9).abs() < 1e-6, "{end:?}");
        // The best frame's snapshot (score 0.9 first at i = 6).
        assert_eq!(
            end.snapshot.as_deref(),
            Some(format!("gate-{}-6", T0 + 3000).as_str())
        );
        for e in &out {
            crate::wire::schema::check("event.v2.json", &serde_json::to_value(e).unwrap());
        }
        let v = serde_json::to_value(end).unwrap();
        assert_eq!(v["box"]["w"], 50.0);
        assert_eq!(v["box_norm"]["y"].as_f64().unwrap() as f32, 100.0 / 360.0);
        assert_eq!(v["end_reason"], "forgotten");
    }

    #[test]
    fn two_objects_are_two_incidents_and_stop_ends_them() {
        let mut inc = incidents(Dur::secs(0));
        let mut out = Vec::new();
        for i in 0..3u64 {
            out.extend(inc.detections(
                "gate",
                &det(
                    i,
                    T0 + i * 200,
                    &[("fire", 0.9, 10.0), ("fire", 0.9, 400.0)],
                ),
                at(i * 200),
            ));
            out.extend(inc.detections(
                "yard",
                &det(i, T0 + i * 200, &[("knife", 0.9, 10.0)]),
                at(i * 200),
            ));
            out.extend(inc.tick(at(i * 200)));
        }
        let starts: Vec<(&str, &str)> = out
            .iter()
            .map(|e| (e.camera.as_str(), e.class.as_str()))
            .collect();
        assert_eq!(
            starts,
            [("gate", "fire"), ("gate", "fire"), ("yard", "knife")]
        );
        assert_ne!(out[0].incident, out[1].incident);
        let ends = inc.finish(at(1000));
        for e in out.iter().chain(&ends) {
            crate::wire::schema::check("event.v2.json", &serde_json::to_value(e).unwrap());
        }
        assert_eq!(ends.len(), 3);
        assert!(ends
            .iter()
            .all(|e| e.state == State::End && e.end_reason == Some(EndReason::AgentStopped)));
        assert_eq!(inc.live("gate"), 0);
    }

    #[test]
    fn answers_that_lag_behind_capture_do_not_split_an_incident() {
        // Every answer arrives 8 s after capture (forget_after is 5 s): the track is
        // judged on the frames answered, not on the wall clock.
        let mut inc = incidents(Dur::secs(0));
        let mut out = Vec::new();
        for i in 0..40u64 {
            let ms = i * 500;
            out.extend(inc.detections(
                "gate",
                &det(i, T0 + ms, &[("fire", 0.9, 100.0)]),
                at(ms + 8_000),
            ));
            out.extend(inc.tick(at(ms + 8_100)));
        }
        // Then frames without the fire: answered 5 s of capture later, it is gone.
        for i in 40..52u64 {
            let ms = i * 500;
            out.extend(inc.detections("gate", &det(i, T0 + ms, &[]), at(ms + 8_000)));
            out.extend(inc.tick(at(ms + 8_100)));
        }
        let states: Vec<(State, u32)> = out.iter().map(|e| (e.state, e.frames)).collect();
        assert_eq!(states, [(State::Start, 2), (State::End, 40)]);
        // Frame 49 (19.5 s + 5 s) ended it, on its arrival 8 s later.
        assert_eq!(out[1].ended_ms, Some(T0 + 32_600));
    }

    /// A road camera: the carriageway is the lower half of the frame, fires must start
    /// on it, and fire boxes under 400 px or wider than 3:1 are noise.
    fn road() -> Incidents {
        let toml = r#"
[zones.carriageway]
points = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
[zones.verge]
points_px = [[0, 0], [640, 0], [640, 180], [0, 180]]
[objects.fire]
required_zones = ["carriageway"]
min_area = 400
max_ratio = 3.0
"#;
        #[derive(serde::Deserialize)]
        struct Cam {
            zones: BTreeMap<String, crate::results::zones::ZoneConfig>,
            objects: BTreeMap<String, crate::results::config::ClassTracks>,
        }
        let c: Cam = toml::from_str(toml).unwrap();
        incidents(Dur::secs(0))
            .with_scenes([("road".to_string(), Scene::new(&c.zones, &c.objects))].into())
    }

    fn boxed(seq: u64, ms: u64, b: (f32, f32, f32, f32)) -> DetectionsIn {
        let mut d = det(seq, T0 + ms, &[("fire", 0.9, b.0)]);
        let i = &mut d.detections.items[0];
        (i.y, i.w, i.h) = (b.1, b.2, b.3);
        d
    }

    fn filtered(reason: &str) -> u64 {
        metrics()
            .filtered
            .get_or_create(&metrics::filtered("road", "fire", reason))
            .get()
    }

    #[test]
    fn a_required_zone_delays_the_start_until_the_object_enters_it_and_entry_and_exit_are_updates()
    {
        let mut inc = road();
        let mut out = Vec::new();
        // The frame is 640 x 360: the carriageway starts at y = 180. A fire on the verge
        // (bottom at 150) for five frames, then walking down onto the road, then off.
        let ys = [
            100.0, 100.0, 100.0, 100.0, 100.0, 150.0, 160.0, 160.0, 100.0, 100.0,
        ];
        for (i, y) in ys.iter().enumerate() {
            let ms = i as u64 * 200;
            out.extend(inc.detections(
                "road",
                &boxed(i as u64, ms, (100.0, *y, 40.0, 50.0)),
                at(ms),
            ));
            if i == 4 {
                assert!(out.is_empty(), "started off the carriageway: {out:?}");
            }
        }
        let seen: Vec<(State, Vec<String>, Vec<String>)> = out
            .iter()
            .map(|e| {
                (
                    e.state,
                    e.zones.clone().unwrap(),
                    e.entered_zones.clone().unwrap(),
                )
            })
            .collect();
        let z = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                // Frame 5: its bottom (200) is on the carriageway; it left the verge.
                (
                    State::Start,
                    z(&["carriageway"]),
                    z(&["verge", "carriageway"])
                ),
                // Frame 8: back on the verge.
                (State::Update, z(&["verge"]), z(&["verge", "carriageway"])),
            ]
        );
        assert_eq!(out[0].frames, 6);
        for e in &out {
            crate::wire::schema::check("event.v2.json", &serde_json::to_value(e).unwrap());
        }
        // Cameras without zones send events without the fields, as before.
        let mut plain = incidents(Dur::secs(0));
        let ev = [0, 200]
            .into_iter()
            .flat_map(|ms| {
                plain.detections("gate", &boxed(ms, ms, (100.0, 100.0, 40.0, 50.0)), at(ms))
            })
            .next()
            .unwrap();
        let v = serde_json::to_value(&ev).unwrap();
        assert!(
            v.get("zones").is_none() && v.get("entered_zones").is_none(),
            "{v}"
        );
    }

    #[test]
    fn boxes_filtered_by_area_or_ratio_start_nothing_and_are_counted_by_reason() {
        let mut inc = road();
        let (area, ratio) = (filtered("min_area"), filtered("max_ratio"));
        let mut out = Vec::new();
        for i in 0..10u64 {
            // On the carriageway: 15 x 20 = 300 px, under 400.
            out.extend(inc.detections(
                "road",
                &boxed(i, i * 200, (100.0, 250.0, 15.0, 20.0)),
                at(i * 200),
            ));
            // 200 x 40: wider than 3:1.
            out.extend(inc.detections(
                "road",
                &boxed(i, i * 200 + 100, (300.0, 250.0, 200.0, 40.0)),
                at(i * 200 + 100),
            ));
            out.extend(inc.tick(at(i * 200 + 150)));
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(inc.live("road"), 0);
        assert_eq!(filtered("min_area") - area, 10);
        assert_eq!(filtered("max_ratio") - ratio, 10);
        // The same fire, large enough: one incident.
        for i in 10..12u64 {
            out.extend(inc.detections(
                "road",
                &boxed(i, i * 200, (100.0, 250.0, 30.0, 20.0)),
                at(i * 200),
            ));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, State::Start);
    }

    #[test]
    fn a_stopped_object_is_verified_reported_stationary_and_ends_when_not_found() {
        let cfg = TracksConfig {
            forget_after: Dur::secs(6),
            stationary: crate::results::config::StationaryConfig {
                enabled: true,
                check_interval: Dur::secs(10),
                ..Default::default()
            },
            ..TracksConfig::default()
        };
        let mut inc = Incidents::new("dev", cfg, vec!["fire".into()]);
        let mut out = Vec::new();
        // It comes in and stops at x = 120; motion ends, no frame comes for 3 s.
        for (i, x) in [(0u64, 80.0), (1, 100.0), (2, 120.0)] {
            out.extend(inc.detections(
                "gate",
                &det(i, T0 + i * 200, &[("fire", 0.9, x)]),
                at(i * 200),
            ));
        }
        out.extend(inc.tick(at(3_000)));
        assert!(inc.checks(at(3_000)).is_empty(), "unseen for 2.6 s only");
        let asked = inc.checks(at(3_400));
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].look, Look::Tracks(vec![1]));
        // Its last box, in fractions of the 640 x 360 frame, for crops.
        let b = asked[0].boxes[0];
        assert!((b[0] - 120.0 / 640.0).abs() < 1e-6 && (b[2] - 50.0 / 640.0).abs() < 1e-6);
        // The verification frame finds it where it stood: stationary since it stopped.
        let mut found = det(3, T0 + 3_500, &[("fire", 0.9, 121.0)]);
        found.event_id = asked[0].look.event_id();
        out.extend(inc.detections("gate", &found, at(3_600)));
        out.extend(inc.tick(at(3_700)));
        // Long past forget_after: still one live incident, asked for every 10 s.
        out.extend(inc.tick(at(12_000)));
        assert_eq!(inc.live("gate"), 1);
        assert!(
            inc.checks(at(13_000)).is_empty(),
            "10 s after the last check only"
        );
        let again = inc.checks(at(13_500));
        assert_eq!(again.len(), 1);
        let mut gone = det(4, T0 + 13_600, &[]);
        gone.event_id = again[0].look.event_id();
        out.extend(inc.detections("gate", &gone, at(13_700)));
        let seen: Vec<(State, bool, Option<u64>, Option<EndReason>)> = out
            .iter()
            .map(|e| (e.state, e.stationary, e.stationary_since_ms, e.end_reason))
            .collect();
        let since = Some(T0 + 400);
        assert_eq!(
            seen,
            [
                (State::Start, false, None, None),
                (State::Update, true, since, None),
                (State::End, true, since, Some(EndReason::NotFound)),
            ]
        );
        assert_eq!(
            out[2].last_seen_ms,
            T0 + 3_500,
            "the last frame that found it"
        );
        for e in &out {
            crate::wire::schema::check("event.v2.json", &serde_json::to_value(e).unwrap());
        }
    }
}
