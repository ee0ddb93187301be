//! Tracks: one camera's detections associated across frames, in the spirit of SORT and
//! ByteTrack but without a Kalman filter. Pure: frames of detections with their capture
//! times in, track changes out.
//!
//! Association is per class and greedy on the best pairs first: a detection continues a
//! track when its box overlaps the track's predicted box (IoU) or, failing that, when
//! its centre is close (within the larger box diagonal). The prediction is the last box
//! moved by a smoothed centre velocity, at most one second ahead. As in ByteTrack,
//! detections at or above `min_score` are matched first and may start tracks; weaker
//! ones (down to half of it) only continue tracks that are already there.
//!
//! A track is confirmed after `confirm_frames` frames and then reported as started; it
//! ends when not seen for `forget_after`. Unconfirmed tracks are forgotten silently.
//! Frames may arrive out of order (several workers): a frame older than a track's last
//! sighting counts for it but does not move it.

use std::time::{Duration, SystemTime};

/// An axis-aligned box in frame pixels: top-left corner and size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    fn centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    fn diagonal(&self) -> f32 {
        self.w.hypot(self.h)
    }

    fn iou(&self, o: &BBox) -> f32 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.w * self.h + o.w * o.h - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    fn shifted(&self, dx: f32, dy: f32) -> BBox {
        BBox {
            x: self.x + dx,
            y: self.y + dy,
            ..*self
        }
    }
}

/// Settings of one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRules {
    pub confirm_frames: u32,
    pub forget_after: Duration,
    pub min_score: f32,
    /// The median score of a track's sightings must reach this before it starts.
    pub threshold: f32,
    /// A track starts only once it stood in one of these zones (none: anywhere).
    pub required_zones: Vec<String>,
}

/// One detection of a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    pub class: String,
    pub score: f32,
    pub bbox: BBox,
    /// The zones the object stands in, by name.
    pub zones: Vec<String>,
    /// Replaces the class's `min_score` for this sighting (a camera's or a zone's).
    pub min_score: Option<f32>,
}

/// One frame's detections of the tracked classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub captured: SystemTime,
    pub seq: u64,
    /// The snapshot the worker published for this frame, if any.
    pub snapshot: Option<String>,
    pub sightings: Vec<Sighting>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class: String,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Frames it was seen in.
    pub frames: u32,
    pub best_score: f32,
    /// The snapshot of the frame with the best score that had one.
    pub best_snapshot: Option<String>,
    /// The box at the last sighting.
    pub bbox: BBox,
    pub confirmed: bool,
    /// The zones it stands in at its last sighting, by name.
    pub zones: Vec<String>,
    /// Every zone it has stood in, in the order entered.
    pub entered: Vec<String>,
    /// The latest scores, for the median (`threshold`).
    scores: std::collections::VecDeque<f32>,
    /// Centre velocity, pixels per second.
    velocity: (f32, f32),
    /// The latest sightings (capture time, box), oldest first: frames answered out of
    /// order are compared with the sighting nearest in time.
    history: std::collections::VecDeque<(SystemTime, BBox)>,
    /// Where it stands: the box it has stayed near (see `stationary::STILL`) since
    /// `still_since`.
    pub(super) anchor: BBox,
    pub still_since: SystemTime,
    /// Set while a confirmed track stands still (see `stationary`).
    pub stationary_since: Option<SystemTime>,
    /// Background: an object that stood still past `ignore_after` after its incident
    /// ended, or was there when the agent started. It starts nothing and sends nothing;
    /// motion near it finds it again here instead of starting a new track.
    pub background: bool,
    /// When a verification frame was last asked for it (wall clock).
    pub(super) checked_at: Option<SystemTime>,
}

/// Sightings kept per track for out-of-order frames.
const HISTORY: usize = 8;

/// Scores kept per track for the median (Frigate keeps the last 10 too).
const SCORES: usize = 10;

