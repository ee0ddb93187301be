//! Detector (`[inference]`) and event (`[events]`) settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::values::{Fraction, IntIn};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    /// Darknet-trained weights expect BGR.
    Bgr,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    #[default]
    Letterbox,
    Stretch,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// ONNX model; empty means the generated demo model.
    #[serde(default)]
    pub model: PathBuf,
    #[serde(default)]
    pub labels: PathBuf,
    /// Model input side in pixels (0: read from the model).
    #[serde(default)]
    pub input_size: IntIn<0, 4096>,
    #[serde(default)]
    pub channel_order: ChannelOrder,
    #[serde(default)]
    pub resize: ResizeMode,
    /// Execution providers in order of preference.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    #[serde(default = "default_confidence")]
    pub confidence: Fraction,
    #[serde(default = "default_nms")]
    pub nms_iou: Fraction,
    /// Per-class confidence thresholds by class name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_thresholds: BTreeMap<String, Fraction>,
    /// Intra-op threads of the CPU provider (0: ONNX Runtime decides).
    #[serde(default = "default_threads")]
    pub threads: IntIn<0, 256>,
    /// Path of `libonnxruntime.so`; else `ORT_DYLIB_PATH`, else the project's virtualenv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ort_library: Option<PathBuf>,
    /// Root of the TensorRT engine, timing-cache and EP-context cache. Unset: the unit's
    /// state directory (`$STATE_DIRECTORY/engines`, i.e. /var/lib/edge-agent/engines),
    /// else `$XDG_CACHE_HOME/edge-agent/engines` or `~/.cache/edge-agent/engines`.
    /// Empty (`""`): no cache, every session builds its engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_cache: Option<PathBuf>,
    /// TensorRT FP16 kernels (Jetsons are built for them; off only to compare accuracy).
    #[serde(default = "default_true")]
    pub fp16: bool,
    /// A worker that gets no GPU provider (TensorRT or CUDA) fails to start instead of
    /// running on the CPU: the pool backs off and frames go to `scaling.remote_queue`.
    #[serde(default)]
    pub require_gpu: bool,
    /// Factor from 0..255 pixel values to the model's input range (darknet: 1/255).
    #[serde(default = "default_pixel_scale")]
    pub pixel_scale: Fraction,
    /// Most frames run in one session call when several wait and the model's batch
    /// dimension allows.
    #[serde(default = "default_max_batch")]
    pub max_batch: IntIn<1, 64>,
    /// Largest frame JPEG a worker decodes, in pixels (width x height, read from its
    /// header first): a 4K frame and its crops fit; a hostile header does not get
    /// gigabytes of RGB.
    #[serde(default = "default_max_frame_pixels")]
    pub max_frame_pixels: IntIn<65_536, 67_108_864>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            labels: PathBuf::new(),
            input_size: IntIn::lit(0),
            channel_order: ChannelOrder::default(),
            resize: ResizeMode::default(),
            providers: default_providers(),
            confidence: default_confidence(),
            nms_iou: default_nms(),
            class_thresholds: BTreeMap::new(),
            threads: default_threads(),
            ort_library: None,
            engine_cache: None,
            fp16: true,
            require_gpu: false,
            pixel_scale: default_pixel_scale(),
            max_batch: default_max_batch(),
            max_frame_pixels: default_max_frame_pixels(),
        }
    }
}

impl InferenceConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.providers.is_empty() {
            errs.push((
                "providers".into(),
                "must list at least one provider (e.g. [\"cpu\"])".into(),
            ));
        }
        let size = self.input_size.get();
        if size != 0 && size % 32 != 0 {
            errs.push((
                "input_size".into(),
                format!("must be a multiple of 32 (YOLO stride), got {size}"),
            ));
        }
        if self.require_gpu && !self.providers.iter().any(|p| *p != Provider::Cpu) {
            errs.push((
                "require_gpu".into(),
                "is true but providers lists no GPU provider (add \"tensorrt\" or \"cuda\")".into(),
            ));
        }
        if self.pixel_scale.get() <= 0.0 {
            errs.push(("pixel_scale".into(), "must be greater than 0".into()));
        }
        if !self.labels.as_os_str().is_empty() && self.model.as_os_str().is_empty() {
            errs.push((
                "labels".into(),
                "is set but model is not (the generated test model brings its own labels)".into(),
            ));
        }
        errs
    }
}

/// What a worker does with the detections of a frame besides publishing them: which
/// classes get a snapshot, which are pixelated, where snapshots are kept. Made from
/// `[events]` (`results::EventsConfig::snapshots`), which the worker is handed.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotConfig {
    /// Classes that raise an event (with a snapshot) when detected.
    pub classes: Vec<String>,
    /// Classes pixelated in every published image.
    pub privacy_classes: Vec<String>,
    /// Where snapshots are written before their event is published (None: publish only).
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_quality: IntIn<1, 100>,
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Tensorrt, Provider::Cuda, Provider::Cpu]
}
fn default_true() -> bool {
    true
}
fn default_confidence() -> Fraction {
    Fraction::lit(0.4)
}
fn default_nms() -> Fraction {
    Fraction::lit(0.45)
}
fn default_pixel_scale() -> Fraction {
    Fraction::lit(1.0 / 255.0)
}
fn default_max_frame_pixels() -> IntIn<65_536, 67_108_864> {
    // 3840 wide, 2160 rows of frame and as many again of crops.
    IntIn::lit(3840 * 4320)
}
fn default_max_batch() -> IntIn<1, 64> {
    IntIn::lit(4)
}
fn default_threads() -> IntIn<0, 256> {
    IntIn::lit(0)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_check_reports_each_bad_key() {
        let cases: Vec<(InferenceConfig, &str, &str)> = vec![
            (
                InferenceConfig {
                    providers: vec![],
                    ..InferenceConfig::default()
                },
                "providers",
                "must list at least one provider",
            ),
            (
                InferenceConfig {
                    input_size: IntIn::lit(400),
                    ..InferenceConfig::default()
                },
                "input_size",
                "must be a multiple of 32 (YOLO stride), got 400",
            ),
            (
                InferenceConfig {
                    labels: "coco.names".into(),
                    ..InferenceConfig::default()
                },
                "labels",
                "is set but model is not",
            ),
            (
                InferenceConfig {
                    providers: vec![Provider::Cpu],
                    require_gpu: true,
                    ..InferenceConfig::default()
                },
                "require_gpu",
                "is true but providers lists no GPU provider",
            ),
            (
                InferenceConfig {
                    pixel_scale: Fraction::lit(0.0),
                    ..InferenceConfig::default()
                },
                "pixel_scale",
                "must be greater than 0",
            ),
        ];
        for (cfg, key, msg) in cases {
            let errs = cfg.check();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].0, key);
            assert!(errs[0].1.contains(msg), "{errs:?}");
        }
        assert!(InferenceConfig::default().check().is_empty());
    }
}
