//! Crops around motion against the whole frame (`scripts/bench --only crops`): recall of
//! small objects and the worker's time per frame, on 1080p frames of real footage with
//! real objects pasted at known boxes (`scripts/crops_frames.py`, which says how and
//! why the objects are recoloured for the test model).
//!
//! Each frame goes the agent's way (`wire::regions`, `image::encode_rgb` at the
//! default quality 85) and the worker's (`infer::frame_loop::detect`: decode, cut, letterbox,
//! run, boxes to camera pixels), three ways: the whole frame scaled to `detect_width`
//! 640 into a 416 model, the same into a 608 model (about the time crops take), and
//! crops at least 416 around the objects' motion boxes into the 416 model. The motion
//! boxes are the true boxes snapped outwards to the 320-pixel analysis grid plus one
//! analysis pixel (motion detection itself is measured by the `gating` section).
//!
//! Recall comes from the colour test model (models/make_test_model.py), the only
//! detector here that finds anything; an object is found by a `fire` box with IoU >= 0.3
//! against its true box. The worker's time comes from YOLOv4-tiny with random weights
//! at the same input size (the cost of a real network, which random weights do not
//! change) running on the very same payloads. Modes alternate per frame, so all see the
//! same machine load.
//!
//! Env: BENCH_CROPS_FRAMES (48), BENCH_THREADS (2), EDGE_AGENT_REALCAM_DEV.

use std::path::PathBuf;
use std::time::Instant;

use edge_agent::image;
use edge_agent::infer::config::{InferenceConfig, Provider};
use edge_agent::infer::frame_loop::{self, Payload};
use edge_agent::infer::{Detections, Pipeline};
use edge_agent::ingest::downscale_plane;
use edge_agent::values::IntIn;
use edge_agent::wire::regions::{self, Rect};

const SIZES: [u32; 8] = [6, 8, 12, 16, 24, 32, 48, 96];
const DETECT_WIDTH: u32 = 640;
const ANALYSIS_WIDTH: u32 = 320;
const QUALITY: u8 = 85;

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

#[derive(Default)]
struct Tally {
    found: [usize; SIZES.len()],
    total: [usize; SIZES.len()],
    false_boxes: usize,
    runs: usize,
    payload_bytes: usize,
    worker_ms: Vec<f64>,
}

impl Tally {
    fn score(&mut self, d: &Detections, truth: &[[u32; 4]]) {
        let fires: Vec<[f32; 4]> = d
            .items
            .iter()
            .filter(|i| i.class == "fire")
            .map(|i| [i.x, i.y, i.w, i.h])
            .collect();
        let mut used = vec![false; fires.len()];
        for t in truth {
            let tb = [t[0] as f32, t[1] as f32, t[2] as f32, t[3] as f32];
            let k = SIZES.iter().position(|&s| s == t[3]).expect("a known size");
            self.total[k] += 1;
            if let Some(j) = (0..fires.len()).find(|&j| !used[j] && iou(fires[j], tb) >= 0.3) {
                used[j] = true;
                self.found[k] += 1;
            }
        }
        self.false_boxes += used.iter().filter(|u| !**u).count();
    }
}

