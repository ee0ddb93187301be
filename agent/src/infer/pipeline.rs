//! The detection pipeline shared by the worker and `edge-agent detect`: decode,
//! letterbox, run, decode the layout, NMS, map to the frame.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;

use super::config::InferenceConfig;
use super::decode::{self, RawBox, Thresholds};
use super::layout::{self, BatchDim, Layout, ModelSpec};
use super::preprocess::{InputFormat, Preprocessor};
use super::session::{self, provider_name};
use super::InferError;
use crate::image::{self, RgbImage};
use crate::telemetry::metrics::{metrics, stage};
use crate::wire::detections::{Detection, Detections, Timings};

/// The generated test model and its labels, used when `inference.model` is empty.
pub const DEFAULT_MODEL: &str = "models/generated/test-yolov4.onnx";
pub const DEFAULT_LABELS: &str = "models/test.names";
/// Where the package puts the test model, under the binary's prefix (`/usr`).
pub const PACKAGED_MODEL: &str = "share/edge-agent/models/test-yolov4.onnx";

pub struct Pipeline {
    session: Session,
    spec: ModelSpec,
    model: PathBuf,
    labels: Vec<String>,
    thresholds: Thresholds,
    nms_iou: f32,
    pre: Preprocessor,
    provider: &'static str,
    max_batch: usize,
    max_frame_pixels: u64,
    input: Vec<f32>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Finds `rel` under the current directory, its ancestors or the executable's.
fn find_upwards(rel: &str) -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.into_iter().map(|r| r.join(rel)).find(|p| p.is_file())
}

/// The model and labels files the configuration means (the generated test model
/// when `model` is empty).
pub fn resolve_paths(cfg: &InferenceConfig) -> Result<(PathBuf, Option<PathBuf>), InferError> {
    if !cfg.model.as_os_str().is_empty() {
        let labels = (!cfg.labels.as_os_str().is_empty()).then(|| cfg.labels.clone());
        return Ok((cfg.model.clone(), labels));
    }
    let model = project_test_model()
        .or_else(packaged_test_model)
        .ok_or_else(|| InferError::ModelMissing {
            path: PathBuf::from(DEFAULT_MODEL),
            hint: " (inference.model is empty, so the generated test model is used: run \
               `python models/make_test_model.py` from the project root, or set inference.model)"
                .into(),
        })?;
    // Next to the packaged model; one level up from models/generated/ in the project.
    let labels = [model.parent(), model.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|m| m.join("test.names"))
        .find(|p| p.is_file())
        .or_else(|| find_upwards(DEFAULT_LABELS));
    Ok((model, labels))
}

/// The generated test model in a project checkout (up from the working directory or
/// the executable): the development setup, where test cameras are RTSP servers too.
pub fn project_test_model() -> Option<PathBuf> {
    find_upwards(DEFAULT_MODEL)
}

/// The test model the package installs for the demo camera
/// (`/usr/share/edge-agent/models/`, found from `/usr/bin/edge-agent`).
pub fn packaged_test_model() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let prefix = exe.parent()?.parent()?;
    Some(prefix.join(PACKAGED_MODEL)).filter(|p| p.is_file())
}

