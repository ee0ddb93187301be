//! Recognises a YOLOv4 ONNX model's layout from its inputs and outputs.
//!
//! Two layouts exist in the wild (see models/README.md): the pytorch-YOLOv4 export
//! (decoded boxes and confidences) and the ONNX model-zoo export (raw heads that need
//! anchors and scale_x_y). Shapes come in as plain `i64` dims, `-1` for dynamic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::InferError;

/// A tensor's name and dims (`-1` = dynamic) as the model declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDecl {
    pub name: String,
    pub dims: Vec<i64>,
}

impl TensorDecl {
    pub fn new(name: &str, dims: &[i64]) -> Self {
        Self {
            name: name.to_string(),
            dims: dims.to_vec(),
        }
    }
}

fn shape_text(dims: &[i64]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", parts.join(","))
}

fn decls_text(decls: &[TensorDecl]) -> String {
    let mut s = String::new();
    for (i, d) in decls.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{} {}", d.name, shape_text(&d.dims));
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// How the batch dimension may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDim {
    Dynamic,
    Fixed(usize),
}

/// One raw head of the model-zoo layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ZooHead {
    /// Index among the session outputs.
    pub output: usize,
    pub grid_h: usize,
    pub grid_w: usize,
    pub stride: f32,
    /// Anchor (w, h) in input pixels, one per anchor slot.
    pub anchors: Vec<(f32, f32)>,
    pub scale_xy: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// `boxes` [N,K,1,4] (x1,y1,x2,y2 as fractions of the input) and `confs` [N,K,C].
    Pytorch {
        boxes: usize,
        confs: usize,
        candidates: usize,
    },
    /// Raw heads [N,G,G,A,5+C], in stride order.
    Zoo { heads: Vec<ZooHead> },
}

impl Layout {
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Pytorch { .. } => "pytorch",
            Layout::Zoo { .. } => "zoo",
        }
    }
}

/// Everything the pipeline needs to know about a model's interface.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub input_name: String,
    /// NCHW when true, NHWC otherwise.
    pub nchw: bool,
    pub width: usize,
    pub height: usize,
    pub batch: BatchDim,
    pub classes: usize,
    pub layout: Layout,
}

/// YOLOv4 anchors (3 heads, strides 8/16/32) and YOLOv4-tiny (2 heads, 16/32).
const V4_ANCHORS: [[(f32, f32); 3]; 3] = [
    [(12., 16.), (19., 36.), (40., 28.)],
    [(36., 75.), (76., 55.), (72., 146.)],
    [(142., 110.), (192., 243.), (459., 401.)],
];
const V4_SCALE_XY: [f32; 3] = [1.2, 1.1, 1.05];
const TINY_ANCHORS: [[(f32, f32); 3]; 2] = [
    [(23., 27.), (37., 58.), (81., 82.)],
    [(81., 82.), (135., 169.), (344., 319.)],
];
const TINY_SCALE_XY: [f32; 2] = [1.05, 1.05];

fn parse_floats(s: &str) -> Option<Vec<f32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<f32>().ok())
        .collect()
}

