//! Stationary objects: a confirmed track whose object stops moving. Motion no longer
//! escalates its frames (the detector absorbs a wreck into the background), so silence
//! is not taken for absence: a confirmed track unseen for a while is looked for with a
//! verification frame, and one that stands still is looked for again every
//! `check_interval`, at most. Its incident ends when a verification frame no longer
//! finds it, or `max_duration` after it stopped. An object that stood still past
//! `ignore_after` stays known as background when its incident ends that way, and so do
//! the objects found in the first frame after the agent started: motion near them finds
//! their track again instead of starting a new incident.
//!
//! Pure, like the tracker it extends: times in, track changes and the boxes to look at
//! out. Who asks the camera for the frame is the caller's business (`results::run`).

use std::time::{Duration, SystemTime};

use super::track::{BBox, Change, ClassRules, Frame, StationaryRules, Track, Tracker};

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

impl<R: Fn(&str) -> Option<ClassRules>> Tracker<R> {
    /// Handles objects that stop as `rules` say (None: they are forgotten like any
    /// other track).
    pub fn with_stationary(mut self, rules: Option<StationaryRules>) -> Self {
        self.stationary = rules;
        self
    }

    /// Stationary changes by `clock` (the camera's clock, as for `expire`): a confirmed
    /// track that stood in one place for its settle time becomes stationary (an
    /// update); one stationary for `max_duration` ends, and stays as background if it
    /// stood still past `ignore_after`.
    pub fn settle(&mut self, clock: SystemTime) -> Vec<Change> {
        let Some(s) = self.stationary else {
            return Vec::new();
        };
        let rules = &self.rules;
        let mut out = Vec::new();
        self.tracks.retain_mut(|t| {
            if !t.confirmed || t.background {
                return true;
            }
            let Some(r) = rules(&t.class) else {
                return true;
            };
            match t.stationary_since {
                None => {
                    if since(t.last_seen, t.still_since) >= s.settle(r.forget_after) {
                        t.stationary_since = Some(t.still_since);
                        out.push(Change::Stationary(t.clone()));
                    }
                    true
                }
                Some(at) if since(clock, at) >= s.max_duration => {
                    out.push(Change::MaxDuration(t.clone()));
                    t.background = since(clock, t.still_since) >= s.ignore_after;
                    t.background
                }
                Some(_) => true,
            }
        });
        out
    }

    /// The tracks to look for at `now` (wall clock), with their last boxes, marked as
    /// asked for: a confirmed track unseen for its settle time, then every
    /// `check_interval` at most while it is stationary, background or still unseen.
    pub fn checks_due(&mut self, now: SystemTime) -> Vec<(u64, BBox)> {
        let Some(s) = self.stationary else {
            return Vec::new();
        };
        let rules = &self.rules;
        let mut due = Vec::new();
        for t in self.tracks.iter_mut() {
            if !(t.confirmed || t.background) {
                continue;
            }
            let Some(r) = rules(&t.class) else {
                continue;
            };
            let wait = if t.stationary_since.is_some() || t.background {
                s.check_interval
            } else {
                s.settle(r.forget_after)
            };
            let unseen = since(now, t.last_seen) >= wait;
            let spaced = t
                .checked_at
                .is_none_or(|at| since(now, at) >= s.check_interval);
            if unseen && spaced {
                t.checked_at = Some(now);
                due.push((t.id, t.bbox));
            }
        }
        due
    }

    /// After [`Tracker::observe`] of a verification frame captured at `captured` that
    /// looked for `ids`: the tracks it did not find (and no later frame found) are
    /// gone. A confirmed one ends its incident; a background one goes silently.
    pub fn verified(&mut self, captured: SystemTime, ids: &[u64]) -> Vec<Change> {
        let mut out = Vec::new();
        self.tracks.retain(|t| {
            let missed = ids.contains(&t.id) && t.last_seen < captured;
            if missed && t.confirmed && !t.background {
                out.push(Change::NotFound(t.clone()));
            }
            !missed
        });
        out
    }