/// Tracks one camera holds at most (confirmed or not); sightings that would start one
/// more are refused and counted, so a flood of detections cannot grow memory.
pub const MAX_TRACKS: usize = 256;

impl Track {
    /// The median of the latest scores.
    pub fn median_score(&self) -> f32 {
        let mut v: Vec<f32> = self.scores.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f32::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    fn enter(&mut self, zones: &[String]) {
        for z in zones {
            if !self.entered.contains(z) {
                self.entered.push(z.clone());
            }
        }
    }

    /// The sighting nearest in time to `at`, and the signed gap to it in seconds.
    fn nearest(&self, at: SystemTime) -> (BBox, f32) {
        let gap = |t: SystemTime| match at.duration_since(t) {
            Ok(d) => d.as_secs_f32(),
            Err(e) => -e.duration().as_secs_f32(),
        };
        let (t, b) = self
            .history
            .iter()
            .min_by(|a, b| gap(a.0).abs().total_cmp(&gap(b.0).abs()))
            .copied()
            .unwrap_or((self.last_seen, self.bbox));
        (b, gap(t))
    }

    /// How well box `b` seen at `at` continues this track: None when out of reach.
    /// Tried where the velocity says it should be (at most a second ahead) and where it
    /// last was (it may have stopped or turned). The reach grows with the time gap:
    /// two box diagonals per second unseen, so an object seen again after a while,
    /// wherever it went meanwhile, is the same incident until it is forgotten; objects
    /// seen together still pair with their nearest track first.
    fn similarity(&self, at: SystemTime, b: &BBox) -> Option<f32> {
        let (near, gap) = self.nearest(at);
        let dt = gap.clamp(-1.0, 1.0);
        let moved = near.shifted(self.velocity.0 * dt, self.velocity.1 * dt);
        let mut best: Option<f32> = None;
        for p in [moved, near] {
            let iou = p.iou(b);
            let sim = if iou >= 0.1 {
                Some(1.0 + iou)
            } else {
                let (px, py) = p.centre();
                let (bx, by) = b.centre();
                // An object standing still is looked for where it stands: frames
                // seconds apart (verification) must not pair it with another object.
                let standing = self.stationary_since.is_some() || self.background;
                let grow = if standing { 0.0 } else { 2.0 * gap.abs() };
                let reach = p.diagonal().max(b.diagonal()) * (1.0 + grow);
                let d = (px - bx).hypot(py - by);
                (reach > 0.0 && d <= reach).then(|| 1.0 - d / reach)
            };
            if let Some(v) = sim {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
        }
        best
    }

    /// Adds a sighting; (the zones it stands in changed, it left the place where it
    /// stood still).
    fn absorb(&mut self, f: &Frame, s: &Sighting) -> (bool, bool) {
        self.frames += 1;
        self.scores.push_back(s.score);
        if self.scores.len() > SCORES {
            self.scores.pop_front();
        }
        self.enter(&s.zones);
        let at = self.history.partition_point(|(t, _)| *t <= f.captured);
        self.history.insert(at, (f.captured, s.bbox));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        if s.score > self.best_score || (self.best_snapshot.is_none() && f.snapshot.is_some()) {
            if s.score > self.best_score {
                self.best_score = s.score;
            }
            if f.snapshot.is_some() {
                self.best_snapshot = f.snapshot.clone();
            }
        }
        self.velocity = velocity(&self.history);
        let (mut moved, mut stirred) = (false, false);
        if f.captured >= self.last_seen {
            self.bbox = s.bbox;
            self.last_seen = f.captured;
            moved = self.zones != s.zones;
            self.zones = s.zones.clone();
            if !stands(&self.anchor, &s.bbox) {
                self.anchor = s.bbox;
                self.still_since = f.captured;
                stirred = self.stationary_since.take().is_some();
            }
        }
        if f.captured < self.first_seen {
            self.first_seen = f.captured;
        }
        (moved, stirred)
    }
}

/// Centre velocity (pixels per second) from the sightings kept, in capture order: the
/// mean of the last three steps at least 50 ms long, so frames answered out of order
/// give the same estimate.
fn velocity(history: &std::collections::VecDeque<(SystemTime, BBox)>) -> (f32, f32) {
    let mut steps = Vec::new();
    let mut newer: Option<&(SystemTime, BBox)> = None;
    for h in history.iter().rev() {
        if let Some(n) = newer {
            let dt = n.0.duration_since(h.0).unwrap_or_default().as_secs_f32();
            if dt < 0.05 {
                continue;
            }
            let ((ox, oy), (nx, ny)) = (h.1.centre(), n.1.centre());
            steps.push(((nx - ox) / dt, (ny - oy) / dt));
            if steps.len() == 3 {
                break;
            }
        }
        newer = Some(h);
    }
    if steps.is_empty() {
        return (0.0, 0.0);
    }
    let n = steps.len() as f32;
    let (sx, sy) = steps.iter().fold((0.0, 0.0), |a, v| (a.0 + v.0, a.1 + v.1));
    (sx / n, sy / n)
}

/// What happened to tracks.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Confirmed just now.
    Started(Track),
    /// A confirmed track entered or left a zone.
    Zones(Track),
    /// A confirmed track stopped (`stationary_since` set) or moved on (unset).
    Stationary(Track),
    /// Ended: not seen for its class's `forget_after`, or the tracker finished.
    Ended(Track),
    /// Ended: a verification frame no longer found it.
    NotFound(Track),
    /// Ended: stationary for `stationary.max_duration`.
    MaxDuration(Track),
}

/// One camera's tracks.
pub struct Tracker<R: Fn(&str) -> Option<ClassRules>> {
    /// The rules of a class; None: the class is not tracked.
    pub(super) rules: R,
    pub(super) tracks: Vec<Track>,
    /// How objects that stop are handled; None: they are forgotten like any other.
    pub(super) stationary: Option<StationaryRules>,
    next_id: u64,
    /// Sightings that would have started a track past [`MAX_TRACKS`].
    pub refused: u64,
}

impl<R: Fn(&str) -> Option<ClassRules>> Tracker<R> {
    pub fn new(rules: R) -> Self {
        Self {
            rules,
            tracks: Vec::new(),
            stationary: None,
            next_id: 1,
            refused: 0,
        }
    }

