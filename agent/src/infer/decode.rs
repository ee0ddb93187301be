//! Model outputs → candidate boxes (per layout) → class-aware NMS. Boxes here are in
//! model-input pixels as (x1, y1, x2, y2); [`super::preprocess::Geometry`] maps them
//! back to the frame.

use super::layout::ZooHead;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawBox {
    pub class_id: usize,
    pub score: f32,
    /// x1, y1, x2, y2 in input pixels.
    pub bbox: [f32; 4],
}

/// Score thresholds per class id, and their minimum (a cheap first test).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub per_class: Vec<f32>,
    pub min: f32,
}

impl Thresholds {
    pub fn new(per_class: Vec<f32>) -> Self {
        let min = per_class.iter().copied().fold(f32::INFINITY, f32::min);
        Self { per_class, min }
    }
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// Maximum of a slice, in 8 independent lanes so that the compiler vectorises it;
/// most candidates are far below threshold and are skipped on this alone.
fn max_f32(v: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(rest) {
        if x > m {
            m = x;
        }
    }
    m
}

/// pytorch-YOLOv4 layout, one image: `boxes` [K,1,4] as fractions of the input,
/// `confs` [K,C]. The class of a box is its best class.
pub fn decode_pytorch(
    boxes: &[f32],
    confs: &[f32],
    classes: usize,
    input_w: f32,
    input_h: f32,
    th: &Thresholds,
    out: &mut Vec<RawBox>,
) {
    for (b, c) in boxes.chunks_exact(4).zip(confs.chunks_exact(classes)) {
        if max_f32(c) < th.min {
            continue;
        }
        let (class_id, score) = argmax(c);
        if score < th.min || score < th.per_class[class_id] {
            continue;
        }
        out.push(RawBox {
            class_id,
            score,
            bbox: [
                b[0] * input_w,
                b[1] * input_h,
                b[2] * input_w,
                b[3] * input_h,
            ],
        });
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One model-zoo head, one image: [G,G,A,5+C] with raw x, y, w, h and objectness and
/// class probabilities as probabilities. Score = objectness × best class probability.
pub fn decode_zoo_head(
    data: &[f32],
    head: &ZooHead,
    classes: usize,
    input_w: f32,
    th: &Thresholds,
    out: &mut Vec<RawBox>,
) {
    let per = 5 + classes;
    let a_n = head.anchors.len();
    let s = head.scale_xy;
    let stride_y = head.stride;
    let stride_x = input_w / head.grid_w as f32;
    for (slot, v) in data.chunks_exact(per).enumerate() {
        let obj = v[4];
        if obj < th.min {
            continue;
        }
        if obj * max_f32(&v[5..]) < th.min {
            continue;
        }
        let (class_id, prob) = argmax(&v[5..]);
        let score = obj * prob;
        if score < th.min || score < th.per_class[class_id] {
            continue;
        }
        let a = slot % a_n;
        let cell = slot / a_n;
        let gx = (cell % head.grid_w) as f32;
        let gy = (cell / head.grid_w) as f32;
        let cx = (sigmoid(v[0]) * s - 0.5 * (s - 1.0) + gx) * stride_x;
        let cy = (sigmoid(v[1]) * s - 0.5 * (s - 1.0) + gy) * stride_y;
        let (aw, ah) = head.anchors[a];
        let w = v[2].exp() * aw;
        let h = v[3].exp() * ah;
        out.push(RawBox {
            class_id,
            score,
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
        });
    }
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy class-aware NMS: boxes of one class suppress each other when their IoU is
/// above `iou_threshold`; boxes of different classes never do. Highest score first,
/// ties in input order. Returns the kept boxes, best first.
pub fn nms(mut cands: Vec<RawBox>, iou_threshold: f32) -> Vec<RawBox> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawBox> = Vec::with_capacity(cands.len().min(64));
    for c in cands {
        if kept
            .iter()
            .all(|k| k.class_id != c.class_id || iou(&k.bbox, &c.bbox) <= iou_threshold)
        {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class_id: usize, score: f32, bbox: [f32; 4]) -> RawBox {
        RawBox {
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn lane_max_agrees_with_a_plain_max() {
        let v: Vec<f32> = (0..83).map(|i| ((i * 37) % 101) as f32 / 7.0).collect();
        for n in [0, 1, 7, 8, 9, 80, 83] {
            let want = v[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_f32(&v[..n]), want, "n = {n}");
        }
    }

    #[test]
    fn iou_of_hand_worked_boxes() {
        // Two 10x10 squares overlapping by 5x10: 50 / 150.
        let v = iou(&[0., 0., 10., 10.], &[5., 0., 15., 10.]);
        assert!((v - 1.0 / 3.0).abs() < 1e-6, "{v}");
        assert_eq!(iou(&[0., 0., 10., 10.], &[10., 0., 20., 10.]), 0.0);
        assert_eq!(iou(&[0., 0., 10., 10.], &[0., 0., 10., 10.]), 1.0);
        assert_eq!(iou(&[0., 0., 0., 0.], &[0., 0., 0., 0.]), 0.0);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let out = nms(
            vec![
                cand(0, 0.6, [1., 1., 11., 11.]), // IoU 0.68 with the 0.9 box: gone
                cand(0, 0.9, [0., 0., 10., 10.]), // best
                cand(1, 0.8, [0., 0., 10., 10.]), // other class: kept
                cand(0, 0.7, [5., 0., 15., 10.]), // IoU 1/3 <= 0.45: kept
                cand(0, 0.5, [50., 50., 60., 60.]), // far away: kept
            ],
            0.45,
        );
        let got: Vec<(usize, f32)> = out.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.8), (0, 0.7), (0, 0.5)]);
    }

    #[test]
    fn nms_keeps_the_first_of_equal_scores() {
        let out = nms(
            vec![
                cand(2, 0.5, [0., 0., 10., 10.]),
                cand(2, 0.5, [0., 0., 10., 11.]),
            ],
            0.45,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bbox, [0., 0., 10., 10.]);
    }

    #[test]
    fn pytorch_decoding_scales_boxes_and_applies_per_class_thresholds() {
        // Three candidates, two classes; class 1 needs 0.8.
        let boxes = [
            0.25, 0.5, 0.5, 0.75, // -> (104,208)-(208,312) at 416
            0.0, 0.0, 0.1, 0.1, //
            0.5, 0.5, 1.0, 1.0,
        ];
        let confs = [
            0.7, 0.1, // class 0 at 0.7: kept
            0.2, 0.75, // class 1 at 0.75 < 0.8: dropped
            0.1, 0.85, // class 1 at 0.85: kept
        ];
        let th = Thresholds::new(vec![0.4, 0.8]);
        let mut out = Vec::new();
        decode_pytorch(&boxes, &confs, 2, 416.0, 416.0, &th, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], cand(0, 0.7, [104., 208., 208., 312.]));
        assert_eq!(out[1].class_id, 1);
        assert_eq!(out[1].bbox, [208., 208., 416., 416.]);
    }

    #[test]
    fn zoo_decoding_uses_grid_anchors_and_scale_xy() {
        // A 2x2 grid at stride 16 (input 32), 2 anchors, 1 class. One live slot:
        // cell (gx=1, gy=0), anchor 1, tx = ty = 0 so sigmoid = 0.5:
        //   cx = (0.5*1.2 - 0.1 + 1) * 16 = 24, cy = (0.5*1.2 - 0.1 + 0) * 16 = 8
        //   w = exp(ln 2) * 10 = 20, h = exp(0) * 6 = 6
        // score = obj 0.8 * prob 0.5 = 0.4.
        let head = ZooHead {
            output: 0,
            grid_h: 2,
            grid_w: 2,
            stride: 16.0,
            anchors: vec![(4.0, 4.0), (10.0, 6.0)],
            scale_xy: 1.2,
        };
        let per = 6;
        let mut data = vec![0f32; 2 * 2 * 2 * per];
        let (gy, gx, a) = (0, 1, 1);
        let slot = ((gy * 2 + gx) * 2 + a) * per;
        data[slot..slot + per].copy_from_slice(&[0.0, 0.0, 2f32.ln(), 0.0, 0.8, 0.5]);
        // A slot under the threshold: obj 0.9 * prob 0.3.
        data[0..per].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.9, 0.3]);
        let mut out = Vec::new();
        decode_zoo_head(
            &data,
            &head,
            1,
            32.0,
            &Thresholds::new(vec![0.35]),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let c = out[0];
        assert!((c.score - 0.4).abs() < 1e-6);
        let want = [24.0 - 10.0, 8.0 - 3.0, 24.0 + 10.0, 8.0 + 3.0];
        for (g, w) in c.bbox.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{:?}", c.bbox);
        }
    }
}
