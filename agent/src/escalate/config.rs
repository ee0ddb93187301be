//! Per-camera escalation limits (`[cameras.escalation]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{Dur, IntIn};

/// How much of an event travels to the detector: frames for as long as motion lasts,
/// within a budget per time window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Frames one camera may escalate per `budget_window` (a burst of this many at
    /// once, then this rate).
    #[serde(default = "default_budget")]
    pub budget: IntIn<1, 10_000>,
    #[serde(default = "default_budget_window")]
    pub budget_window: Dur,
    /// Replaced by `budget` and `budget_window`; refused with a message saying so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frames: Option<i64>,
    /// Least time between two escalated frames of one camera.
    #[serde(default = "default_interval")]
    pub min_interval: Dur,
    /// JPEG quality of escalated frames.
    #[serde(default = "default_quality")]
    pub jpeg_quality: IntIn<1, 100>,
    /// What the detector looks at: crops of the full-resolution frame around the motion
    /// boxes (default), or the whole frame scaled to `detect_width`.
    #[serde(default)]
    pub regions: DetectRegions,
    /// With `regions = "motion"`, most crops (model runs) one frame may take; a frame
    /// whose motion needs more goes whole (see `wire::regions::plan`).
    #[serde(default = "default_max_crops")]
    pub max_crops: IntIn<1, 4>,
    /// Least side of a crop, in camera pixels: set it to the model's input size, so an
    /// object is never shrunk on its way to the detector.
    #[serde(default = "default_crop_size")]
    pub crop_size: IntIn<32, 4096>,
}

/// What part of an escalated frame the detector sees.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DetectRegions {
    /// The whole frame at `detect_width`.
    Whole,
    /// Square crops around motion at the camera's resolution, or the whole frame when
    /// crops would not pay (`wire::regions::plan`); the whole frame still travels for
    /// the snapshot.
    #[default]
    Motion,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            budget: default_budget(),
            budget_window: default_budget_window(),
            max_frames: None,
            min_interval: default_interval(),
            jpeg_quality: default_quality(),
            regions: DetectRegions::default(),
            max_crops: default_max_crops(),
            crop_size: default_crop_size(),
        }
    }
}

impl EscalationConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(n) = self.max_frames {
            errs.push((
                "max_frames".into(),
                format!(
                    "was replaced: escalation now goes on for as long as motion lasts, within \
                     `budget` frames per `budget_window` (defaults {} per {:?}); remove \
                     max_frames = {n} (budget = {n} keeps the same burst)",
                    default_budget().get(),
                    default_budget_window()
                ),
            ));
        }
        if self.budget_window.get() < Duration::from_millis(100) {
            errs.push((
                "budget_window".into(),
                format!("must be at least 100ms, got {:?}", self.budget_window),
            ));
        }
        errs
    }
}

fn default_budget() -> IntIn<1, 10_000> {
    IntIn::lit(10)
}
fn default_budget_window() -> Dur {
    Dur::secs(5)
}
fn default_interval() -> Dur {
    Dur::ms(200)
}
fn default_quality() -> IntIn<1, 100> {
    IntIn::lit(85)
}
/// Two crops cost the worker twice the whole frame at most; scattered motion that
/// needs more is most of the scene moving.
fn default_max_crops() -> IntIn<1, 4> {
    IntIn::lit(2)
}
/// YOLOv4's usual input size.
fn default_crop_size() -> IntIn<32, 4096> {
    IntIn::lit(416)
}

fn yes() -> bool {
    true
}
