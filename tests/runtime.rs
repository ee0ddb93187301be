//! ONNX Runtime versions: the build accepts 1.17 and up (JetPack 5 and 6 boxes have
//! 1.17 to 1.25), gives the same detections on the oldest PyPI library (1.19.2) as on
//! the current one, and refuses an older library with its version and the floor.

use std::path::Path;
use std::process::Command;

use crate::common::detect;

fn edge_agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
}

/// `detect` on one image that must fail to start the detector (exit 1, no panic); its
/// stderr and stdout.
fn detect_fails(conf: &Path, image: &Path) -> (String, Vec<u8>) {
    let out = edge_agent()
        .args(["detect", "--config"])
        .arg(conf)
        .arg(image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stderr, out.stdout)
}

#[test]
fn detect_gives_the_same_detections_on_onnx_runtime_1_19_and_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let images = detect::images(dir.path());
    let old = detect::ort_library("1.19.2", "x86_64");
    let new = detect::current_library();
    let mut compared = 0;
    for (i, model) in detect::models().iter().enumerate() {
        let a = detect::run(
            edge_agent(),
            &detect::config(dir.path(), &format!("old-{i}.toml"), model, &old),
            &images,
        );
        let b = detect::run(
            edge_agent(),
            &detect::config(dir.path(), &format!("new-{i}.toml"), model, &new),
            &images,
        );
        compared += detect::assert_same(&format!("model {i}, 1.19.2 vs current"), &a, &b);
    }
    // The comparison means something only if both models found things.
    assert!(compared >= 4, "only {compared} detections compared");
}

/// A stand-in for an ONNX Runtime older than the floor (no PyPI wheel before 1.19
/// ships the C library): it exports only `OrtGetApiBase`, reporting 1.16.3.
fn old_library(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("old_ort.c");
    std::fs::write(
        &src,
        r#"typedef struct {
    const void *(*GetApi)(unsigned version);
    const char *(*GetVersionString)(void);
} OrtApiBase;
static const void *get_api(unsigned version) { (void)version; return 0; }
static const char *version(void) { return "1.16.3"; }
static const OrtApiBase base = { get_api, version };
const OrtApiBase *OrtGetApiBase(void) { return &base; }
"#,
    )
    .unwrap();
    let lib = dir.join("libonnxruntime.so.1.16.3");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

#[test]
fn a_library_older_than_1_17_is_refused_naming_its_version_and_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let lib = old_library(dir.path());
    let images = detect::images(dir.path());
    let conf = detect::config(dir.path(), "old.toml", &detect::models()[0], &lib);
    let (stderr, _) = detect_fails(&conf, &images[0]);
    assert!(
        stderr.contains(&format!(
            "ONNX Runtime library {} is version 1.16.3; edge-agent needs 1.17 or newer",
            lib.display()
        )),
        "{stderr}"
    );
}

#[test]
fn require_gpu_refuses_to_fall_back_to_the_cpu_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let images = detect::images(dir.path());
    // Holds with or without a GPU: with `require_gpu` the CPU in the list is never
    // used. A machine whose ONNX Runtime can run CUDA detects on it; one that cannot
    // (this CPU build, a Jetson without its GPU libraries) refuses and says why.
    let model = format!("{}require_gpu = true\n", detect::models()[0]);
    let conf = dir.path().join("gpu.toml");
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"t\"\n[inference]\n{model}providers = [\"cuda\", \"cpu\"]\nort_library = \"{}\"\n",
            detect::current_library().display()
        ),
    )
    .unwrap();
    let out = edge_agent()
        .args(["detect", "--config"])
        .arg(&conf)
        .arg(&images[0])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    if out.status.success() {
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            !lines.is_empty(),
            "a success without a result line: {stderr}"
        );
        for l in &lines {
            assert_eq!(l["provider"], "cuda", "require_gpu ran on {l}");
        }
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "inference.require_gpu is set and no GPU execution provider could run model"
            ) && stderr.contains("cuda: ")
                && stderr.contains("cpu: not tried (inference.require_gpu = true)"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "detections from a refused run");
    }
}

/// `edge-agent prepare` with `providers` as given; (exit code, its JSON line).
fn prepare(dir: &Path, providers: &str) -> (Option<i32>, serde_json::Value) {
    let conf = dir.join(format!("prepare-{}.toml", providers.len()));
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"t\"\n[inference]\n{}providers = {providers}\nort_library = \"{}\"\nengine_cache = \"{}\"\n",
            detect::models()[0],
            detect::current_library().display(),
            dir.join("engines").display()
        ),
    )
    .unwrap();
    let out = edge_agent()
        .args(["prepare", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), line)
}

#[test]
fn prepare_reports_nothing_to_do_without_tensorrt_and_fails_clearly_when_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let (code, line) = prepare(dir.path(), r#"["cpu"]"#);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["prepared"], false, "{line}");
    assert_eq!(line["reason"], "tensorrt is not in inference.providers");
    // This machine's ONNX Runtime has no TensorRT: prepare says so and fails, and
    // leaves no half-built cache behind.
    let (code, line) = prepare(dir.path(), r#"["tensorrt", "cpu"]"#);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(line["prepared"], false, "{line}");
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("no execution provider could run model") && reason.contains("tensorrt: "),
        "{reason}"
    );
    assert!(!dir.path().join("engines").exists());
}

#[test]
fn a_cpu_session_saves_its_optimised_model_once_and_the_next_one_loads_it_with_the_same_detections()
{
    let dir = tempfile::tempdir().unwrap();
    let images = detect::images(dir.path());
    let cache = dir.path().join("engines");
    let model = format!(
        "{}engine_cache = \"{}\"\n",
        detect::models()[1],
        cache.display()
    );
    let conf = detect::config(
        dir.path(),
        "cached.toml",
        &model,
        &detect::current_library(),
    );
    let first = detect::run(edge_agent(), &conf, &images);
    // One directory per model content, runtime and CPU, holding the optimised graph.
    let saved: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "optimized.onnx"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let key = saved[0].parent().unwrap().to_string_lossy().to_string();
    assert!(key.contains("yolov4-tiny-random-pytorch-"), "{key}");
    assert!(key.contains("-cpu-"), "{key}");
    let stamp = std::fs::metadata(&saved[0]).unwrap().modified().unwrap();
    let second = detect::run(edge_agent(), &conf, &images);
    assert_eq!(
        std::fs::metadata(&saved[0]).unwrap().modified().unwrap(),
        stamp,
        "the cached model was written again instead of loaded"
    );
    assert!(detect::assert_same("optimised model from the cache", &first, &second) >= 2);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_models_image_input_is_read_from_the_onnx_file_for_tensorrts_profile() {
    use edge_agent::infer::model_input;
    let input = model_input::read(&crate::common::models::test_model()).unwrap();
    assert_eq!(input.name, "input");
    assert_eq!(input.dims, vec![None, Some(3), Some(160), Some(160)]);
    let tiny = model_input::read(&crate::common::models::tiny_random("pytorch")).unwrap();
    assert_eq!(
        tiny.profile(4, 0).unwrap(),
        (
            "input:1x3x416x416".to_string(),
            "input:4x3x416x416".to_string(),
            "input:4x3x416x416".to_string()
        )
    );
    assert_eq!(
        model_input::read(std::path::Path::new("/nonexistent.onnx")),
        None
    );
}