/// Reads the model's interface. `metadata` holds the custom metadata keys
/// (`yolo.anchors`, `yolo.scale_x_y`); `input_size` is the configured side (0: the
/// model's own), used only where the model's spatial dims are dynamic.
pub fn detect(
    path: &Path,
    inputs: &[TensorDecl],
    outputs: &[TensorDecl],
    metadata: &HashMap<String, String>,
    input_size: usize,
) -> Result<ModelSpec, InferError> {
    let input_err = |expected: &str| InferError::InputShape {
        path: path.to_path_buf(),
        expected: expected.to_string(),
        found: decls_text(inputs),
    };
    const EXPECTED_INPUT: &str = "one float input [N,3,H,W] or [N,H,W,3]";
    let [input] = inputs else {
        return Err(input_err(EXPECTED_INPUT));
    };
    let d = &input.dims;
    if d.len() != 4 {
        return Err(input_err(EXPECTED_INPUT));
    }
    let nchw = if d[1] == 3 {
        true
    } else if d[3] == 3 {
        false
    } else {
        return Err(input_err(EXPECTED_INPUT));
    };
    let (mh, mw) = if nchw { (d[2], d[3]) } else { (d[1], d[2]) };
    let side = |m: i64, what: &str| -> Result<usize, InferError> {
        if m > 0 {
            if input_size != 0 && input_size as i64 != m {
                return Err(InferError::InputShape {
                    path: path.to_path_buf(),
                    expected: format!(
                        "{what} {input_size} (inference.input_size; set it to 0 or {m})"
                    ),
                    found: decls_text(inputs),
                });
            }
            Ok(m as usize)
        } else if input_size > 0 {
            Ok(input_size)
        } else {
            Err(input_err(
                "a fixed input size, or inference.input_size for a model with dynamic H and W",
            ))
        }
    };
    let height = side(mh, "height")?;
    let width = side(mw, "width")?;
    if width % 32 != 0 || height % 32 != 0 {
        return Err(input_err("H and W multiples of 32 (the YOLO stride)"));
    }
    let batch = if d[0] > 0 {
        BatchDim::Fixed(d[0] as usize)
    } else {
        BatchDim::Dynamic
    };

    let unknown = || InferError::UnknownLayout {
        path: path.to_path_buf(),
        found: decls_text(outputs),
    };
    let (classes, layout) = if let Some(l) = pytorch_layout(outputs) {
        l
    } else if let Some(l) = zoo_layout(outputs, metadata, width, height) {
        l.map_err(|reason| InferError::UnknownLayout {
            path: path.to_path_buf(),
            found: format!("{} ({reason})", decls_text(outputs)),
        })?
    } else {
        return Err(unknown());
    };
    Ok(ModelSpec {
        input_name: input.name.clone(),
        nchw,
        width,
        height,
        batch,
        classes,
        layout,
    })
}

fn pytorch_layout(outputs: &[TensorDecl]) -> Option<(usize, Layout)> {
    if outputs.len() != 2 {
        return None;
    }
    let is_boxes = |t: &TensorDecl| t.dims.len() == 4 && t.dims[2] == 1 && t.dims[3] == 4;
    let is_confs = |t: &TensorDecl| t.dims.len() == 3 && t.dims[2] > 0;
    let (b, c) = if is_boxes(&outputs[0]) && is_confs(&outputs[1]) {
        (0, 1)
    } else if is_boxes(&outputs[1]) && is_confs(&outputs[0]) {
        (1, 0)
    } else {
        return None;
    };
    let (kb, kc) = (outputs[b].dims[1], outputs[c].dims[1]);
    if kb > 0 && kc > 0 && kb != kc {
        return None;
    }
    Some((
        outputs[c].dims[2] as usize,
        Layout::Pytorch {
            boxes: b,
            confs: c,
            candidates: kb.max(kc).max(0) as usize,
        },
    ))
}

type ZooResult = Result<(usize, Layout), String>;

