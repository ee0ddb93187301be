//! Event settings (`[events]`): which classes raise incidents, snapshots, and how
//! detections become tracks and incidents (`[events.tracks]`, per class under
//! `[events.tracks.classes.NAME]`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::track::ClassRules;
use crate::infer::SnapshotConfig;
use crate::values::{Dur, Fraction, IntIn};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Classes that raise an event (with a snapshot) when detected.
    #[serde(default = "default_event_classes")]
    pub classes: Vec<String>,
    /// Classes pixelated in every published image.
    #[serde(default)]
    pub privacy_classes: Vec<String>,
    /// Where snapshots are written before their event is published (empty: publish only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_dir: Option<PathBuf>,
    #[serde(default = "default_snapshot_quality")]
    pub snapshot_quality: IntIn<1, 100>,
    /// How detections become tracks and incidents (the agent's side).
    #[serde(default)]
    pub tracks: TracksConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            classes: default_event_classes(),
            privacy_classes: Vec::new(),
            snapshot_dir: None,
            snapshot_quality: default_snapshot_quality(),
            tracks: Default::default(),
        }
    }
}

impl EventsConfig {
    /// The worker's part of the section.
    pub fn snapshots(&self) -> SnapshotConfig {
        SnapshotConfig {
            classes: self.classes.clone(),
            privacy_classes: self.privacy_classes.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            snapshot_quality: self.snapshot_quality,
        }
    }
}

fn default_event_classes() -> Vec<String> {
    ["accident", "fire", "gun", "knife"]
        .map(String::from)
        .to_vec()
}
fn default_snapshot_quality() -> IntIn<1, 100> {
    IntIn::lit(85)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracksConfig {
    /// Frames a track is seen in before its incident starts.
    #[serde(default = "default_confirm")]
    pub confirm_frames: IntIn<1, 1000>,
    /// A track not seen for this long ends its incident. Longer than the gaps between
    /// escalated frames, and than a pause in motion that should not split an incident.
    #[serde(default = "default_forget")]
    pub forget_after: Dur,
    /// Detections below this score start no track (down to half of it they continue one).
    #[serde(default = "default_min_score")]
    pub min_score: Fraction,
    /// An `update` message per incident at most this often ("0s": none).
    #[serde(default = "default_update")]
    pub update_interval: Dur,
    /// Overrides per class name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassTracks>,
    /// Objects that stop moving (`[events.tracks.stationary]`).
    #[serde(default)]
    pub stationary: StationaryConfig,
}

/// Objects that stop moving. Motion no longer escalates frames of a wreck or a parked
/// car, so silence is not absence: a confirmed track unseen for a while is looked for
/// with a verification frame before it may end, and kept alive at a bounded rate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StationaryConfig {
    /// Off: a track ends `forget_after` after its last sighting, moving or not.
    #[serde(default)]
    pub enabled: bool,
    /// One verification frame per stationary track at most this often (escalated
    /// without motion, within the camera's escalation budget).
    #[serde(default = "default_check_interval")]
    pub check_interval: Dur,
    /// A stationary incident ends this long after the object stopped, even if it is
    /// still there.
    #[serde(default = "default_max_duration")]
    pub max_duration: Dur,
    /// An object that stood still this long (or was already there when the agent
    /// started) is background: it stays known, verified at `check_interval`, and motion
    /// near it starts no new incident.
    #[serde(default = "default_ignore_after")]
    pub ignore_after: Dur,
}

impl Default for StationaryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            check_interval: default_check_interval(),
            max_duration: default_max_duration(),
            ignore_after: default_ignore_after(),
        }
    }
}

impl StationaryConfig {
    /// Checks the section; (key relative to it, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.check_interval.get() < Duration::from_secs(1) {
            errs.push((
                "check_interval".to_string(),
                format!("must be at least 1s, got {:?}", self.check_interval),
            ));
        }
        for (key, v) in [
            ("max_duration", self.max_duration),
            ("ignore_after", self.ignore_after),
        ] {
            if v.get() < self.check_interval.get() {
                errs.push((
                    key.to_string(),
                    format!(
                        "must be at least check_interval ({:?}), got {v:?}",
                        self.check_interval
                    ),
                ));
            }
        }
        errs
    }
}

