//! Event settings (`[events]`): which classes raise incidents, snapshots, how
//! detections become tracks and incidents (`[events.tracks]`, per class under
//! `[events.tracks.classes.NAME]`), and the evidence clips of incidents with their
//! storage budget (`[events.clips]`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::track::{ClassRules, StationaryRules};
use crate::infer::SnapshotConfig;
use crate::values::{ByteSize, Dur, Fraction, IntIn};

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
    /// The agent keeps the snapshots it reads back, for the page, up to this much memory
    /// (the least recently used go first, counted).
    #[serde(default = "default_snapshot_memory")]
    pub snapshot_memory: ByteSize,
    /// How detections become tracks and incidents (the agent's side).
    #[serde(default)]
    pub tracks: TracksConfig,
    /// A video clip of every incident, and the storage budget of clips and snapshots.
    #[serde(default)]
    pub clips: ClipsConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            classes: default_event_classes(),
            privacy_classes: Vec::new(),
            snapshot_dir: None,
            snapshot_quality: default_snapshot_quality(),
            snapshot_memory: default_snapshot_memory(),
            tracks: Default::default(),
            clips: Default::default(),
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

/// `[events.clips]`: what a clip spans, where clips go, and how much of the disk clips
/// and snapshots may hold.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClipsConfig {
    /// On by default: an incident's evidence is its clip. Measured cost (BENCHMARKS.md,
    /// `clips`): under 0.4 % of a core and about 1.6 MiB per 720p camera. `demo://`
    /// cameras have no encoded stream and get none.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Video kept from before an incident starts (the camera's pre-roll ring).
    #[serde(default = "default_pre_capture")]
    pub pre_capture: Dur,
    /// Video kept after the camera's last incident ends.
    #[serde(default = "default_post_capture")]
    pub post_capture: Dur,
    /// A longer clip continues in a next file.
    #[serde(default = "default_max_duration")]
    pub max_duration: Dur,
    /// Where clips go; unset: `$STATE_DIRECTORY/clips` under systemd, else a
    /// directory the log names at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Clips and snapshots together may hold at most this much (0: no cap; default
    /// 2 GiB, so that clips on by default never crowd a small eMMC).
    #[serde(default = "default_clips_max_bytes")]
    pub max_bytes: ByteSize,
    /// Free space kept on the clips' filesystem (0: none): the oldest files go first.
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
    /// Files older than this are removed; unset: kept until the budget needs room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    /// Hard cap of each camera's pre-roll ring; when it bites, the oldest seconds go
    /// (counted as `preroll_cap`).
    #[serde(default = "default_preroll_max_bytes")]
    pub preroll_max_bytes: ByteSize,
}

impl Default for ClipsConfig {
    fn default() -> Self {
        Self {
            enabled: yes(),
            pre_capture: default_pre_capture(),
            post_capture: default_post_capture(),
            max_duration: default_max_duration(),
            dir: None,
            max_bytes: default_clips_max_bytes(),
            min_free: default_min_free(),
            max_age: None,
            preroll_max_bytes: default_preroll_max_bytes(),
        }
    }
}

/// A camera's own clip setting (`[cameras.clips]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraClips {
    /// With `events.clips.enabled`, this camera's incidents get clips.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for CameraClips {
    fn default() -> Self {
        Self { enabled: yes() }
    }
}

fn yes() -> bool {
    true
}

fn default_pre_capture() -> Dur {
    Dur::secs(5)
}
fn default_post_capture() -> Dur {
    Dur::secs(5)
}
fn default_max_duration() -> Dur {
    Dur::secs(120)
}
fn default_clips_max_bytes() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_min_free() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_preroll_max_bytes() -> ByteSize {
    ByteSize(32 << 20)
}

