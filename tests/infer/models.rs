//! The models: the generated test model and zoo layouts decode to the right boxes, the
//! detections match the Python reference (scripts/infer_ref.py), bad models and labels
//! are clear errors, the library is found, and `edge-agent detect` prints them.

use super::*;

#[test]
fn test_model_finds_coloured_squares_through_letterbox_on_either_axis() {
    let mut p = Pipeline::new(&cfg(&test_model(), Some("models/test.names"))).unwrap();
    // Landscape 320x240 -> 160x120 + 20 px bars above and below.
    let img = scene(320, 240, &[(100, 60, 40, RED), (200, 150, 60, WHITE)]);
    let d = p.run_rgb(&img.data, 320, 240).unwrap();
    assert_eq!(d.items.len(), 2, "{:?}", d.items);
    let fire = d.items.iter().find(|d| d.class == "fire").unwrap();
    assert_box(fire, "fire", [100.0, 60.0, 40.0, 40.0], 0.01);
    assert!((fire.score - 0.958).abs() < 0.01, "{fire:?}");
    let person = d.items.iter().find(|d| d.class == "person").unwrap();
    assert_box(person, "person", [200.0, 150.0, 60.0, 60.0], 0.01);
    // Portrait 240x320: bars left and right.
    let img = scene(240, 320, &[(40, 200, 40, BLUE)]);
    let d = p.run_rgb(&img.data, 240, 320).unwrap();
    assert_eq!(d.items.len(), 1, "{:?}", d.items);
    assert_box(&d.items[0], "knife", [40.0, 200.0, 40.0, 40.0], 0.01);
    assert_eq!(d.provider, "cpu");
}

#[test]
fn zoo_layout_model_decodes_to_the_cells_holding_the_square() {
    let mut p = Pipeline::new(&cfg(&test_model_zoo(), Some("models/test.names"))).unwrap();
    // 160x160 frame, square exactly on cell (2, 1) of the stride-32 head.
    let img = scene(160, 160, &[(64, 32, 32, RED)]);
    let d = p.run_rgb(&img.data, 160, 160).unwrap();
    // Three anchors give three identical boxes; NMS keeps one.
    assert_eq!(d.items.len(), 1, "{:?}", d.items);
    assert_box(&d.items[0], "fire", [64.0, 32.0, 32.0, 32.0], 0.01);
}

// ---------------------------------------------------------------- differential

fn write_ppm(img: &RgbImage, path: &Path) {
    let mut bytes = format!("P6\n{} {}\n255\n", img.width, img.height).into_bytes();
    bytes.extend_from_slice(&img.data);
    std::fs::write(path, bytes).unwrap();
}

/// A busy deterministic picture: gradients, stripes and coloured squares.
pub(crate) fn textured(w: u32, h: u32) -> RgbImage {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let r = ((x * 255) / w) as u8;
            let g = ((y * 255) / h) as u8;
            let b = if (x / 24 + y / 16) % 3 == 0 { 220 } else { 30 };
            data.extend([r, g, b]);
        }
    }
    let mut img = RgbImage::new(w, h, data).unwrap();
    for (i, c) in [RED, WHITE, BLUE].iter().enumerate() {
        let s = (w.min(h) / 6).max(8);
        let x0 = (i as u32 * w / 3 + 10).min(w - s);
        for y in h / 3..(h / 3 + s) {
            for x in x0..x0 + s {
                let p = ((y * w + x) * 3) as usize;
                img.data[p..p + 3].copy_from_slice(c);
            }
        }
    }
    img
}