fn zoo_layout(
    outputs: &[TensorDecl],
    metadata: &HashMap<String, String>,
    width: usize,
    height: usize,
) -> Option<ZooResult> {
    if !(2..=3).contains(&outputs.len()) || outputs.iter().any(|o| o.dims.len() != 5) {
        return None;
    }
    let per = outputs[0].dims[4];
    if per < 6 || outputs.iter().any(|o| o.dims[4] != per) {
        return None;
    }
    let classes = (per - 5) as usize;
    let n = outputs.len();
    // Order heads by stride (largest grid first); a dynamic grid follows output order.
    let mut order: Vec<usize> = (0..n).collect();
    if outputs.iter().all(|o| o.dims[1] > 0) {
        order.sort_by_key(|&i| std::cmp::Reverse(outputs[i].dims[1]));
    }
    let defaults: (Vec<Vec<(f32, f32)>>, Vec<f32>) = if n == 3 {
        (
            V4_ANCHORS.iter().map(|a| a.to_vec()).collect(),
            V4_SCALE_XY.to_vec(),
        )
    } else {
        (
            TINY_ANCHORS.iter().map(|a| a.to_vec()).collect(),
            TINY_SCALE_XY.to_vec(),
        )
    };
    let anchors_per: Vec<usize> = order
        .iter()
        .map(|&i| outputs[i].dims[3].max(0) as usize)
        .collect();
    let anchors: Vec<Vec<(f32, f32)>> = match metadata.get("yolo.anchors") {
        Some(text) => {
            let Some(v) = parse_floats(text) else {
                return Some(Err(format!(
                    "metadata yolo.anchors {text:?} is not numbers"
                )));
            };
            let total: usize = anchors_per.iter().sum();
            if v.len() != total * 2 {
                return Some(Err(format!(
                    "metadata yolo.anchors has {} numbers, the heads need {}",
                    v.len(),
                    total * 2
                )));
            }
            let mut it = v.chunks_exact(2).map(|p| (p[0], p[1]));
            anchors_per
                .iter()
                .map(|&a| it.by_ref().take(a).collect())
                .collect()
        }
        None => defaults.0,
    };
    let scales: Vec<f32> = match metadata.get("yolo.scale_x_y") {
        Some(text) => match parse_floats(text) {
            Some(v) if v.len() == n => v,
            _ => {
                return Some(Err(format!(
                    "metadata yolo.scale_x_y {text:?} must hold {n} numbers"
                )))
            }
        },
        None => defaults.1,
    };
    let mut heads = Vec::with_capacity(n);
    for (rank, &i) in order.iter().enumerate() {
        let d = &outputs[i].dims;
        let a = &anchors[rank];
        if d[3] > 0 && a.len() != d[3] as usize {
            return Some(Err(format!(
                "head {} has {} anchor slots but {} anchors are known",
                outputs[i].name,
                d[3],
                a.len()
            )));
        }
        let default_stride = [8usize, 16, 32][rank + 3 - n];
        let (gh, gw) = if d[1] > 0 && d[2] > 0 {
            (d[1] as usize, d[2] as usize)
        } else {
            (height / default_stride, width / default_stride)
        };
        if gh == 0 || !height.is_multiple_of(gh) {
            return Some(Err(format!(
                "head {} grid {gh} does not divide the input height {height}",
                outputs[i].name
            )));
        }
        heads.push(ZooHead {
            output: i,
            grid_h: gh,
            grid_w: gw,
            stride: (height / gh) as f32,
            anchors: a.clone(),
            scale_xy: scales[rank],
        });
    }
    Some(Ok((classes, Layout::Zoo { heads })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("m.onnx")
    }

    #[test]
    fn pytorch_layout_is_recognised_in_either_output_order() {
        let inputs = [TensorDecl::new("input", &[-1, 3, 416, 416])];
        for outs in [
            vec![
                TensorDecl::new("boxes", &[-1, 10647, 1, 4]),
                TensorDecl::new("confs", &[-1, 10647, 80]),
            ],
            vec![
                TensorDecl::new("confs", &[1, 10647, 80]),
                TensorDecl::new("boxes", &[1, 10647, 1, 4]),
            ],
        ] {
            let spec = detect(p(), &inputs, &outs, &HashMap::new(), 0).unwrap();
            assert_eq!(spec.classes, 80);
            assert_eq!((spec.width, spec.height, spec.nchw), (416, 416, true));
            assert_eq!(spec.batch, BatchDim::Dynamic);
            assert!(matches!(
                spec.layout,
                Layout::Pytorch {
                    candidates: 10647,
                    ..
                }
            ));
        }
    }

    #[test]
    fn zoo_layout_gets_default_anchors_in_stride_order() {
        let inputs = [TensorDecl::new("input_1:0", &[1, 416, 416, 3])];
        let outs = [
            TensorDecl::new("Identity:0", &[1, 52, 52, 3, 85]),
            TensorDecl::new("Identity_1:0", &[1, 26, 26, 3, 85]),
            TensorDecl::new("Identity_2:0", &[1, 13, 13, 3, 85]),
        ];
        let spec = detect(p(), &inputs, &outs, &HashMap::new(), 0).unwrap();
        assert!(!spec.nchw);
        assert_eq!(spec.batch, BatchDim::Fixed(1));
        let Layout::Zoo { heads } = spec.layout else {
            panic!()
        };
        assert_eq!(heads[0].stride, 8.0);
        assert_eq!(heads[0].anchors[0], (12.0, 16.0));
        assert_eq!(heads[2].stride, 32.0);
        assert_eq!(heads[2].scale_xy, 1.05);
        assert_eq!(heads[2].anchors[2], (459.0, 401.0));
    }

    #[test]
    fn zoo_layout_reads_anchors_from_metadata() {
        let inputs = [TensorDecl::new("x", &[-1, 3, 416, 416])];
        let outs = [
            TensorDecl::new("a", &[-1, 13, 13, 3, 7]),
            TensorDecl::new("b", &[-1, 26, 26, 3, 7]),
        ];
        let meta = HashMap::from([
            (
                "yolo.anchors".to_string(),
                "1,2,3,4,5,6,7,8,9,10,11,12".to_string(),
            ),
            ("yolo.scale_x_y".to_string(), "1.5,1.25".to_string()),
        ]);
        let spec = detect(p(), &inputs, &outs, &meta, 0).unwrap();
        assert_eq!(spec.classes, 2);
        let Layout::Zoo { heads } = spec.layout else {
            panic!()
        };
        // Largest grid (stride 16) first, whatever the output order.
        assert_eq!((heads[0].output, heads[0].stride), (1, 16.0));
        assert_eq!(heads[0].anchors, vec![(1., 2.), (3., 4.), (5., 6.)]);
        assert_eq!(heads[1].scale_xy, 1.25);
    }

    #[test]
    fn bad_interfaces_are_refused_naming_expected_and_found_shapes() {
        let good_in = [TensorDecl::new("input", &[1, 3, 160, 160])];
        let good_out = [
            TensorDecl::new("boxes", &[1, 25, 1, 4]),
            TensorDecl::new("confs", &[1, 25, 3]),
        ];
        let cases: Vec<(Vec<TensorDecl>, Vec<TensorDecl>, usize, &str)> = vec![
            (
                vec![TensorDecl::new("input", &[1, 1, 160, 160])],
                good_out.to_vec(),
                0,
                "wrong input: expected one float input [N,3,H,W] or [N,H,W,3], found input [1,1,160,160]",
            ),
            (
                good_in.to_vec(),
                good_out.to_vec(),
                416,
                "expected height 416 (inference.input_size; set it to 0 or 160), found input [1,3,160,160]",
            ),
            (
                vec![TensorDecl::new("input", &[1, 3, -1, -1])],
                good_out.to_vec(),
                0,
                "expected a fixed input size, or inference.input_size",
            ),
            (
                vec![TensorDecl::new("input", &[1, 3, 100, 100])],
                good_out.to_vec(),
                0,
                "H and W multiples of 32",
            ),
            (
                good_in.to_vec(),
                vec![TensorDecl::new("logits", &[1, 1000])],
                0,
                "unknown output layout. Expected either the pytorch-YOLOv4 layout (outputs boxes [N,K,1,4] and confs [N,K,C]) or the ONNX model-zoo layout (2 or 3 outputs [N,G,G,A,5+C]); found outputs logits [1,1000]",
            ),
            (
                good_in.to_vec(),
                vec![
                    TensorDecl::new("boxes", &[1, 25, 1, 4]),
                    TensorDecl::new("confs", &[1, 24, 3]),
                ],
                0,
                "found outputs boxes [1,25,1,4], confs [1,24,3]",
            ),
        ];
        for (ins, outs, size, want) in cases {
            let err = detect(p(), &ins, &outs, &HashMap::new(), size)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}\n  wanted: {want}");
            assert!(err.contains("m.onnx"), "{err}");
        }
    }

    #[test]
    fn dynamic_spatial_dims_take_the_configured_size() {
        let ins = [TensorDecl::new("input", &[-1, 3, -1, -1])];
        let outs = [
            TensorDecl::new("boxes", &[-1, -1, 1, 4]),
            TensorDecl::new("confs", &[-1, -1, 3]),
        ];
        let spec = detect(p(), &ins, &outs, &HashMap::new(), 320).unwrap();
        assert_eq!((spec.width, spec.height), (320, 320));
    }
}
