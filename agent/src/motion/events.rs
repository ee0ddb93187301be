//! The per-camera motion event state machine. Pure: the caller passes each frame's
//! capture time and detector result; no clock is read here.
//!
//! Idle → (K consecutive frames with motion) → Active → (no motion for the quiet
//! period) → Idle. The event starts at the first of the K frames and ends at the last
//! frame with motion. Frames with a global change count as no motion.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::config::MotionConfig;
use super::detector::{FrameMotion, MotionBox};

/// One motion event of one camera.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionEvent {
    /// `camera-<start unix ms>-<counter>`: unique per camera and run.
    pub id: String,
    pub camera: String,
    #[serde(with = "rfc3339")]
    pub start: SystemTime,
    /// Time of the last frame with motion; `None` while the event is open.
    #[serde(with = "rfc3339_opt")]
    pub end: Option<SystemTime>,
    /// Boxes of the latest frame with motion (analysis-frame pixels).
    pub boxes: Vec<MotionBox>,
    /// Union of every box of the event.
    pub union: MotionBox,
    /// Frames with motion so far.
    pub frames: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MotionTransition {
    Started(MotionEvent),
    /// The union of the boxes grew by a quarter or more since the last transition.
    Continued(MotionEvent),
    Ended(MotionEvent),
}

impl MotionTransition {
    pub fn event(&self) -> &MotionEvent {
        match self {
            Self::Started(e) | Self::Continued(e) | Self::Ended(e) => e,
        }
    }
}

enum State {
    Idle {
        /// Consecutive frames with motion so far, the first one's time, their union.
        run: u32,
        first: SystemTime,
        union: MotionBox,
    },
    Active {
        event: MotionEvent,
        last_motion: SystemTime,
        /// Union area at the last transition, for `Continued`.
        reported_area: u64,
    },
}

pub struct EventTracker {
    camera: String,
    start_frames: u32,
    quiet: Duration,
    counter: u64,
    state: State,
}

impl EventTracker {
    pub fn new(cfg: &MotionConfig, camera: &str) -> Self {
        Self {
            camera: camera.to_string(),
            start_frames: cfg.start_frames.as_u32().max(1),
            quiet: cfg.quiet_period.get(),
            counter: 0,
            state: idle(),
        }
    }

    /// The open event, if any.
    pub fn current(&self) -> Option<&MotionEvent> {
        match &self.state {
            State::Active { event, .. } => Some(event),
            State::Idle { .. } => None,
        }
    }

    /// Consecutive frames with motion seen while no event is open: above zero, the
    /// camera has a candidate (motion that may become an event after `start_frames`).
    pub fn pending(&self) -> u32 {
        match &self.state {
            State::Idle { run, .. } => *run,
            State::Active { .. } => 0,
        }
    }

    /// Feeds one frame; `at` is its capture time.
    pub fn update(&mut self, at: SystemTime, m: &FrameMotion) -> Option<MotionTransition> {
        let motion = m.has_motion();
        let frame_union = m.boxes.iter().fold(MotionBox::default(), |u, b| u.union(b));
        match &mut self.state {
            State::Idle { run, first, union } => {
                if !motion {
                    self.state = idle();
                    return None;
                }
                if *run == 0 {
                    *first = at;
                }
                *run += 1;
                *union = union.union(&frame_union);
                if *run < self.start_frames {
                    return None;
                }
                let start = *first;
                let event = MotionEvent {
                    id: format!("{}-{}-{}", self.camera, unix_ms(start), self.counter),
                    camera: self.camera.clone(),
                    start,
                    end: None,
                    boxes: m.boxes.clone(),
                    union: *union,
                    frames: *run,
                };
                self.counter += 1;
                self.state = State::Active {
                    reported_area: event.union.area(),
                    event: event.clone(),
                    last_motion: at,
                };
                Some(MotionTransition::Started(event))
            }
            State::Active {
                event,
                last_motion,
                reported_area,
            } => {
                if motion {
                    *last_motion = at;
                    event.frames += 1;
                    event.boxes.clone_from(&m.boxes);
                    event.union = event.union.union(&frame_union);
                    if event.union.area() * 4 >= *reported_area * 5 {
                        *reported_area = event.union.area();
                        return Some(MotionTransition::Continued(event.clone()));
                    }
                    return None;
                }
                // A clock that went backwards counts as no time passed.
                let quiet_for = at.duration_since(*last_motion).unwrap_or_default();
                if quiet_for < self.quiet {
                    return None;
                }
                let mut event = event.clone();
                event.end = Some(*last_motion);
                self.state = idle();
                Some(MotionTransition::Ended(event))
            }
        }
    }

    /// Ends the open event now (end of a replay, camera removed).
    pub fn finish(&mut self) -> Option<MotionTransition> {
        match std::mem::replace(&mut self.state, idle()) {
            State::Active {
                mut event,
                last_motion,
                ..
            } => {
                event.end = Some(last_motion);
                Some(MotionTransition::Ended(event))
            }
            State::Idle { .. } => None,
        }
    }
}

fn idle() -> State {
    State::Idle {
        run: 0,
        first: SystemTime::UNIX_EPOCH,
        union: MotionBox::default(),
    }
}

pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(de::Error::custom)
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => humantime::parse_rfc3339_weak(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Dur, IntIn};

    fn t(frame: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + Duration::from_millis(200 * frame)
    }

    fn frame(boxes: &[MotionBox], global: bool) -> FrameMotion {
        FrameMotion {
            boxes: boxes.to_vec(),
            global_change: global,
            ..FrameMotion::default()
        }
    }

    const B: MotionBox = MotionBox {
        x: 10,
        y: 10,
        w: 20,
        h: 20,
    };

    /// Runs a motion pattern ('M' motion, '.' none, 'G' global change) and returns
    /// (frame index, kind) of the transitions.
    fn run(pattern: &str, k: i64, quiet_ms: u64) -> Vec<(usize, &'static str, MotionEvent)> {
        let cfg = MotionConfig {
            start_frames: IntIn::lit(k),
            quiet_period: Dur::ms(quiet_ms),
            ..MotionConfig::default()
        };
        let mut tr = EventTracker::new(&cfg, "gate");
        let mut out = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            let m = match c {
                'M' => frame(&[B], false),
                'G' => frame(&[B], true),
                _ => frame(&[], false),
            };
            if let Some(tr) = tr.update(t(i as u64), &m) {
                let kind = match tr {
                    MotionTransition::Started(_) => "start",
                    MotionTransition::Continued(_) => "cont",
                    MotionTransition::Ended(_) => "end",
                };
                out.push((i, kind, tr.event().clone()));
            }
        }
        if let Some(tr) = tr.finish() {
            out.push((pattern.len(), "finish", tr.event().clone()));
        }
        out
    }

    #[test]
    fn events_start_after_k_frames_and_end_after_the_quiet_period() {
        // (pattern, K, quiet ms, expected transitions (frame, kind))
        type Row<'a> = (&'a str, i64, u64, &'a [(usize, &'a str)]);
        let rows: &[Row] = &[
            ("..MMM......", 2, 600, &[(3, "start"), (7, "end")]),
            ("..MMM......", 3, 600, &[(4, "start"), (7, "end")]),
            ("..M.M.M....", 2, 600, &[]),
            ("MM.M.M.....", 1, 600, &[(0, "start"), (8, "end")]),
            ("MM..........", 1, 1000, &[(0, "start"), (6, "end")]),
            ("MMM", 2, 600, &[(1, "start"), (3, "finish")]),
            // Global changes are not motion: they neither start nor extend an event.
            ("GGGGG......", 1, 600, &[]),
            ("MMGGGG.....", 2, 600, &[(1, "start"), (4, "end")]),
        ];
        for (pattern, k, quiet, want) in rows {
            let got: Vec<(usize, &str)> = run(pattern, *k, *quiet)
                .iter()
                .map(|(i, kind, _)| (*i, *kind))
                .collect();
            assert_eq!(&got, want, "pattern {pattern:?} K={k} quiet={quiet}ms");
        }
    }

    #[test]
    fn a_candidate_is_pending_until_it_becomes_an_event_or_motion_stops() {
        let cfg = MotionConfig {
            start_frames: IntIn::lit(3),
            ..MotionConfig::default()
        };
        let mut tr = EventTracker::new(&cfg, "gate");
        // (motion?, pending after the frame, event open after the frame)
        let rows = [
            (false, 0, false),
            (true, 1, false),
            (false, 0, false), // the candidate dropped without an event
            (true, 1, false),
            (true, 2, false),
            (true, 0, true), // confirmed: the event is open, nothing pending
            (true, 0, true),
        ];
        for (i, (motion, pending, open)) in rows.into_iter().enumerate() {
            let m = if motion {
                frame(&[B], false)
            } else {
                frame(&[], false)
            };
            tr.update(t(i as u64), &m);
            assert_eq!(tr.pending(), pending, "frame {i}");
            assert_eq!(tr.current().is_some(), open, "frame {i}");
        }
    }

    #[test]
    fn an_event_runs_from_its_first_motion_frame_to_its_last() {
        let got = run("..MMMM.....", 2, 600);
        let ended = &got.last().unwrap().2;
        assert_eq!(ended.start, t(2));
        assert_eq!(ended.end, Some(t(5)));
        assert_eq!(ended.frames, 4);
        assert_eq!(ended.id, format!("gate-{}-0", unix_ms(t(2))));
        assert_eq!(ended.union, B);
    }

    #[test]
    fn ids_are_unique_and_the_union_holds_every_box() {
        let cfg = MotionConfig {
            start_frames: IntIn::lit(1),
            quiet_period: Dur::ms(200),
            ..MotionConfig::default()
        };
        let mut tr = EventTracker::new(&cfg, "c1");
        let other = MotionBox {
            x: 100,
            y: 5,
            w: 10,
            h: 10,
        };
        let mut ids = Vec::new();
        let mut unions = Vec::new();
        let seq = [vec![B], vec![other], vec![], vec![], vec![B], vec![]];
        for (i, boxes) in seq.iter().enumerate() {
            if let Some(MotionTransition::Ended(e)) = tr.update(t(i as u64), &frame(boxes, false)) {
                ids.push(e.id.clone());
                unions.push(e.union);
            }
        }
        if let Some(MotionTransition::Ended(e)) = tr.finish() {
            ids.push(e.id);
            unions.push(e.union);
        }
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(
            unions[0],
            MotionBox {
                x: 10,
                y: 5,
                w: 100,
                h: 25
            }
        );
        assert_eq!(unions[1], B);
    }

    #[test]
    fn events_serialise_with_rfc3339_times_and_read_back() {
        let e = &run("MM...", 1, 200)[1].2;
        let json = serde_json::to_string(e).unwrap();
        assert!(
            json.contains("\"start\":\"2023-11-14T22:13:20.000Z\""),
            "{json}"
        );
        assert!(
            json.contains("\"end\":\"2023-11-14T22:13:20.200Z\""),
            "{json}"
        );
        let back: MotionEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, e);
    }
}