    /// Associates one frame's sightings with the tracks; returns the tracks confirmed
    /// by it.
    pub fn observe(&mut self, f: &Frame) -> Vec<Change> {
        self.observe_as(f, false)
    }

    /// [`Tracker::observe`]; with `background`, new tracks are background ones.
    pub(super) fn observe_as(&mut self, f: &Frame, background: bool) -> Vec<Change> {
        let mut high = Vec::new();
        let mut low = Vec::new();
        for (i, s) in f.sightings.iter().enumerate() {
            let Some(r) = (self.rules)(&s.class) else {
                continue;
            };
            if !(s.score.is_finite() && s.bbox.w > 0.0 && s.bbox.h > 0.0) {
                continue;
            }
            let min_score = s.min_score.unwrap_or(r.min_score);
            if s.score >= min_score {
                high.push(i);
            } else if s.score >= min_score / 2.0 {
                low.push(i);
            }
        }
        let mut taken = vec![false; self.tracks.len()];
        let mut moved = vec![(false, false); self.tracks.len()];
        let left = self.associate(f, &high, &mut taken, &mut moved);
        self.associate(f, &low, &mut taken, &mut moved);
        for i in left {
            if self.tracks.len() >= MAX_TRACKS {
                self.refused += 1;
                continue;
            }
            let s = &f.sightings[i];
            taken.push(true);
            moved.push((false, false));
            self.tracks.push(Track {
                id: self.next_id,
                class: s.class.clone(),
                first_seen: f.captured,
                last_seen: f.captured,
                frames: 1,
                best_score: s.score,
                best_snapshot: f.snapshot.clone(),
                bbox: s.bbox,
                confirmed: false,
                zones: s.zones.clone(),
                entered: s.zones.clone(),
                scores: [s.score].into(),
                velocity: (0.0, 0.0),
                history: [(f.captured, s.bbox)].into(),
                anchor: s.bbox,
                still_since: f.captured,
                stationary_since: None,
                background,
                checked_at: None,
            });
            self.next_id += 1;
        }
        let mut out = Vec::new();
        for ((t, seen), (moved, stirred)) in self.tracks.iter_mut().zip(taken).zip(moved) {
            let Some(r) = (self.rules)(&t.class) else {
                continue;
            };
            if t.background {
                continue;
            }
            if t.confirmed {
                if moved {
                    out.push(Change::Zones(t.clone()));
                }
                if stirred {
                    out.push(Change::Stationary(t.clone()));
                }
            } else if seen
                && t.frames >= r.confirm_frames
                && t.median_score() >= r.threshold
                && (r.required_zones.is_empty()
                    || r.required_zones.iter().any(|z| t.entered.contains(z)))
            {
                t.confirmed = true;
                out.push(Change::Started(t.clone()));
            }
        }
        out
    }