#[derive(serde::Deserialize, Debug)]
struct RefLine {
    detections: Vec<RefDet>,
}
#[derive(serde::Deserialize, Debug)]
struct RefDet {
    class_id: usize,
    score: f32,
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

fn compare(what: &str, rust: &[Detection], py: &[RefDet]) {
    assert_eq!(
        rust.len(),
        py.len(),
        "{what}: {} Rust detections vs {} Python\nrust {rust:?}\npython {py:?}",
        rust.len(),
        py.len()
    );
    let mut unused: Vec<&RefDet> = py.iter().collect();
    for r in rust {
        let pos = unused.iter().position(|p| {
            p.class_id == r.class_id
                && (p.score - r.score).abs() <= 1e-3
                && (p.x - r.x).abs() <= 1.0
                && (p.y - r.y).abs() <= 1.0
                && (p.w - r.w).abs() <= 1.0
                && (p.h - r.h).abs() <= 1.0
        });
        match pos {
            Some(i) => {
                unused.remove(i);
            }
            None => panic!("{what}: Rust detection {r:?} has no Python match within 1 px and 1e-3\npython {py:?}"),
        }
    }
}

/// Options passed to both sides of a differential run.
#[derive(Clone, Copy)]
struct Opts {
    bgr: bool,
    stretch: bool,
}
const PLAIN: Opts = Opts {
    bgr: false,
    stretch: false,
};

fn differential(model: &Path, labels: Option<&str>, images: &[RgbImage], o: Opts) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(model, labels);
    c.confidence = Fraction::new(0.3).unwrap();
    // One per-class threshold, so that both sides apply them.
    let coco = labels == Some("models/coco.names");
    c.class_thresholds.insert(
        if coco { "person" } else { "knife" }.into(),
        Fraction::new(0.5).unwrap(),
    );
    if o.bgr {
        c.channel_order = ChannelOrder::Bgr;
    }
    if o.stretch {
        c.resize = ResizeMode::Stretch;
    }
    let mut p = Pipeline::new(&c).unwrap();
    let mut args: Vec<String> = vec![
        "scripts/infer_ref.py".into(),
        "--model".into(),
        model.display().to_string(),
        "--confidence".into(),
        "0.3".into(),
        "--class-threshold".into(),
        if coco { "0=0.5" } else { "2=0.5" }.into(),
        "--threads".into(),
        "2".into(),
        "--resize-impl".into(),
        "numpy".into(),
        "--channel-order".into(),
        if o.bgr { "bgr" } else { "rgb" }.into(),
        "--resize".into(),
        if o.stretch { "stretch" } else { "letterbox" }.into(),
    ];
    let mut rust = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let path = dir.path().join(format!("img{i}.ppm"));
        write_ppm(img, &path);
        args.push(path.display().to_string());
        rust.push(p.run_rgb(&img.data, img.width, img.height).unwrap());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python(&argv);
    let lines: Vec<RefLine> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len());
    let mut n = 0;
    for (i, (r, py)) in rust.iter().zip(&lines).enumerate() {
        let what = format!(
            "{} image {i} ({}x{})",
            model.display(),
            images[i].width,
            images[i].height
        );
        compare(&what, &r.items, &py.detections);
        n += r.items.len();
    }
    n
}

#[test]
fn detections_match_the_python_reference_for_both_layouts_and_real_architectures() {
    // Frames that need no resize (the letterbox only pads, on one axis or the other), so
    // both sides see identical pixels; the random-weight YOLOv4-tiny gives many boxes
    // of many classes, which exercises thresholds and NMS.
    let small = [
        scene(160, 96, &[(20, 20, 30, RED), (100, 40, 40, WHITE)]),
        scene(96, 160, &[(10, 100, 40, BLUE), (50, 10, 30, RED)]),
        textured(160, 128),
    ];
    let n1 = differential(&test_model(), Some("models/test.names"), &small, PLAIN);
    let n2 = differential(&test_model_zoo(), Some("models/test.names"), &small, PLAIN);
    let big = [textured(416, 256), textured(256, 416)];
    let n3 = differential(
        &tiny_random("pytorch"),
        Some("models/coco.names"),
        &big,
        PLAIN,
    );
    let n4 = differential(&tiny_random("zoo"), Some("models/coco.names"), &big, PLAIN);
    eprintln!("detections compared: test {n1}, test zoo {n2}, tiny {n3}, tiny zoo {n4}");
    assert!(
        n1 >= 4 && n2 >= 4,
        "the test model found too little: {n1}, {n2}"
    );
    assert!(
        n3 >= 5 && n4 >= 5,
        "the random model found too little: {n3}, {n4}"
    );
}

#[test]
fn detections_match_the_python_reference_on_resized_frames_in_every_mode() {
    // Frames that need a 2x downscale: fast_image_resize's bilinear against the
    // reference's numpy bilinear, same pixel-centre convention; letterbox and stretch,
    // RGB and BGR (BGR turns the red square into a blue one: fire becomes knife).
    let frames = [
        scene(320, 200, &[(40, 40, 60, RED), (200, 80, 64, WHITE)]),
        scene(200, 320, &[(20, 200, 64, BLUE)]),
    ];
    for (bgr, stretch) in [(false, false), (true, false), (false, true), (true, true)] {
        let o = Opts { bgr, stretch };
        let n = differential(&test_model(), Some("models/test.names"), &frames, o);
        assert!(n >= 3, "bgr {bgr} stretch {stretch}: {n}");
    }
}

#[test]
fn channel_order_bgr_swaps_what_the_model_sees() {
    let mut c = cfg(&test_model(), Some("models/test.names"));
    c.channel_order = ChannelOrder::Bgr;
    let mut p = Pipeline::new(&c).unwrap();
    let img = scene(160, 160, &[(64, 32, 32, RED)]);
    let d = p.run_rgb(&img.data, 160, 160).unwrap();
    assert_eq!(d.items.len(), 1);
    assert_box(&d.items[0], "knife", [64.0, 32.0, 32.0, 32.0], 0.01);
}

// ---------------------------------------------------------------- bad inputs

