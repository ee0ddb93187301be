//! `edge-agent detect --config FILE IMAGE...`: the worker's pipeline on image files,
//! one JSON line per image on stdout, so a model can be checked before deployment.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::image;
use crate::infer::config::{InferenceConfig, Provider};
use crate::infer::pipeline::Pipeline;
use crate::wire::detections::{Detection, Timings};

#[derive(Serialize)]
struct Line<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    provider: &'a str,
    detections: &'a [Detection],
    timings: &'a Timings,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    image: &'a Path,
    error: String,
}

/// Exit codes: 0 all images done, 1 the detector could not start, 2 some image failed.
pub fn detect_command(cfg: &Config, images: &[PathBuf]) -> i32 {
    // The worker's heap, so that a model loads here as in a worker.
    crate::memory::worker_heap();
    let mut pipeline = match Pipeline::new(&cfg.inference) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edge-agent detect: {e}");
            return 1;
        }
    };
    let mut code = 0;
    for path in images {
        match detect_one(&mut pipeline, path) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                code = 2;
                let line = ErrorLine { image: path, error };
                println!(
                    "{}",
                    serde_json::to_string(&line)
                        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
                );
            }
        }
    }
    code
}

/// `edge-agent prepare`: opens the model on TensorRT alone (under the engine cache's
/// lock, so a worker starting meanwhile waits and then loads the result) and runs one
/// frame, which builds the engine where the model's input shape is dynamic.
/// Exit codes: 0 prepared or nothing to prepare (TensorRT not configured), 1 TensorRT
/// could not build the engine.
pub fn prepare_command(cfg: &InferenceConfig) -> i32 {
    let say = |v: serde_json::Value| println!("{v}");
    if !cfg.providers.contains(&Provider::Tensorrt) {
        say(
            serde_json::json!({ "prepared": false, "reason": "tensorrt is not in inference.providers" }),
        );
        return 0;
    }
    let only_trt = InferenceConfig {
        providers: vec![Provider::Tensorrt],
        require_gpu: false,
        ..cfg.clone()
    };
    let t = Instant::now();
    let result = Pipeline::new(&only_trt).and_then(|mut p| {
        let spec = p.spec();
        let (w, h) = (spec.width as u32, spec.height as u32);
        let grey = image::RgbImage::new(w, h, vec![114; (w * h * 3) as usize])?;
        p.run_images(&[&grey])?;
        Ok(())
    });
    match result {
        Ok(()) => {
            say(
                serde_json::json!({ "prepared": true, "provider": "tensorrt",
                "seconds": t.elapsed().as_secs_f64() }),
            );
            0
        }
        Err(e) => {
            say(serde_json::json!({ "prepared": false, "reason": e.to_string() }));
            1
        }
    }
}

fn detect_one(p: &mut Pipeline, path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = Instant::now();
    let img = image::decode_any(&bytes).map_err(|e| e.to_string())?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut d = p.run_images(&[&img]).map_err(|e| e.to_string())?.remove(0);
    d.timings.decode_ms = decode_ms;
    d.timings.total_ms += decode_ms;
    serde_json::to_string(&Line {
        image: path,
        width: d.width,
        height: d.height,
        provider: d.provider,
        detections: &d.items,
        timings: &d.timings,
    })
    .map_err(|e| e.to_string())
}