    /// The first frame after the agent started: what it finds was already there, and
    /// becomes background (it starts nothing, now or when motion passes near it).
    /// Answered late, it may also continue tracks that started meanwhile: their
    /// changes.
    pub fn observe_background(&mut self, f: &Frame) -> Vec<Change> {
        if self.stationary.is_some() {
            self.observe_as(f, true)
        } else {
            self.observe(f)
        }
    }

    /// True when `t` has stood still past `ignore_after` by `clock`: it goes quiet (no
    /// periodic updates) and stays as background when its incident ends at
    /// `max_duration`.
    pub fn ignored(&self, t: &Track, clock: SystemTime) -> bool {
        self.stationary.is_some_and(|s| {
            t.stationary_since.is_some() && since(clock, t.still_since) >= s.ignore_after
        })
    }

    /// Stationary tracks and background ones, for the metrics.
    pub fn standing(&self) -> (usize, usize) {
        let stationary = self.live().filter(|t| t.stationary_since.is_some());
        let background = self.tracks.iter().filter(|t| t.background);
        (stationary.count(), background.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::track::stands;
    use crate::results::track::Sighting;

    const RULES: ClassRules = ClassRules {
        confirm_frames: 2,
        forget_after: Duration::from_secs(6),
        min_score: 0.5,
        threshold: 0.0,
        required_zones: Vec::new(),
    };

    const STATIONARY: StationaryRules = StationaryRules {
        check_interval: Duration::from_secs(10),
        max_duration: Duration::from_secs(120),
        ignore_after: Duration::from_secs(60),
    };

    fn tracker() -> Tracker<impl Fn(&str) -> Option<ClassRules>> {
        Tracker::new(|c: &str| (c == "accident").then_some(RULES)).with_stationary(Some(STATIONARY))
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(ms)
    }

    fn seen(ms: u64, x: f32) -> Frame {
        Frame {
            captured: t(ms),
            seq: ms,
            snapshot: None,
            sightings: vec![Sighting {
                class: "accident".into(),
                score: 0.9,
                bbox: BBox {
                    x,
                    y: 100.0,
                    w: 60.0,
                    h: 40.0,
                },
                zones: Vec::new(),
                min_score: None,
            }],
        }
    }

    fn empty(ms: u64) -> Frame {
        Frame {
            sightings: Vec::new(),
            ..seen(ms, 0.0)
        }
    }

    /// What one step did, for the tables: (what, track id).
    fn names(c: &[Change]) -> Vec<(&'static str, u64)> {
        c.iter()
            .map(|c| match c {
                Change::Started(t) => ("start", t.id),
                Change::Zones(t) => ("zones", t.id),
                Change::Stationary(t) if t.stationary_since.is_some() => ("stopped", t.id),
                Change::Stationary(t) => ("moving", t.id),
                Change::Ended(t) => ("forgotten", t.id),
                Change::NotFound(t) => ("not_found", t.id),
                Change::MaxDuration(t) => ("max_duration", t.id),
            })
            .collect()
    }

    /// One step of a scenario at `ms`.
    enum Step {
        /// A motion frame with the object at x (None: without it).
        Frame(Option<f32>),
        /// The verification frame of the checks due, answered at once, with the
        /// object at x (None: not found).
        Check(Option<f32>),
        /// Only time passes: expiry, settling and checks due (unanswered).
        Tick,
    }

    /// Runs a scenario, every step followed by a tick at its time; returns the changes
    /// and the times checks were asked for.
    fn run(steps: &[(u64, Step)]) -> (Vec<(&'static str, u64)>, Vec<u64>) {
        let mut tr = tracker();
        let (mut changes, mut checks) = (Vec::new(), Vec::new());
        let mut asked: Vec<u64> = Vec::new();
        for (ms, step) in steps {
            match step {
                Step::Frame(x) => {
                    let f = x.map_or_else(|| empty(*ms), |x| seen(*ms, x));
                    changes.extend(tr.observe(&f));
                }
                Step::Check(x) => {
                    let f = x.map_or_else(|| empty(*ms), |x| seen(*ms, x));
                    changes.extend(tr.observe(&f));
                    changes.extend(tr.verified(f.captured, &asked));
                }
                Step::Tick => {}
            }
            changes.extend(tr.settle(t(*ms)));
            changes.extend(tr.expire(t(*ms)));
            let due = tr.checks_due(t(*ms));
            if !due.is_empty() {
                checks.push(*ms);
                asked = due.iter().map(|d| d.0).collect();
            }
        }
        (names(&changes), checks)
    }

    #[test]
    fn objects_that_stop_are_looked_for_instead_of_forgotten() {
        use Step::*;
        // The settle time is 3 s (half of forget_after 6 s, under check_interval 10 s).
        // (what happens, the steps, the changes, when checks were asked for)
        type Scenario = (
            &'static str,
            Vec<(u64, Step)>,
            Vec<(&'static str, u64)>,
            Vec<u64>,
        );
        let table: Vec<Scenario> = vec![
            (
                "enters, stops, motion ends: found by each check, it lasts",
                vec![
                    (0, Frame(Some(0.0))),
                    (200, Frame(Some(20.0))),
                    (400, Frame(Some(40.0))),
                    (3_400, Tick),
                    (3_500, Check(Some(41.0))),
                    (13_500, Tick),
                    (13_600, Check(Some(40.0))),
                    (23_600, Tick),
                ],
                vec![("start", 1), ("stopped", 1)],
                vec![3_400, 13_500, 23_600],
            ),
            (
                "stops, then a check no longer finds it: the incident ends then",
                vec![
                    (0, Frame(Some(0.0))),
                    (200, Frame(Some(20.0))),
                    (3_200, Tick),
                    (3_300, Check(Some(20.0))),
                    (13_300, Tick),
                    (13_400, Check(None)),
                ],
                vec![("start", 1), ("stopped", 1), ("not_found", 1)],
                vec![3_200, 13_300],
            ),
            (
                "a moving object that left is looked for once and ends when not found",
                vec![
                    (0, Frame(Some(0.0))),
                    (200, Frame(Some(40.0))),
                    (400, Frame(Some(80.0))),
                    (3_400, Tick),
                    (3_500, Check(None)),
                ],
                vec![("start", 1), ("not_found", 1)],
                vec![3_400],
            ),
            (
                "an unanswered check keeps it three check intervals, then it is forgotten",
                vec![
                    (0, Frame(Some(0.0))),
                    (200, Frame(Some(20.0))),
                    (3_200, Tick),
                    (13_200, Tick),
                    (23_200, Tick),
                    (30_300, Tick),
                ],
                vec![("start", 1), ("forgotten", 1)],
                vec![3_200, 13_200, 23_200],
            ),
            (
                "a stationary object that moves on is an update, and moving again",
                vec![
                    (0, Frame(Some(0.0))),
                    (200, Frame(Some(20.0))),
                    (3_200, Tick),
                    (3_300, Check(Some(20.0))),
                    (5_000, Frame(Some(80.0))),
                ],
                vec![("start", 1), ("stopped", 1), ("moving", 1)],
                vec![3_200],
            ),
        ];
        for (name, steps, changes, checks) in table {
            let (got, asked) = run(&steps);
            assert_eq!(got, changes, "{name}");
            assert_eq!(asked, checks, "{name}: checks asked at");
        }
    }

    #[test]
    fn checks_never_come_closer_than_the_check_interval_whatever_the_ticks() {
        let mut tr = tracker();
        tr.observe(&seen(0, 0.0));
        tr.observe(&seen(200, 0.0));
        let mut asked = Vec::new();
        // Ticks every 250 ms for ten minutes; every check finds it where it was.
        for ms in (250..600_000).step_by(250) {
            if !tr.checks_due(t(ms)).is_empty() {
                asked.push(ms);
                tr.observe(&seen(ms + 100, 0.0));
            }
            tr.settle(t(ms));
            tr.expire(t(ms));
        }
        assert!(asked.len() >= 50, "checked {} times", asked.len());
        for w in asked.windows(2) {
            assert!(w[1] - w[0] >= 10_000, "checks {w:?} closer than 10 s");
        }
    }

    #[test]
    fn after_max_duration_the_incident_ends_and_the_object_is_background() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        changes.extend(tr.observe(&seen(0, 0.0)));
        changes.extend(tr.observe(&seen(200, 0.0)));
        // Stood for 3 s: stationary since 0. Each check finds it.
        for ms in (3_000..=130_000).step_by(10_000) {
            changes.extend(tr.observe(&seen(ms, 0.0)));
            changes.extend(tr.settle(t(ms)));
            changes.extend(tr.expire(t(ms)));
        }
        assert_eq!(
            names(&changes),
            [("start", 1), ("stopped", 1), ("max_duration", 1)]
        );
        assert_eq!(tr.standing(), (0, 1));
        // Motion near it later: its sightings go to the background track, no incident.
        let mut later = Vec::new();
        for ms in [140_000, 140_200, 140_400] {
            later.extend(tr.observe(&seen(ms, 2.0)));
        }
        assert!(later.is_empty(), "{:?}", names(&later));
        assert_eq!(tr.live().count(), 0);
    }

    #[test]
    fn an_object_found_at_start_never_starts_an_incident() {
        let mut tr = tracker();
        tr.observe_background(&seen(0, 0.0));
        let mut changes = Vec::new();
        for ms in [5_000, 5_200, 5_400, 5_600] {
            changes.extend(tr.observe(&seen(ms, 1.0)));
            changes.extend(tr.settle(t(ms)));
        }
        assert!(changes.is_empty(), "{:?}", names(&changes));
        // It is verified like a stationary one, and goes silently once not found.
        assert_eq!(tr.checks_due(t(15_600)).len(), 1);
        tr.observe(&empty(15_700));
        assert!(tr.verified(t(15_700), &[1]).is_empty());
        assert_eq!(tr.standing(), (0, 0));
        // Then the same place holding a new object is a new incident.
        let mut fresh = Vec::new();
        for ms in [20_000, 20_200] {
            fresh.extend(tr.observe(&seen(ms, 0.0)));
        }
        assert_eq!(names(&fresh), [("start", 2)]);
    }

    #[test]
    fn a_check_answered_after_a_later_frame_saw_it_does_not_end_it() {
        let mut tr = tracker();
        tr.observe(&seen(0, 0.0));
        tr.observe(&seen(200, 0.0));
        // The check's frame, captured at 3.4 s, answered after a frame of 3.6 s that
        // found it (two workers).
        tr.observe(&seen(3_600, 0.0));
        tr.observe(&empty(3_400));
        assert!(tr.verified(t(3_400), &[1]).is_empty());
        assert_eq!(tr.live().count(), 1);
    }

    #[test]
    fn without_the_section_nothing_is_checked_and_tracks_are_forgotten() {
        let mut tr = Tracker::new(|c: &str| (c == "accident").then_some(RULES));
        // A baseline frame is an ordinary frame here.
        tr.observe_background(&seen(100, 0.0));
        assert!(tr.live().next().is_none() && tr.standing() == (0, 0));
        tr.observe(&seen(300, 0.0));
        assert!(tr.checks_due(t(5_000)).is_empty());
        assert!(tr.settle(t(5_000)).is_empty());
        assert_eq!(names(&tr.expire(t(6_300))), [("forgotten", 1)]);
    }

    #[test]
    fn a_baseline_answered_late_continues_a_track_that_started_meanwhile() {
        let mut tr = tracker();
        assert!(tr.observe(&seen(2_000, 0.0)).is_empty());
        // The start-up frame, captured before, answered after (a worker starting).
        let changes = tr.observe_background(&seen(100, 0.0));
        assert_eq!(names(&changes), [("start", 1)], "the start is not lost");
        assert_eq!(tr.standing(), (0, 0));
    }

    #[test]
    fn stillness_allows_jitter_but_not_a_move() {
        let b = |x: f32| BBox {
            x,
            y: 0.0,
            w: 60.0,
            h: 80.0,
        };
        // Diagonal 100: 20 px of reach.
        for (x, still) in [(0.0, true), (19.0, true), (20.0, true), (21.0, false)] {
            assert_eq!(stands(&b(0.0), &b(x)), still, "moved {x} px");
        }
    }
}