    /// Matches `which` sightings to free tracks, best pairs first; returns the
    /// sightings left over.
    fn associate(
        &mut self,
        f: &Frame,
        which: &[usize],
        taken: &mut [bool],
        moved: &mut [(bool, bool)],
    ) -> Vec<usize> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for &i in which {
            let s = &f.sightings[i];
            for (k, t) in self.tracks.iter().enumerate() {
                if taken[k] || t.class != s.class {
                    continue;
                }
                if let Some(sim) = t.similarity(f.captured, &s.bbox) {
                    pairs.push((sim, k, i));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used: Vec<usize> = Vec::new();
        for (_, k, i) in pairs {
            if taken[k] || used.contains(&i) {
                continue;
            }
            taken[k] = true;
            used.push(i);
            moved[k] = self.tracks[k].absorb(f, &f.sightings[i]);
        }
        which
            .iter()
            .copied()
            .filter(|i| !used.contains(i))
            .collect()
    }

    /// Unconfirmed tracks that would have started but for `threshold` or
    /// `required_zones`: seen `confirm_frames` times, still held back.
    pub fn held_back(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| {
            !t.confirmed
                && !t.background
                && (self.rules)(&t.class).is_some_and(|r| t.frames >= r.confirm_frames)
        })
    }

    /// Ends the confirmed tracks not seen for their class's `forget_after` by `now`
    /// (and drops unconfirmed ones silently). `now` is the time the camera has been
    /// looked at until: the caller's choice (see `incidents`).
    pub fn expire(&mut self, now: SystemTime) -> Vec<Change> {
        let (rules, stationary) = (&self.rules, &self.stationary);
        let mut out = Vec::new();
        self.tracks.retain(|t| {
            let mut forget = rules(&t.class).map_or(Duration::ZERO, |r| r.forget_after);
            if let Some(s) = stationary {
                // Looked for before it may end (see `stationary`).
                forget = s.keep_unseen(t, forget);
            }
            let gone = now.duration_since(t.last_seen).unwrap_or_default() >= forget;
            if gone && t.confirmed && !t.background {
                out.push(Change::Ended(t.clone()));
            }
            !gone
        });
        out
    }

    /// Ends every confirmed track (the agent stops).
    pub fn finish(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.tracks)
            .into_iter()
            .filter(|t| t.confirmed && !t.background)
            .map(Change::Ended)
            .collect()
    }

    /// Confirmed tracks alive now.
    pub fn live(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| t.confirmed && !t.background)
    }
}