/// Reads a names file: one class per line; blank lines at the end are ignored.
pub fn read_labels(path: &Path) -> Result<Vec<String>, InferError> {
    let text = std::fs::read_to_string(path).map_err(|e| InferError::Labels {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        return Err(InferError::Labels {
            path: path.to_path_buf(),
            reason: format!("line {} is empty", i + 1),
        });
    }
    if labels.is_empty() {
        return Err(InferError::Labels {
            path: path.to_path_buf(),
            reason: "no class names".into(),
        });
    }
    Ok(labels)
}

impl Pipeline {
    pub fn new(cfg: &InferenceConfig) -> Result<Self, InferError> {
        let (model, labels_path) = resolve_paths(cfg)?;
        let opened = session::open(&model, cfg)?;
        let spec = layout::detect(
            &model,
            &opened.inputs,
            &opened.outputs,
            &opened.metadata,
            cfg.input_size.as_usize(),
        )?;
        let labels = match &labels_path {
            Some(p) => {
                let l = read_labels(p)?;
                if l.len() != spec.classes {
                    return Err(InferError::LabelCount {
                        labels: p.clone(),
                        model: model.clone(),
                        count: l.len(),
                        classes: spec.classes,
                    });
                }
                l
            }
            // No labels file: names stored in the model (the generated test model has
            // them), else numbers.
            None => match opened.metadata.get("edge_agent.labels") {
                Some(names) if names.split(',').count() == spec.classes => {
                    names.split(',').map(|n| n.trim().to_string()).collect()
                }
                _ => (0..spec.classes).map(|i| format!("class{i}")).collect(),
            },
        };
        let labels_name = labels_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the model's classes (no labels file)".into());
        let mut per_class = vec![cfg.confidence.get() as f32; spec.classes];
        for (name, th) in &cfg.class_thresholds {
            let Some(i) = labels.iter().position(|l| l == name) else {
                return Err(InferError::UnknownClass {
                    class: name.clone(),
                    labels: labels_name,
                    known: labels.join(", "),
                });
            };
            per_class[i] = th.get() as f32;
        }
        let provider = provider_name(opened.provider);
        let max_batch = match spec.batch {
            BatchDim::Dynamic => cfg.max_batch.as_usize(),
            BatchDim::Fixed(n) => n,
        };
        let format = InputFormat {
            width: spec.width as u32,
            height: spec.height as u32,
            nchw: spec.nchw,
            order: cfg.channel_order,
            scale: cfg.pixel_scale.get() as f32,
            mode: cfg.resize,
        };
        tracing::info!(
            model = %model.display(),
            provider,
            layout = spec.layout.name(),
            input = %format!("{}x{}", spec.width, spec.height),
            classes = spec.classes,
            max_batch,
            cache_key = ?opened.cache_key_in,
            session = ?opened.session_in,
            "Detector ready."
        );
        metrics()
            .provider
            .get_or_create(&vec![("provider", provider.to_string())])
            .set(1);
        Ok(Self {
            session: opened.session,
            spec,
            model,
            labels,
            thresholds: Thresholds::new(per_class),
            nms_iou: cfg.nms_iou.get() as f32,
            pre: Preprocessor::new(format),
            provider,
            max_batch,
            max_frame_pixels: cfg.max_frame_pixels.get() as u64,
            input: Vec::new(),
        })
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    pub fn model_path(&self) -> &Path {
        &self.model
    }
    /// Largest frame JPEG decoded, in pixels (`inference.max_frame_pixels`).
    pub fn max_frame_pixels(&self) -> u64 {
        self.max_frame_pixels
    }
    /// Most frames one session call takes.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Decodes a JPEG frame and detects on it.
    pub fn run_jpeg(&mut self, jpeg: &[u8]) -> Result<Detections, InferError> {
        let t = Instant::now();
        let img = image::decode_jpeg(jpeg)?;
        let decode_ms = ms(t);
        let mut d = self.run_images(&[&img])?.remove(0);
        d.timings.decode_ms = decode_ms;
        d.timings.total_ms += decode_ms;
        Ok(d)
    }

    /// Detects on a packed RGB frame.
    pub fn run_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<Detections, InferError> {
        let img = RgbImage::new(width, height, rgb.to_vec())?;
        Ok(self.run_images(&[&img])?.remove(0))
    }

    /// Detects on several frames, in session calls of at most [`Self::max_batch`].
    pub fn run_images(&mut self, imgs: &[&RgbImage]) -> Result<Vec<Detections>, InferError> {
        let mut all = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(self.max_batch.max(1)) {
            all.extend(self.run_batch(chunk)?);
        }
        Ok(all)
    }

    fn run_batch(&mut self, imgs: &[&RgbImage]) -> Result<Vec<Detections>, InferError> {
        let n = imgs.len();
        let slots = match self.spec.batch {
            BatchDim::Fixed(b) => b,
            BatchDim::Dynamic => n,
        };
        let per = self.pre.format().len();
        let t_pre = Instant::now();
        // Every used slot is overwritten whole by `fill`; only the padding slots of a
        // fixed-batch model need zeros.
        self.input.resize(slots * per, 0.0);
        self.input[n * per..].fill(0.0);
        let mut geos = Vec::with_capacity(n);
        for (i, img) in imgs.iter().enumerate() {
            geos.push(
                self.pre
                    .fill(img, &mut self.input[i * per..(i + 1) * per])?,
            );
        }
        let pre_ms = ms(t_pre) / n as f64;

        let (w, h) = (self.spec.width, self.spec.height);
        let shape = if self.spec.nchw {
            [slots, 3, h, w]
        } else {
            [slots, h, w, 3]
        };
        let t_run = Instant::now();
        let run_err = |e: ort::Error| InferError::Run {
            path: self.model.clone(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view((shape, &self.input[..])).map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input_name.as_str() => tensor])
            .map_err(|e| InferError::Run {
                path: self.model.clone(),
                reason: e.to_string(),
            })?;
        let run_ms = ms(t_run) / n as f64;

        let t_post = Instant::now();
        let mut per_image: Vec<Vec<RawBox>> = vec![Vec::new(); n];
        let extract = |idx: usize| -> Result<&[f32], InferError> {
            let (_, data) =
                outputs[idx]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| InferError::Run {
                        path: self.model.clone(),
                        reason: format!("output {idx}: {e}"),
                    })?;
            if data.len() % slots != 0 {
                return Err(InferError::Run {
                    path: self.model.clone(),
                    reason: format!("output {idx} does not split into {slots} images"),
                });
            }
            Ok(data)
        };
        let classes = self.spec.classes;
        match &self.spec.layout {
            Layout::Pytorch { boxes, confs, .. } => {
                let (b, c) = (extract(*boxes)?, extract(*confs)?);
                let (bl, cl) = (b.len() / slots, c.len() / slots);
                if bl / 4 != cl / classes {
                    return Err(InferError::Run {
                        path: self.model.clone(),
                        reason: format!(
                            "boxes hold {} candidates but confs {}",
                            bl / 4,
                            cl / classes
                        ),
                    });
                }
                for (i, out) in per_image.iter_mut().enumerate() {
                    decode::decode_pytorch(
                        &b[i * bl..(i + 1) * bl],
                        &c[i * cl..(i + 1) * cl],
                        classes,
                        w as f32,
                        h as f32,
                        &self.thresholds,
                        out,
                    );
                }
            }
            Layout::Zoo { heads } => {
                for head in heads {
                    let d = extract(head.output)?;
                    let l = d.len() / slots;
                    for (i, out) in per_image.iter_mut().enumerate() {
                        decode::decode_zoo_head(
                            &d[i * l..(i + 1) * l],
                            head,
                            classes,
                            w as f32,
                            &self.thresholds,
                            out,
                        );
                    }
                }
            }
        }
        drop(outputs);
        let mut results = Vec::with_capacity(n);
        for ((cands, geo), img) in per_image.into_iter().zip(&geos).zip(imgs) {
            let kept = decode::nms(cands, self.nms_iou);
            let items = kept
                .into_iter()
                .map(|c| {
                    let [x1, y1, x2, y2] = geo.to_frame(c.bbox);
                    Detection {
                        class_id: c.class_id,
                        class: self.labels[c.class_id].clone(),
                        score: c.score,
                        x: x1,
                        y: y1,
                        w: x2 - x1,
                        h: y2 - y1,
                    }
                })
                .filter(|d| d.w > 0.0 && d.h > 0.0)
                .collect();
            results.push(Detections {
                items,
                provider: self.provider,
                width: img.width,
                height: img.height,
                regions: 0,
                timings: Timings::default(),
            });
        }
        let post_ms = ms(t_post) / n as f64;
        for r in &mut results {
            r.timings = Timings {
                decode_ms: 0.0,
                preprocess_ms: pre_ms,
                inference_ms: run_ms,
                postprocess_ms: post_ms,
                total_ms: pre_ms + run_ms + post_ms,
                batch: n,
            };
        }
        let m = metrics();
        m.inferences
            .get_or_create(&vec![("provider", self.provider.to_string())])
            .inc_by(n as u64);
        m.stage_latency
            .get_or_create(&stage("inference"))
            .observe(run_ms / 1e3);
        Ok(results)
    }
}
