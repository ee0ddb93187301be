//! `edge-agent detect` on a set of images with a given ONNX Runtime library, and the
//! comparison of two runs: the same model on two runtimes (or two architectures) must
//! give the same boxes, within float noise.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::models::{root, test_model, tiny_random};
use crate::infer::{jpeg_of, scene, textured, BLUE, RED, WHITE};

/// Images with something for each model to find: coloured squares for the test model,
/// a busy picture for the random-weight YOLOv4-tiny (whose boxes are arbitrary but
/// deterministic), in the letterbox's two orientations.
pub fn images(dir: &Path) -> Vec<PathBuf> {
    let pictures = [
        scene(640, 480, &[(300, 200, 64, RED), (80, 60, 48, WHITE)]),
        scene(360, 640, &[(40, 400, 96, BLUE)]),
        textured(416, 416),
        textured(800, 450),
    ];
    pictures
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let p = dir.join(format!("image-{i}.jpg"));
            std::fs::write(&p, jpeg_of(img)).unwrap();
            p
        })
        .collect()
}

/// The two models the runtime comparisons use, as `(model, labels)` config lines.
pub fn models() -> Vec<String> {
    vec![
        format!(
            "model = \"{}\"\nlabels = \"{}\"\n",
            test_model().display(),
            root().join("models/test.names").display()
        ),
        format!(
            "model = \"{}\"\nconfidence = 0.3\n",
            tiny_random("pytorch").display()
        ),
    ]
}

/// A config for `detect` with this model block and ONNX Runtime library, on the CPU.
pub fn config(dir: &Path, name: &str, model: &str, library: &Path) -> PathBuf {
    let conf = dir.join(name);
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"t\"\n[inference]\n{model}providers = [\"cpu\"]\nort_library = \"{}\"\n",
            library.display()
        ),
    )
    .unwrap();
    conf
}

/// Runs `cmd detect --config CONF IMAGES...` and returns one JSON value per image.
pub fn run(mut cmd: Command, conf: &Path, images: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = cmd
        .arg("detect")
        .arg("--config")
        .arg(conf)
        .args(images)
        .output()
        .expect("edge-agent detect runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "detect failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len(), "{stdout}");
    lines
}

/// The same detections in the same order: classes equal, boxes within 0.5 px and
/// scores within 1e-3. Returns how many were compared, so a caller can insist on some.
pub fn assert_same(what: &str, a: &[serde_json::Value], b: &[serde_json::Value]) -> usize {
    let mut n = 0;
    for (la, lb) in a.iter().zip(b) {
        let (da, db) = (
            la["detections"].as_array().unwrap(),
            lb["detections"].as_array().unwrap(),
        );
        assert_eq!(
            da.len(),
            db.len(),
            "{what}: {} detections differ in number:\n{la}\n{lb}",
            la["image"]
        );
        for (x, y) in da.iter().zip(db) {
            assert_eq!(x["class"], y["class"], "{what}:\n{x}\n{y}");
            for k in ["x", "y", "w", "h"] {
                let d = (x[k].as_f64().unwrap() - y[k].as_f64().unwrap()).abs();
                assert!(d <= 0.5, "{what}: {k} differs by {d}:\n{x}\n{y}");
            }
            let d = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs();
            assert!(d <= 1e-3, "{what}: score differs by {d}:\n{x}\n{y}");
            n += 1;
        }
    }
    n
}

/// The ONNX Runtime library `scripts/setup.sh --test` put in `.ort/` for this version
/// and architecture; a missing one fails the test, naming the command that fetches it.
pub fn ort_library(version: &str, arch: &str) -> PathBuf {
    let lib = root().join(format!(
        ".ort/onnxruntime-{version}-{arch}/libonnxruntime.so.{version}"
    ));
    assert!(
        lib.is_file(),
        "{} is missing: run scripts/setup.sh --test",
        lib.display()
    );
    lib
}

/// The library the other tests use (ORT_DYLIB_PATH from scripts/test.sh, else the venv).
pub fn current_library() -> PathBuf {
    edge_agent::infer::session::find_library(None).expect("an ONNX Runtime library")
}
