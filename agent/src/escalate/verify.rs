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
        self.look.merge(other.look);
        if whole {
            self.boxes.clear();
        } else {
            self.boxes.extend(other.boxes);
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
}
