//! `edge-agent detect --config FILE IMAGE...`: the worker's pipeline on image files,
//! one JSON line per image on stdout, so a model can be checked before deployment.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::image;
use super::pipeline::{Detection, Pipeline, Timings};
use crate::config::Config;

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
