//! Motion detector settings, per camera. Defaults are tuned on real footage.

use serde::{Deserialize, Serialize};

use crate::config::types::{Dur, Fraction, IntIn};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Grey-level difference from the background that counts as change.
    #[serde(default = "default_threshold")]
    pub threshold: IntIn<1, 255>,
    /// Background learning rate: how fast slow light changes fade in.
    #[serde(default = "default_rate")]
    pub background_rate: Fraction,
    /// Smallest motion box, as a fraction of the frame area.
    #[serde(default = "default_min_area")]
    pub min_area: Fraction,
    /// Largest motion box, as a fraction of the frame area.
    #[serde(default = "default_max_area")]
    pub max_area: Fraction,
    /// A change over this fraction of the frame is global (rain, lights, IR switch):
    /// the background is re-seeded and no event is raised.
    #[serde(default = "default_global")]
    pub global_change: Fraction,
    /// Consecutive motion frames before an event starts.
    #[serde(default = "default_start_frames")]
    pub start_frames: IntIn<1, 100>,
    /// Quiet time after the last motion before the event ends.
    #[serde(default = "default_quiet")]
    pub quiet_period: Dur,
    /// Areas to ignore: polygons in normalised coordinates `[[x, y], ...]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<Vec<[f64; 2]>>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_threshold(),
            background_rate: default_rate(),
            min_area: default_min_area(),
            max_area: default_max_area(),
            global_change: default_global(),
            start_frames: default_start_frames(),
            quiet_period: default_quiet(),
            masks: Vec::new(),
        }
    }
}

impl MotionConfig {
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

fn yes() -> bool {
    true
}
fn default_threshold() -> IntIn<1, 255> {
    IntIn::lit(25)
}
fn default_rate() -> Fraction {
    Fraction::lit(0.05)
}
fn default_min_area() -> Fraction {
    Fraction::lit(0.001)
}
fn default_max_area() -> Fraction {
    Fraction::lit(0.8)
}
fn default_global() -> Fraction {
    Fraction::lit(0.5)
}
fn default_start_frames() -> IntIn<1, 100> {
    IntIn::lit(2)
}
fn default_quiet() -> Dur {
    Dur::secs(3)
}