impl ClipsConfig {
    /// Checks the section; returns (key relative to it, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut bad = |key: &str, m: String| errs.push((key.to_string(), m));
        if self.pre_capture.get() > Duration::from_secs(60) {
            bad(
                "pre_capture",
                format!(
                    "must be at most 60s (it is held in memory per camera), got {:?}",
                    self.pre_capture
                ),
            );
        }
        if self.post_capture.get() > Duration::from_secs(600) {
            bad(
                "post_capture",
                format!("must be at most 10m, got {:?}", self.post_capture),
            );
        }
        if self.max_duration.get() < Duration::from_secs(10) {
            bad(
                "max_duration",
                format!("must be at least 10s, got {:?}", self.max_duration),
            );
        }
        if self.max_duration.get() > Duration::from_secs(3600) {
            bad(
                "max_duration",
                format!("must be at most 1h, got {:?}", self.max_duration),
            );
        }
        if self.preroll_max_bytes.get() < 64 << 10 {
            bad(
                "preroll_max_bytes",
                format!(
                    "must be at least 64KiB (one key frame), got {:?}",
                    self.preroll_max_bytes
                ),
            );
        }
        if self.max_bytes.get() != 0 && self.max_bytes.get() < 1 << 20 {
            bad(
                "max_bytes",
                format!(
                    "must be 0 (no cap) or at least 1MiB, got {:?}",
                    self.max_bytes
                ),
            );
        }
        if let Some(d) = &self.dir {
            if d.as_os_str().is_empty() {
                bad(
                    "dir",
                    "must not be empty (leave it out for the default)".into(),
                );
            }
        }
        if let Some(a) = self.max_age.filter(|a| a.get() < Duration::from_secs(60)) {
            bad("max_age", format!("must be at least 1m, got {a:?}"));
        }
        errs
    }

    /// The recorders' part, for clips in `dir`.
    pub fn settings(&self, dir: PathBuf) -> crate::clips::ClipSettings {
        crate::clips::ClipSettings {
            dir,
            pre_capture: self.pre_capture.get(),
            post_capture: self.post_capture.get(),
            max_duration: self.max_duration.get(),
            preroll_max_bytes: usize::try_from(self.preroll_max_bytes.get()).unwrap_or(usize::MAX),
        }
    }

    /// The storage budget's part.
    pub fn budget(&self) -> crate::clips::budget::Budget {
        crate::clips::budget::Budget {
            max_bytes: self.max_bytes.get(),
            min_free: self.min_free.get(),
            max_age: self.max_age.map(|a| a.get()),
        }
    }

    /// The clips directory: `dir`, else `$STATE_DIRECTORY/clips` (systemd's
    /// `StateDirectory=`, its first entry), else `$XDG_STATE_HOME/edge-agent/clips`,
    /// `~/.local/state/edge-agent/clips`, or the temporary directory's
    /// `edge-agent/clips`.
    pub fn resolved_dir(&self) -> PathBuf {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(s) = env("STATE_DIRECTORY") {
            let first = s
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            return PathBuf::from(first).join("clips");
        }
        if let Some(x) = env("XDG_STATE_HOME") {
            return PathBuf::from(x).join("edge-agent/clips");
        }
        if let Some(h) = env("HOME") {
            return PathBuf::from(h).join(".local/state/edge-agent/clips");
        }
        std::env::temp_dir().join("edge-agent/clips")
    }
}

fn default_event_classes() -> Vec<String> {
    ["accident", "fire", "gun", "knife"]
        .map(String::from)
        .to_vec()
}
fn default_snapshot_memory() -> ByteSize {
    ByteSize(16 << 20)
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
    #[serde(default = "default_stationary_max_duration")]
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
            max_duration: default_stationary_max_duration(),
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

impl StationaryConfig {
    /// The checked rules; None when the section is off.
    pub fn rules(&self) -> Option<StationaryRules> {
        self.enabled.then(|| StationaryRules {
            check_interval: self.check_interval.get(),
            max_duration: self.max_duration.get(),
            ignore_after: self.ignore_after.get(),
        })
    }
}

fn default_check_interval() -> Dur {
    Dur::secs(10)
}
fn default_stationary_max_duration() -> Dur {
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
    fn bad_clip_settings_are_named_with_what_is_wrong() {
        let rows = [
            ("pre_capture = \"2m\"", "pre_capture", "at most 60s"),
            ("post_capture = \"1h\"", "post_capture", "at most 10m"),
            ("max_duration = \"1s\"", "max_duration", "at least 10s"),
            ("max_bytes = 1000", "max_bytes", "at least 1MiB"),
            (
                "preroll_max_bytes = \"1KiB\"",
                "preroll_max_bytes",
                "at least 64KiB",
            ),
            ("dir = \"\"", "dir", "must not be empty"),
            ("max_age = \"5s\"", "max_age", "at least 1m"),
        ];
        for (text, key, message) in rows {
            let c: ClipsConfig = toml::from_str(text).unwrap();
            let errs = c.check();
            assert_eq!(errs.len(), 1, "{text}: {errs:?}");
            assert_eq!(errs[0].0, key, "{text}");
            assert!(errs[0].1.contains(message), "{text}: {}", errs[0].1);
        }
        assert!(ClipsConfig::default().check().is_empty());
        assert!(toml::from_str::<ClipsConfig>("pre_roll = \"5s\"").is_err());
        let c: ClipsConfig = toml::from_str("max_bytes = \"2GiB\"\nmin_free = 0").unwrap();
        assert_eq!((c.max_bytes.get(), c.min_free.get()), (2 << 30, 0));
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
