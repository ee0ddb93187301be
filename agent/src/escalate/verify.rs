//! Verification frames: results asks a camera for one frame without motion, to look
//! again for objects that stopped (`results::stationary`), or at start for what is
//! already in view. The request travels results → app → the camera's loop, which sends
//! its next frame within its escalation budget; the frame's event id says what it looks
//! for, and comes back with its detections, so results knows a frame that looked for an
//! object and did not find it. The types live here, before both ends in the flow.

/// Asks `camera` for one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyRequest {
    pub camera: String,
    pub look: Look,
    /// Where to look, in fractions of the frame (x, y, w, h): crops are cut around
    /// these when the camera escalates crops. Empty: the whole frame.
    pub boxes: Vec<[f32; 4]>,
    /// Least time between two frames looking for the same track (capture times): the
    /// camera holds a request back until then, so a request that waited for a frame
    /// and the next one do not go out together.
    pub min_gap: std::time::Duration,
}

/// What a verification frame looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// The first frame after start: what it finds was already there.
    Baseline,
    /// These tracks.
    Tracks(Vec<u64>),
}

/// Event ids of verification frames start with this.
const PREFIX: &str = "verify-";

impl Look {
    /// The event id of the frame: `verify-baseline`, or `verify-` and the track ids
    /// joined by `-`.
    pub fn event_id(&self) -> String {
        match self {
            Look::Baseline => format!("{PREFIX}baseline"),
            Look::Tracks(ids) => {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                format!("{PREFIX}{}", ids.join("-"))
            }
        }
    }

    /// What the frame with `event_id` looked for; None for a motion frame.
    pub fn of_event(event_id: &str) -> Option<Look> {
        let rest = event_id.strip_prefix(PREFIX)?;
        if rest == "baseline" {
            return Some(Look::Baseline);
        }
        let ids: Result<Vec<u64>, _> = rest.split('-').map(str::parse).collect();
        ids.ok().map(Look::Tracks)
    }

    /// Adds what `other` looks for (two requests before the camera could send one
    /// frame become one frame).
    pub fn merge(&mut self, other: Look) {
        match (self, other) {
            (Look::Tracks(a), Look::Tracks(b)) => {
                for id in b {
                    if !a.contains(&id) {
                        a.push(id);
                    }
                }
            }
            // A baseline frame looks at everything; tracks asked for meanwhile wait for
            // their next check.
            (Look::Baseline, _) => {}
            (s, Look::Baseline) => *s = Look::Baseline,
        }
    }
}

impl VerifyRequest {
    /// Folds `other` (same camera) into this request.
    pub fn merge(&mut self, other: VerifyRequest) {
        let whole = matches!(other.look, Look::Baseline) || self.look == Look::Baseline;
        self.min_gap = self.min_gap.max(other.min_gap);
        self.look.merge(other.look);
        if whole {
            self.boxes.clear();
        } else {
            self.boxes.extend(other.boxes);
        }
    }
}

/// The capture times of the last verification frames per track, on the camera's side:
/// a request goes out only once every track it looks for was last looked for at least
/// its `min_gap` before.
#[derive(Debug, Default)]
pub struct Paced {
    /// (track id, capture time of the last frame that looked for it), newest last.
    last: Vec<(u64, std::time::SystemTime)>,
}

/// Tracks remembered per camera (the oldest are forgotten first).
const PACED: usize = 64;

impl Paced {
    /// True when `req` may go with a frame captured `at`.
    pub fn allows(&self, req: &VerifyRequest, at: std::time::SystemTime) -> bool {
        let Look::Tracks(ids) = &req.look else {
            return true;
        };
        self.last.iter().all(|(id, t)| {
            !ids.contains(id) || at.duration_since(*t).is_ok_and(|d| d >= req.min_gap)
        })
    }

    /// `req` went with a frame captured `at`.
    pub fn sent(&mut self, req: &VerifyRequest, at: std::time::SystemTime) {
        if let Look::Tracks(ids) = &req.look {
            self.last.retain(|(id, _)| !ids.contains(id));
            self.last.extend(ids.iter().map(|id| (*id, at)));
            let over = self.last.len().saturating_sub(PACED);
            self.last.drain(..over);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_what_the_frame_looks_for_and_read_back() {
        for (look, id) in [
            (Look::Baseline, "verify-baseline"),
            (Look::Tracks(vec![7]), "verify-7"),
            (Look::Tracks(vec![3, 12]), "verify-3-12"),
        ] {
            assert_eq!(look.event_id(), id);
            assert_eq!(Look::of_event(id), Some(look));
        }
        for motion in ["gate-1733580000000", "verify-x", "verify-", ""] {
            assert_eq!(Look::of_event(motion), None, "{motion:?}");
        }
    }

    #[test]
    fn requests_before_one_frame_could_go_merge() {
        let req = |look, boxes| VerifyRequest {
            camera: "road".into(),
            look,
            boxes,
            min_gap: std::time::Duration::from_secs(10),
        };
        let mut a = req(Look::Tracks(vec![1]), vec![[0.1, 0.1, 0.1, 0.1]]);
        a.merge(req(Look::Tracks(vec![1, 2]), vec![[0.5, 0.5, 0.1, 0.1]]));
        assert_eq!(a.look, Look::Tracks(vec![1, 2]));
        assert_eq!(a.boxes.len(), 2);
        a.merge(req(Look::Baseline, Vec::new()));
        assert_eq!((a.look.clone(), a.boxes.len()), (Look::Baseline, 0));
        a.merge(req(Look::Tracks(vec![3]), vec![[0.2, 0.2, 0.1, 0.1]]));
        assert_eq!((a.look, a.boxes.len()), (Look::Baseline, 0));
    }

    #[test]
    fn a_track_is_never_looked_for_twice_within_its_gap() {
        let t = |ms: u64| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let req = |ids: Vec<u64>| VerifyRequest {
            camera: "road".into(),
            look: Look::Tracks(ids),
            boxes: Vec::new(),
            min_gap: std::time::Duration::from_secs(4),
        };
        let mut p = Paced::default();
        assert!(p.allows(&req(vec![1]), t(0)));
        p.sent(&req(vec![1]), t(0));
        // A request that waited for a frame, then the next one: held back.
        for (ids, at, ok) in [
            (vec![1], 3_999, false),
            (vec![2], 100, true),
            (vec![1, 2], 100, false),
            (vec![1], 4_000, true),
        ] {
            assert_eq!(p.allows(&req(ids.clone()), t(at)), ok, "{ids:?} at {at}");
        }
        assert!(p.allows(
            &VerifyRequest {
                look: Look::Baseline,
                ..req(vec![])
            },
            t(1)
        ));
    }
}