fn err_of(c: &InferenceConfig) -> String {
    match Pipeline::new(c) {
        Ok(_) => panic!("pipeline started on {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_and_labels_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not a protobuf \x00\x01\x02 at all").unwrap();
    let e = err_of(&cfg(&corrupt, None));
    assert!(
        e.contains("corrupt.onnx") && e.contains("could not be loaded"),
        "{e}"
    );

    let missing = dir.path().join("missing.onnx");
    let e = err_of(&cfg(&missing, None));
    assert!(
        e.contains("model file") && e.contains("missing.onnx") && e.contains("not found"),
        "{e}"
    );

    let bad_input = dir.path().join("bad-input.onnx");
    run_python(&[
        "models/make_test_model.py",
        "--variant",
        "bad-input",
        "-o",
        bad_input.to_str().unwrap(),
    ]);
    let e = err_of(&cfg(&bad_input, None));
    assert!(
        e.contains("wrong input: expected one float input [N,3,H,W] or [N,H,W,3], found input [1,1,160,160]"),
        "{e}"
    );

    let unknown = dir.path().join("unknown.onnx");
    run_python(&[
        "models/make_test_model.py",
        "--variant",
        "unknown-layout",
        "-o",
        unknown.to_str().unwrap(),
    ]);
    let e = err_of(&cfg(&unknown, None));
    assert!(
        e.contains("unknown output layout") && e.contains("found outputs logits [1,3]"),
        "{e}"
    );
    assert!(e.contains("boxes [N,K,1,4] and confs [N,K,C]"), "{e}");

    let e = err_of(&cfg(&test_model(), Some("models/coco.names")));
    assert!(
        e.contains("coco.names has 80 classes but model") && e.contains("outputs 3"),
        "{e}"
    );

    let mut c = cfg(&test_model(), Some("models/test.names"));
    c.class_thresholds
        .insert("gun".into(), Fraction::new(0.5).unwrap());
    let e = err_of(&c);
    assert!(
        e.contains("\"gun\"") && e.contains("fire, person, knife"),
        "{e}"
    );

    let mut c = cfg(&test_model(), Some("models/test.names"));
    c.input_size = IntIn::new(416).unwrap();
    let e = err_of(&c);
    assert!(
        e.contains("inference.input_size") && e.contains("160"),
        "{e}"
    );
}

#[test]
fn ort_library_is_found_past_a_missing_configured_path() {
    // The configured path is missing; ORT_DYLIB_PATH or the project's virtualenv (next
    // to the test binary's target dir or the repository) still finds the library, as
    // the other tests here rely on. When nothing is found, the error lists every place.
    match edge_agent::infer::session::find_library(Some(Path::new(
        "/nonexistent/libonnxruntime.so",
    ))) {
        Ok(p) => assert!(p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("libonnxruntime")),
        Err(InferError::OrtNotFound { searched }) => {
            assert!(
                searched[0].contains("/nonexistent/libonnxruntime.so"),
                "{searched:?}"
            );
            assert!(
                searched.iter().any(|s| s.contains(".venv/lib/python3*")),
                "{searched:?}"
            );
            panic!("no ONNX Runtime library on this machine: {searched:?}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn detect_command_prints_one_json_line_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scene.jpg");
    std::fs::write(&img, jpeg_of(&scene(640, 480, &[(300, 200, 64, RED)]))).unwrap();
    let junk = dir.path().join("junk.jpg");
    std::fs::write(&junk, b"GIF89a not a jpeg").unwrap();
    let conf = dir.path().join("agent.toml");
    let toml = format!(
        "[device]\nid = \"t\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\nproviders = [\"cpu\"]\n",
        test_model().display(),
        root().join("models/test.names").display()
    );
    std::fs::write(&conf, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["detect", "--config"])
        .arg(&conf)
        .arg(&img)
        .arg(&junk)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let d = &lines[0];
    assert_eq!(d["provider"], "cpu");
    assert_eq!(d["width"], 640);
    let det = &d["detections"][0];
    assert_eq!(det["class"], "fire");
    for (k, want) in [("x", 300.0), ("y", 200.0), ("w", 64.0), ("h", 64.0)] {
        assert!((det[k].as_f64().unwrap() - want).abs() <= 1.0, "{d}");
    }
    // The stages are measured separately and add up to the total (as README says);
    // a stage left out of the total, or counted twice, breaks the sum.
    let t = &d["timings"];
    let stages: Vec<f64> = [
        "decode_ms",
        "preprocess_ms",
        "inference_ms",
        "postprocess_ms",
    ]
    .iter()
    .map(|s| t[s].as_f64().unwrap_or_else(|| panic!("no {s} in {d}")))
    .collect();
    assert!(stages.iter().all(|v| *v >= 0.0), "{d}");
    assert!(stages[2] > 0.0, "inference took no time: {d}");
    let total = t["total_ms"].as_f64().unwrap();
    let sum: f64 = stages.iter().sum();
    assert!(
        (sum - total).abs() <= 0.01 + 1e-6 * total,
        "stages sum to {sum} ms, total {total} ms: {d}"
    );
    let err = lines[1]["error"].as_str().unwrap();
    assert!(err.contains("not a decodable image"), "{stdout}");
}