fn default_check_interval() -> Dur {
    Dur::secs(10)
}
fn default_max_duration() -> Dur {
    Dur::secs(3600)
}
fn default_ignore_after() -> Dur {
    Dur::secs(300)
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassTracks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_frames: Option<IntIn<1, 1000>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_after: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<Fraction>,
    /// A track starts only once the median score of its sightings reaches this
    /// (Frigate's `threshold`); unset: no such test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Fraction>,
    /// A track starts only once its object stood in one of these zones (bottom centre
    /// of its box). A camera without such a zone is a configuration error; a camera
    /// lifts it with `required_zones = []`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_zones: Option<Vec<String>>,
    /// Smallest box: at most 1.0 a fraction of the frame area, above that pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_area: Option<f64>,
    /// Largest box, as `min_area`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_area: Option<f64>,
    /// Smallest width / height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ratio: Option<f64>,
    /// Largest width / height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// Object masks: a box whose bottom centre is in one does not count. Polygons in
    /// fractions of the frame. Separate from the camera's motion masks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<Vec<[f64; 2]>>,
    /// Object masks in camera pixels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks_px: Vec<Vec<[f64; 2]>>,
}

impl ClassTracks {
    /// Checks the filter fields; returns (key relative to this table, message).
    pub fn check_filters(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (key, v) in [
            ("min_area", self.min_area),
            ("max_area", self.max_area),
            ("min_ratio", self.min_ratio),
            ("max_ratio", self.max_ratio),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    errs.push((key.to_string(), format!("must be above 0, got {v}")));
                }
            }
        }
        for (lo, hi, min, max) in [
            ("min_area", "max_area", self.min_area, self.max_area),
            ("min_ratio", "max_ratio", self.min_ratio, self.max_ratio),
        ] {
            if let (Some(a), Some(b)) = (min, max) {
                // Areas compare only in the same units (both fractions or both pixels).
                if a > b && (lo == "min_ratio" || (a <= 1.0) == (b <= 1.0)) {
                    errs.push((
                        lo.to_string(),
                        format!("must not exceed {hi} ({b}), got {a}"),
                    ));
                }
            }
        }
        for (key, polys, fractions) in [
            ("masks", &self.masks, true),
            ("masks_px", &self.masks_px, false),
        ] {
            for (i, p) in polys.iter().enumerate() {
                for m in super::geometry::check_polygon(p, fractions) {
                    errs.push((format!("{key}[{i}]"), m));
                }
            }
        }
        errs
    }
}

impl Default for TracksConfig {
    fn default() -> Self {
        Self {
            confirm_frames: default_confirm(),
            forget_after: default_forget(),
            min_score: default_min_score(),
            update_interval: default_update(),
            classes: BTreeMap::new(),
            stationary: StationaryConfig::default(),
        }
    }
}

impl TracksConfig {
    /// The rules of `class`: its overrides over the defaults.
    pub fn rules(&self, class: &str) -> ClassRules {
        let o = self.classes.get(class).cloned().unwrap_or_default();
        ClassRules {
            confirm_frames: o.confirm_frames.unwrap_or(self.confirm_frames).as_u32(),
            forget_after: o.forget_after.unwrap_or(self.forget_after).get(),
            min_score: o.min_score.unwrap_or(self.min_score).get() as f32,
            threshold: o.threshold.map_or(0.0, |t| t.get() as f32),
            required_zones: o.required_zones.unwrap_or_default(),
        }
    }

    /// The rules of `class` on a camera whose own overrides for it are `camera`.
    pub fn rules_on(&self, class: &str, camera: Option<&ClassTracks>) -> ClassRules {
        let mut r = self.rules(class);
        if let Some(c) = camera {
            if let Some(v) = c.confirm_frames {
                r.confirm_frames = v.as_u32();
            }
            if let Some(v) = c.forget_after {
                r.forget_after = v.get();
            }
            if let Some(v) = c.min_score {
                r.min_score = v.get() as f32;
            }
            if let Some(v) = c.threshold {
                r.threshold = v.get() as f32;
            }
            if let Some(v) = &c.required_zones {
                r.required_zones = v.clone();
            }
        }
        r
    }