struct Mode {
    name: &'static str,
    crops: bool,
    recall: Pipeline,
    cost: Pipeline,
    tally: Tally,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let frames = if quick {
        2
    } else {
        env_usize("BENCH_CROPS_FRAMES", 48)
    };
    let data = std::env::var("EDGE_AGENT_REALCAM_DEV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("tests/data/realcam"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let made = py(&[
        "scripts/crops_frames.py",
        out,
        "--frames",
        &frames.to_string(),
        "--data",
        data.to_str().unwrap(),
    ]);
    eprintln!("frames: {}", made.trim());
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("truth.json")).unwrap()).unwrap();

    let colour = |size: &str| {
        let name = format!("test-yolov4-{size}.onnx");
        pipeline(
            model(&["models/make_test_model.py", "--size", size], &name),
            "models/test.names",
        )
    };
    let (tiny_cfg, tiny_size) = if quick {
        ("models/cfg/yolov4-tiny.cfg", ["160", "160"])
    } else {
        ("models/cfg/yolov4-tiny.cfg", ["416", "608"])
    };
    let tiny = |size: &str| {
        let name = format!("yolov4-tiny-random-{size}.onnx");
        pipeline(
            model(
                &[
                    "models/darknet2onnx.py",
                    tiny_cfg,
                    "--random-weights",
                    "--size",
                    size,
                ],
                &name,
            ),
            "models/coco.names",
        )
    };
    let (small, large) = (tiny_size[0], tiny_size[1]);
    let mut modes = vec![
        Mode {
            name: "whole frame (640 wide)",
            crops: false,
            recall: colour(small),
            cost: tiny(small),
            tally: Tally::default(),
        },
        Mode {
            name: "whole frame (640 wide)",
            crops: false,
            recall: colour(large),
            cost: tiny(large),
            tally: Tally::default(),
        },
        Mode {
            name: "crops around motion",
            crops: true,
            recall: colour(small),
            cost: tiny(small),
            tally: Tally::default(),
        },
    ];
    let inputs = [small, large, small];

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
        let (dw, dh) = edge_agent::ingest::scaled_size(w, h, DETECT_WIDTH);
        let small_frame = downscale_rgb(&rgb, w, h, dw, dh);
        for m in &mut modes {
            let (jpeg_bytes, payload) = if m.crops {
                let motion: Vec<[f32; 4]> = boxes.iter().map(|b| motion_box(*b, w, h)).collect();
                let squares: Vec<Rect> =
                    regions::squares(&motion, w, h, small.parse::<u32>().unwrap());
                let cut: Vec<Vec<u8>> = squares
                    .iter()
                    .map(|r| regions::cut_rgb(&rgb, w, r))
                    .collect();
                let crops: Vec<(Rect, &[u8])> = squares
                    .iter()
                    .zip(&cut)
                    .map(|(r, c)| (*r, &c[..]))
                    .collect();
                let (regs, pic, (pw, ph)) = regions::compose(&small_frame, (dw, dh), &crops);
                let payload = Payload {
                    whole: (dw, dh),
                    source: (w, h),
                    regions: regs,
                };
                (image::encode_rgb(&pic, pw, ph, QUALITY).unwrap(), payload)
            } else {
                let payload = Payload {
                    whole: (dw, dh),
                    source: (w, h),
                    regions: Vec::new(),
                };
                (
                    image::encode_rgb(&small_frame, dw, dh, QUALITY).unwrap(),
                    payload,
                )
            };
            let d = frame_loop::detect(&mut m.recall, &jpeg_bytes, &payload).unwrap();
            m.tally.score(&d, &boxes);
            m.tally.runs += payload.regions.len().max(1);
            m.tally.payload_bytes += jpeg_bytes.len();
            let t = Instant::now();
            frame_loop::detect(&mut m.cost, &jpeg_bytes, &payload).unwrap();
            m.tally.worker_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    let n = truth["frames"].as_array().unwrap().len() as f64;
    println!(
        "{} frames of 1920x1080 (real backgrounds, real object silhouettes pasted; 1 or 2 objects a",
        n
    );
    println!("frame, {} object sizes in turn). Recall by object height in camera pixels, with the colour", SIZES.len());
    println!("test model; worker time per frame (JPEG decode, cut, letterbox, inference, NMS) with YOLOv4-tiny");
    println!(
        "(random weights, CPU, {} threads) on the same payloads, median.",
        env_usize("BENCH_THREADS", 2)
    );
    println!();
    let sizes: Vec<String> = SIZES.iter().map(|s| format!("{s} px")).collect();
    println!(
        "| detector sees | model input | model runs / frame | payload KB | worker ms / frame | {} | all | false boxes |",
        sizes.join(" | ")
    );
    println!(
        "|---|---|---|---|---|{}---|---|",
        "---|".repeat(SIZES.len())
    );
    let mut whole_ms = 0.0;
    let mut summary = Vec::new();
    for (m, input) in modes.iter_mut().zip(inputs) {
        let t = &mut m.tally;
        t.worker_ms.sort_by(f64::total_cmp);
        let med = t.worker_ms[t.worker_ms.len() / 2];
        if whole_ms == 0.0 {
            whole_ms = med;
        }
        let per: Vec<String> = (0..SIZES.len())
            .map(|k| format!("{}/{}", t.found[k], t.total[k]))
            .collect();
        let (f, a): (usize, usize) = (t.found.iter().sum(), t.total.iter().sum());
        // Objects up to 16 px high: under a pixel or two once the whole frame reaches the
        // model, the ones crops are for.
        let small = SIZES.iter().take_while(|&&s| s <= 16).count();
        let (sf, sa): (usize, usize) =
            (t.found[..small].iter().sum(), t.total[..small].iter().sum());
        summary.push(format!(
            "{} into {input}: recall {:.2} of objects up to 16 px, {:.2} of all, at {:.2}x the worker time of the whole frame into {}",
            m.name,
            sf as f64 / sa.max(1) as f64,
            f as f64 / a.max(1) as f64,
            med / whole_ms,
            inputs[0]
        ));
        println!(
            "| {} | {input} | {:.2} | {:.0} | {med:.1} ({:.2}x) | {} | {:.2} | {} |",
            m.name,
            t.runs as f64 / n,
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