/// How far a box's centre may wander, as a share of its diagonal, while its object
/// still counts as standing where it stood (detector jitter, a wreck settling).
pub const STILL: f32 = 0.2;

/// The stationary-object settings, checked (`StationaryConfig::rules`; see
/// `results::stationary`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StationaryRules {
    pub check_interval: Duration,
    pub max_duration: Duration,
    pub ignore_after: Duration,
}

impl StationaryRules {
    /// How long a track may go unseen before it is looked for, and how long it must
    /// have stood in one place to be stationary: `check_interval`, but no more than half
    /// of its class's `forget_after`, so it is looked for before it would be forgotten.
    pub fn settle(&self, forget_after: Duration) -> Duration {
        self.check_interval.min(forget_after / 2)
    }

    /// How long `t` may go unseen before it ends (`forget_after` for a class): a track
    /// that is being looked for waits for the answer, up to three check intervals (a
    /// camera that cannot send the frame, a worker starting from zero).
    pub fn keep_unseen(&self, t: &Track, forget_after: Duration) -> Duration {
        if t.background || t.stationary_since.is_some() || t.checked_at.is_some() {
            forget_after.max(self.check_interval * 3)
        } else {
            forget_after
        }
    }
}

/// True when box `b` is where `anchor` stood (centres within [`STILL`] of the larger
/// diagonal).
pub fn stands(anchor: &BBox, b: &BBox) -> bool {
    let (ax, ay) = (anchor.x + anchor.w / 2.0, anchor.y + anchor.h / 2.0);
    let (bx, by) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
    let reach = anchor.w.hypot(anchor.h).max(b.w.hypot(b.h)) * STILL;
    (ax - bx).hypot(ay - by) <= reach
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ClassRules = ClassRules {
        confirm_frames: 2,
        forget_after: Duration::from_secs(5),
        min_score: 0.5,
        threshold: 0.0,
        required_zones: Vec::new(),
    };

    fn tracker() -> Tracker<impl Fn(&str) -> Option<ClassRules>> {
        Tracker::new(|c: &str| matches!(c, "fire" | "knife").then_some(RULES))
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(ms)
    }

    fn s(class: &str, score: f32, x: f32, y: f32) -> Sighting {
        Sighting {
            class: class.into(),
            score,
            bbox: BBox {
                x,
                y,
                w: 40.0,
                h: 40.0,
            },
            zones: Vec::new(),
            min_score: None,
        }
    }

    fn frame(ms: u64, sightings: Vec<Sighting>) -> Frame {
        Frame {
            captured: t(ms),
            seq: ms,
            snapshot: Some(format!("snap-{ms}")),
            sightings,
        }
    }

    fn ids(c: &[Change]) -> Vec<(&'static str, u64)> {
        c.iter()
            .map(|c| match c {
                Change::Started(t) => ("start", t.id),
                Change::Zones(t) => ("zones", t.id),
                Change::Stationary(t) => ("stationary", t.id),
                Change::Ended(t) | Change::NotFound(t) | Change::MaxDuration(t) => ("end", t.id),
            })
            .collect()
    }

    #[test]
    fn an_object_held_in_view_for_a_minute_is_one_track() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        // Seen twice a second, drifting right, for a minute.
        for i in 0..120u64 {
            let x = 100.0 + i as f32 * 3.0;
            changes.extend(tr.observe(&frame(i * 500, vec![s("fire", 0.9, x, 50.0)])));
            changes.extend(tr.expire(t(i * 500)));
        }
        changes.extend(tr.expire(t(59_500 + 5_000)));
        assert_eq!(ids(&changes), [("start", 1), ("end", 1)]);
        let Change::Ended(end) = &changes[1] else {
            unreachable!()
        };
        assert_eq!(end.frames, 120);
        assert_eq!(end.first_seen, t(0));
        assert_eq!(end.last_seen, t(59_500));
    }

    #[test]
    fn two_objects_are_two_tracks_and_classes_never_mix() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        for i in 0..4u64 {
            let dx = i as f32 * 5.0;
            changes.extend(tr.observe(&frame(
                i * 200,
                vec![
                    s("fire", 0.9, 10.0 + dx, 10.0),
                    s("fire", 0.8, 300.0 - dx, 10.0),
                    // On top of the first fire, another class: its own track.
                    s("knife", 0.7, 10.0 + dx, 10.0),
                    // Not tracked.
                    s("person", 0.9, 10.0, 10.0),
                ],
            )));
        }
        assert_eq!(ids(&changes), [("start", 1), ("start", 2), ("start", 3)]);
        let classes: Vec<&str> = tr.live().map(|t| t.class.as_str()).collect();
        assert_eq!(classes, ["fire", "fire", "knife"]);
        assert!(tr.live().all(|t| t.frames == 4));
    }

    #[test]
    fn crossing_objects_keep_their_tracks_by_motion() {
        // Two fires moving towards each other, 20 px a frame, crossing at x=100.
        let mut tr = tracker();
        for i in 0..10u64 {
            let a = 10.0 + i as f32 * 20.0;
            let b = 190.0 - i as f32 * 20.0;
            tr.observe(&frame(
                i * 100,
                vec![s("fire", 0.9, a, 0.0), s("fire", 0.9, b, 30.0)],
            ));
        }
        let live: Vec<(u64, f32)> = tr.live().map(|t| (t.id, t.bbox.x)).collect();
        assert_eq!(
            live,
            [(1, 190.0), (2, 10.0)],
            "each track followed its object"
        );
    }

    #[test]
    fn one_that_leaves_and_returns_after_the_forget_time_is_a_new_incident() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        for ms in [0, 200, 400] {
            changes.extend(tr.observe(&frame(ms, vec![s("fire", 0.9, 50.0, 50.0)])));
        }
        changes.extend(tr.expire(t(4_000)));
        assert_eq!(ids(&changes), [("start", 1)], "4 s < forget_after: alive");
        // Back at 4.5 s: the same incident.
        changes.extend(tr.observe(&frame(4_500, vec![s("fire", 0.9, 52.0, 50.0)])));
        changes.extend(tr.expire(t(9_400)));
        assert_eq!(ids(&changes), [("start", 1)]);
        changes.extend(tr.expire(t(9_500)));
        for ms in [20_000, 20_200] {
            changes.extend(tr.observe(&frame(ms, vec![s("fire", 0.9, 50.0, 50.0)])));
        }
        assert_eq!(ids(&changes), [("start", 1), ("end", 1), ("start", 2)]);
    }

    #[test]
    fn weak_detections_continue_a_track_but_start_none() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        // Weak alone: nothing.
        for ms in [0, 200, 400] {
            changes.extend(tr.observe(&frame(ms, vec![s("fire", 0.3, 500.0, 50.0)])));
        }
        assert!(changes.is_empty() && tr.tracks.is_empty());
        // Strong once, then weak: confirmed on the weak second sighting.
        changes.extend(tr.observe(&frame(600, vec![s("fire", 0.9, 50.0, 50.0)])));
        changes.extend(tr.observe(&frame(800, vec![s("fire", 0.3, 52.0, 50.0)])));
        assert_eq!(ids(&changes), [("start", 1)]);
        // Below half of min_score: ignored entirely.
        changes.extend(tr.observe(&frame(1000, vec![s("fire", 0.2, 54.0, 50.0)])));
        assert_eq!(tr.live().next().unwrap().frames, 2);
    }

    #[test]
    fn a_single_sighting_is_forgotten_silently() {
        let mut tr = tracker();
        assert!(tr
            .observe(&frame(0, vec![s("fire", 0.9, 0.0, 0.0)]))
            .is_empty());
        assert!(tr.expire(t(10_000)).is_empty());
        assert!(tr.finish().is_empty());
    }

    #[test]
    fn the_best_score_keeps_its_snapshot_and_late_frames_do_not_move_the_track() {
        let mut tr = tracker();
        tr.observe(&frame(1000, vec![s("fire", 0.6, 50.0, 50.0)]));
        tr.observe(&frame(1200, vec![s("fire", 0.95, 60.0, 50.0)]));
        tr.observe(&frame(1400, vec![s("fire", 0.7, 70.0, 50.0)]));
        // A frame answered late by a slower worker.
        tr.observe(&frame(900, vec![s("fire", 0.8, 45.0, 50.0)]));
        let t0 = tr.live().next().unwrap().clone();
        assert_eq!(t0.best_score, 0.95);
        assert_eq!(t0.best_snapshot.as_deref(), Some("snap-1200"));
        assert_eq!(t0.first_seen, t(900));
        assert_eq!(t0.last_seen, t(1400));
        assert_eq!(t0.bbox.x, 70.0);
        assert_eq!(t0.frames, 4);
        assert_eq!(ids(&tr.finish()), [("end", 1)]);
    }

    #[test]
    fn bad_boxes_and_scores_are_ignored_not_tracked() {
        let mut tr = tracker();
        let mut bad = s("fire", f32::NAN, 0.0, 0.0);
        tr.observe(&frame(0, vec![bad.clone()]));
        bad.score = 0.9;
        bad.bbox.w = 0.0;
        tr.observe(&frame(100, vec![bad]));
        assert!(tr.tracks.is_empty());
    }

    #[test]
    fn a_square_moving_and_turning_is_one_track_whatever_order_frames_are_answered_in() {
        // Sightings as a worker answered them in a full-cycle run (capture ms, x): the
        // square moves right 220 px/s, turns, comes back, rests; gaps of 200-400 ms.
        let seen = [
            (0, 164.0),
            (201, 208.0),
            (404, 252.0),
            (806, 336.0),
            (1025, 380.0),
            (1229, 380.0),
            (1601, 292.0),
            (1849, 252.0),
            (2213, 164.0),
            (2604, 80.0),
            (3005, 80.0),
        ];
        // In order, in pairs swapped (two workers), and a batch answered backwards.
        let orders: [Vec<usize>; 3] = [
            (0..11).collect(),
            vec![1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 10],
            vec![0, 1, 4, 3, 2, 5, 8, 7, 6, 10, 9],
        ];
        for order in orders {
            let mut tr = tracker();
            let mut changes = Vec::new();
            for &i in &order {
                let (ms, x) = seen[i];
                let mut square = s("fire", 0.9, x, 152.0);
                (square.bbox.w, square.bbox.h) = (60.0, 56.0);
                changes.extend(tr.observe(&frame(ms, vec![square])));
            }
            changes.extend(tr.finish());
            assert_eq!(ids(&changes), [("start", 1), ("end", 1)], "order {order:?}");
        }
    }

    #[test]
    fn an_object_seen_again_after_a_gap_far_from_where_it_was_is_the_same_track() {
        // Sparse frames (a small budget): the square was last seen moving right at 336,
        // turned unseen and is next seen back at rest at 80, 1.8 s later.
        let mut tr = tracker();
        let mut changes = Vec::new();
        for (ms, x) in [
            (0, 164.0),
            (211, 208.0),
            (447, 252.0),
            (835, 336.0),
            (2633, 80.0),
        ] {
            let mut square = s("fire", 0.9, x, 152.0);
            (square.bbox.w, square.bbox.h) = (60.0, 56.0);
            changes.extend(tr.observe(&frame(ms, vec![square])));
        }
        assert_eq!(ids(&changes), [("start", 1)]);
        assert_eq!(tr.live().next().unwrap().frames, 5);
    }

    #[test]
    fn a_flood_of_detections_is_bounded_and_counted() {
        let mut tr = tracker();
        // 300 fires in a row, far apart: 256 tracks, 44 refused.
        let flood: Vec<Sighting> = (0..300)
            .map(|i| s("fire", 0.9, i as f32 * 1000.0, 0.0))
            .collect();
        tr.observe(&frame(0, flood));
        assert_eq!((tr.tracks.len(), tr.refused), (MAX_TRACKS, 44));
    }

    fn in_zones(mut s: Sighting, zones: &[&str]) -> Sighting {
        s.zones = zones.iter().map(|z| z.to_string()).collect();
        s
    }

    #[test]
    fn a_required_zone_holds_the_start_until_the_object_stands_in_it() {
        let mut tr = Tracker::new(|c: &str| {
            (c == "fire").then(|| ClassRules {
                required_zones: vec!["road".into()],
                ..RULES
            })
        });
        let mut changes = Vec::new();
        // Three frames on the pavement: seen, not started.
        for i in 0..3u64 {
            let x = 50.0 + i as f32 * 5.0;
            changes.extend(tr.observe(&frame(
                i * 200,
                vec![in_zones(s("fire", 0.9, x, 50.0), &["pavement"])],
            )));
        }
        assert!(changes.is_empty());
        assert_eq!(tr.held_back().count(), 1);
        // Onto the road: started at once (it was seen often enough already).
        changes.extend(tr.observe(&frame(
            600,
            vec![in_zones(s("fire", 0.9, 65.0, 50.0), &["road"])],
        )));
        assert_eq!(ids(&changes), [("start", 1)]);
        let Change::Started(t) = &changes[0] else {
            unreachable!()
        };
        assert_eq!(
            (t.zones.clone(), t.entered.clone()),
            (
                vec!["road".to_string()],
                vec!["pavement".to_string(), "road".to_string()]
            )
        );
        // Leaving the road is a zone change; staying off it is none.
        changes.extend(tr.observe(&frame(800, vec![s("fire", 0.9, 70.0, 50.0)])));
        changes.extend(tr.observe(&frame(1000, vec![s("fire", 0.9, 75.0, 50.0)])));
        assert_eq!(ids(&changes), [("start", 1), ("zones", 1)]);
        let Change::Zones(t) = &changes[1] else {
            unreachable!()
        };
        assert!(t.zones.is_empty());
        assert_eq!(t.entered, ["pavement", "road"]);
    }

    #[test]
    fn a_track_starts_only_once_its_median_score_reaches_the_threshold() {
        let mut tr = Tracker::new(|c: &str| {
            (c == "fire").then_some(ClassRules {
                threshold: 0.7,
                ..RULES
            })
        });
        let mut changes = Vec::new();
        // Scores 0.6, 0.6, 0.9: medians 0.6, 0.6, 0.6: held back.
        for (ms, score) in [(0, 0.6), (200, 0.6), (400, 0.9)] {
            changes.extend(tr.observe(&frame(ms, vec![s("fire", score, 50.0, 50.0)])));
        }
        assert!(changes.is_empty());
        // 0.6, 0.6, 0.9, 0.9: median 0.75.
        changes.extend(tr.observe(&frame(600, vec![s("fire", 0.9, 50.0, 50.0)])));
        assert_eq!(ids(&changes), [("start", 1)]);
        assert!((tr.live().next().unwrap().median_score() - 0.75).abs() < 1e-6);
    }

    #[test]
    fn a_sighting_own_min_score_replaces_the_class_one() {
        let mut tr = tracker();
        let mut changes = Vec::new();
        // 0.6 passes the class's 0.5 but not a zone's 0.8: it starts nothing alone.
        for ms in [0, 200, 400] {
            let mut strict = s("fire", 0.6, 50.0, 50.0);
            strict.min_score = Some(0.8);
            changes.extend(tr.observe(&frame(ms, vec![strict])));
        }
        assert!(changes.is_empty() && tr.tracks.is_empty());
    }
}