    /// `event_classes` are the classes tracked (`events.classes`).
    pub fn check(&self, event_classes: &[String]) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for class in self.classes.keys() {
            if !event_classes.contains(class) {
                errs.push((
                    format!("classes.{class}"),
                    format!("{class:?} is not in events.classes {event_classes:?}: only event classes are tracked"),
                ));
            }
        }
        let forgets = std::iter::once(("forget_after".to_string(), self.forget_after)).chain(
            self.classes.iter().filter_map(|(c, o)| {
                o.forget_after
                    .map(|f| (format!("classes.{c}.forget_after"), f))
            }),
        );
        for (class, o) in &self.classes {
            errs.extend(
                o.check_filters()
                    .into_iter()
                    .map(|(k, m)| (format!("classes.{class}.{k}"), m)),
            );
        }
        errs.extend(
            self.stationary
                .check()
                .into_iter()
                .map(|(k, m)| (format!("stationary.{k}"), m)),
        );
        for (key, f) in forgets {
            if f.get() < Duration::from_millis(500) {
                errs.push((key, format!("must be at least 500ms, got {f:?}")));
            }
        }
        errs
    }
}

fn default_confirm() -> IntIn<1, 1000> {
    IntIn::lit(2)
}
fn default_forget() -> Dur {
    Dur::secs(15)
}
fn default_min_score() -> Fraction {
    Fraction::lit(0.5)
}
fn default_update() -> Dur {
    Dur::secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_overrides_apply_over_the_defaults() {
        let c: TracksConfig = toml::from_str(
            "forget_after = \"20s\"\n[classes.fire]\nconfirm_frames = 1\nmin_score = 0.7\n",
        )
        .unwrap();
        let fire = c.rules("fire");
        assert_eq!(
            (fire.confirm_frames, fire.forget_after, fire.min_score),
            (1, Duration::from_secs(20), 0.7)
        );
        let knife = c.rules("knife");
        assert_eq!((knife.confirm_frames, knife.min_score), (2, 0.5));
        assert!(c.check(&["fire".into()]).is_empty());
    }

    #[test]
    fn bad_track_settings_are_named() {
        let c: TracksConfig =
            toml::from_str("forget_after = \"100ms\"\n[classes.cat]\nforget_after = \"1ms\"\n")
                .unwrap();
        let keys: Vec<String> = c.check(&["fire".into()]).into_iter().map(|e| e.0).collect();
        assert_eq!(
            keys,
            ["classes.cat", "forget_after", "classes.cat.forget_after"]
        );
        assert!(toml::from_str::<TracksConfig>("[classes.fire]\nconfirm = 1").is_err());
    }

    #[test]
    fn bad_stationary_settings_are_named() {
        for (toml, errors) in [
            ("[stationary]\nenabled = true\n", vec![]),
            (
                "[stationary]\ncheck_interval = \"200ms\"\n",
                vec![(
                    "stationary.check_interval",
                    "must be at least 1s, got 200ms",
                )],
            ),
            (
                "[stationary]\ncheck_interval = \"30s\"\nmax_duration = \"10s\"\n",
                vec![(
                    "stationary.max_duration",
                    "must be at least check_interval (30s), got 10s",
                )],
            ),
            (
                "[stationary]\nignore_after = \"1s\"\n",
                vec![(
                    "stationary.ignore_after",
                    "must be at least check_interval (10s), got 1s",
                )],
            ),
        ] {
            let c: TracksConfig = toml::from_str(toml).unwrap();
            let got: Vec<(String, String)> = c.check(&[]);
            let want: Vec<(String, String)> = errors
                .iter()
                .map(|(k, m)| (k.to_string(), m.to_string()))
                .collect();
            assert_eq!(got, want, "{toml}");
        }
        assert!(toml::from_str::<TracksConfig>("[stationary]\ninterval = \"1s\"").is_err());
    }
}
