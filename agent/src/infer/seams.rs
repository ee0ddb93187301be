//! One object cut by the seam between two crops of a frame: crops never overlap, so an
//! object that lies across the edge where two of them meet is seen in pieces, and each
//! crop's model run finds its own piece (one box per crop, each ending at the cut).
//! Here, after the boxes are in camera pixels, pieces of one class that meet across a
//! shared crop edge, and line up along it, become one box. Boxes of one crop are never
//! joined here (NMS already decided about those), nor boxes that do not reach the
//! seam. Pure maths on plain data.

use crate::wire::detections::Detection;
use crate::wire::regions::Rect;

/// How far (camera pixels; crops are cut at camera resolution) a box's side may stop
/// short of its crop's edge and still be a piece cut there, and the widest gap between
/// two crops that still counts as a seam: a model's box of a cut object ends near the
/// cut, not on it.
pub const TOUCH: f32 = 8.0;

/// The least share of the shorter piece's extent along the seam that the two pieces
/// must share: a cut object's two pieces line up along the cut; two objects that
/// merely both touch the seam, one above the other, do not.
pub const ALONG: f32 = 0.5;

/// A seam between two crops: the band between their facing sides, across an axis.
#[derive(Clone, Copy, Debug)]
struct Seam {
    /// Vertical (crops side by side, the cut runs top to bottom) or horizontal.
    vertical: bool,
    /// The facing sides: the first crop's far side, the second crop's near side.
    from: f32,
    to: f32,
    /// Where the crops face each other along the seam.
    lo: f32,
    hi: f32,
}

/// The seam where `a` (left or above) meets `b` (right or below), if they meet.
fn seam(a: &Rect, b: &Rect) -> Option<Seam> {
    let span = |a0: u32, a1: u32, b0: u32, b1: u32| {
        let (lo, hi) = (a0.max(b0) as f32, a1.min(b1) as f32);
        (lo < hi).then_some((lo, hi))
    };
    let gap = |from: u32, to: u32| to >= from && (to - from) as f32 <= TOUCH;
    // Side by side: `b` starts at most TOUCH right of where `a` ends, rows shared.
    let (vertical, from, to, along) = if gap(a.x + a.w, b.x) {
        (true, a.x + a.w, b.x, span(a.y, a.y + a.h, b.y, b.y + b.h))
    } else if gap(a.y + a.h, b.y) {
        (false, a.y + a.h, b.y, span(a.x, a.x + a.w, b.x, b.x + b.w))
    } else {
        return None;
    };
    let (lo, hi) = along?;
    Some(Seam {
        vertical,
        from: from as f32,
        to: to as f32,
        lo,
        hi,
    })
}

/// Whether `p` (in the first crop) and `q` (in the second) are two pieces of one object
/// cut by `s`: each reaches the seam from its side and they line up along it.
fn pieces(s: &Seam, p: &Detection, q: &Detection) -> bool {
    // (near side, far side) across the seam, (start, end) along it.
    let (p_across, q_across, p_along, q_along) = if s.vertical {
        (
            (p.x, p.x + p.w),
            (q.x, q.x + q.w),
            (p.y, p.y + p.h),
            (q.y, q.y + q.h),
        )
    } else {
        (
            (p.y, p.y + p.h),
            (q.y, q.y + q.h),
            (p.x, p.x + p.w),
            (q.x, q.x + q.w),
        )
    };
    let reaches = p_across.1 >= s.from - TOUCH && q_across.0 <= s.to + TOUCH;
    let shared = p_along.1.min(q_along.1) - p_along.0.max(q_along.0);
    let shorter = (p_along.1 - p_along.0).min(q_along.1 - q_along.0);
    let on_seam = p_along.1.min(q_along.1) > s.lo && p_along.0.max(q_along.0) < s.hi;
    reaches && on_seam && shorter > 0.0 && shared >= ALONG * shorter
}

/// The frame's detections with pieces of one object cut by a crop seam joined: each
/// item comes with the crop it was found in (`None`: the whole frame), boxes in camera
/// pixels. A joined box covers its pieces and keeps the best piece's score.
pub fn join_cut_objects(items: Vec<(Option<Rect>, Detection)>) -> Vec<Detection> {
    let n = items.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            let ((Some(ci), di), (Some(cj), dj)) = (&items[i], &items[j]) else {
                continue;
            };
            if ci == cj || di.class_id != dj.class_id {
                continue;
            }
            let joined = match (seam(ci, cj), seam(cj, ci)) {
                (Some(s), _) => pieces(&s, di, dj),
                (_, Some(s)) => pieces(&s, dj, di),
                _ => false,
            };
            if joined {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut out: Vec<Option<Detection>> = vec![None; n];
    let mut order = Vec::new();
    for (i, (_, d)) in items.into_iter().enumerate() {
        let r = root(&mut parent, i);
        match &mut out[r] {
            slot @ None => {
                *slot = Some(d);
                order.push(r);
            }
            Some(acc) => {
                let (x0, y0) = (acc.x.min(d.x), acc.y.min(d.y));
                let x1 = (acc.x + acc.w).max(d.x + d.w);
                let y1 = (acc.y + acc.h).max(d.y + d.h);
                (acc.x, acc.y, acc.w, acc.h) = (x0, y0, x1 - x0, y1 - y0);
                acc.score = acc.score.max(d.score);
            }
        }
    }
    order.into_iter().filter_map(|r| out[r].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    fn det(class_id: usize, score: f32, [x, y, w, h]: [f32; 4]) -> Detection {
        Detection {
            class_id,
            class: format!("class{class_id}"),
            score,
            x,
            y,
            w,
            h,
        }
    }

    fn boxes(v: &[Detection]) -> Vec<[f32; 4]> {
        v.iter().map(|d| [d.x, d.y, d.w, d.h]).collect()
    }

    // Two 416-pixel crops side by side, meeting at x = 516; one below the left one.
    const LEFT: Rect = Rect {
        x: 100,
        y: 200,
        w: 416,
        h: 416,
    };
    const RIGHT: Rect = Rect {
        x: 516,
        y: 150,
        w: 416,
        h: 416,
    };
    const BELOW: Rect = Rect {
        x: 100,
        y: 616,
        w: 416,
        h: 416,
    };

    #[test]
    fn a_box_cut_by_the_edge_between_two_crops_becomes_one() {
        // A person 120 px wide standing across x = 516: 70 px on the left, 50 on the
        // right, the model's boxes ending a few pixels short of the cut.
        let items = vec![
            (Some(LEFT), det(0, 0.6, [446.0, 300.0, 67.0, 200.0])),
            (Some(RIGHT), det(0, 0.8, [519.0, 305.0, 47.0, 190.0])),
        ];
        let out = join_cut_objects(items);
        assert_eq!(boxes(&out), vec![[446.0, 300.0, 120.0, 200.0]]);
        assert_eq!(out[0].score, 0.8, "the best piece's score");
        assert_eq!(out[0].class_id, 0);
    }

    #[test]
    fn a_box_cut_by_a_horizontal_edge_and_a_gap_of_a_few_pixels_becomes_one() {
        let below = r(BELOW.x, BELOW.y + 4, BELOW.w, BELOW.h);
        let items = vec![
            (Some(LEFT), det(2, 0.7, [200.0, 560.0, 80.0, 56.0])),
            (Some(below), det(2, 0.5, [205.0, 620.0, 70.0, 90.0])),
        ];
        assert_eq!(
            boxes(&join_cut_objects(items)),
            vec![[200.0, 560.0, 80.0, 150.0]]
        );
    }

    #[test]
    fn an_object_cut_into_four_at_a_corner_becomes_one() {
        let (a, b) = (r(0, 0, 416, 416), r(416, 0, 416, 416));
        let (c, d) = (r(0, 416, 416, 416), r(416, 416, 416, 416));
        let items = vec![
            (Some(a), det(1, 0.5, [380.0, 380.0, 36.0, 36.0])),
            (Some(b), det(1, 0.6, [416.0, 378.0, 40.0, 38.0])),
            (Some(c), det(1, 0.7, [382.0, 416.0, 34.0, 30.0])),
            (Some(d), det(1, 0.4, [416.0, 416.0, 38.0, 32.0])),
        ];
        let out = join_cut_objects(items);
        assert_eq!(boxes(&out), vec![[380.0, 378.0, 76.0, 70.0]]);
        assert_eq!(out[0].score, 0.7);
    }

    #[test]
    fn distinct_objects_stay_apart() {
        type Case = (&'static str, Vec<(Option<Rect>, Detection)>);
        let cases: Vec<Case> = vec![
            (
                "other classes across the seam",
                vec![
                    (Some(LEFT), det(0, 0.6, [446.0, 300.0, 70.0, 200.0])),
                    (Some(RIGHT), det(1, 0.8, [516.0, 305.0, 50.0, 190.0])),
                ],
            ),
            (
                "both touch the seam, one above the other",
                vec![
                    (Some(LEFT), det(0, 0.6, [446.0, 220.0, 70.0, 120.0])),
                    (Some(RIGHT), det(0, 0.8, [516.0, 360.0, 50.0, 120.0])),
                ],
            ),
            (
                "the left one stops well short of the seam",
                vec![
                    (Some(LEFT), det(0, 0.6, [400.0, 300.0, 60.0, 200.0])),
                    (Some(RIGHT), det(0, 0.8, [516.0, 305.0, 50.0, 190.0])),
                ],
            ),
            (
                "the right one starts well past the seam",
                vec![
                    (Some(LEFT), det(0, 0.6, [446.0, 300.0, 70.0, 200.0])),
                    (Some(RIGHT), det(0, 0.8, [540.0, 305.0, 50.0, 190.0])),
                ],
            ),
            (
                "crops that do not meet",
                vec![
                    (
                        Some(r(0, 0, 416, 416)),
                        det(0, 0.6, [380.0, 100.0, 36.0, 80.0]),
                    ),
                    (
                        Some(r(500, 0, 416, 416)),
                        det(0, 0.8, [500.0, 100.0, 30.0, 80.0]),
                    ),
                ],
            ),
            (
                "one crop: two boxes NMS kept",
                vec![
                    (Some(LEFT), det(0, 0.6, [446.0, 300.0, 70.0, 200.0])),
                    (Some(LEFT), det(0, 0.8, [446.0, 300.0, 70.0, 190.0])),
                ],
            ),
            (
                "the whole frame (no crops)",
                vec![
                    (None, det(0, 0.6, [446.0, 300.0, 70.0, 200.0])),
                    (None, det(0, 0.8, [516.0, 305.0, 50.0, 190.0])),
                ],
            ),
        ];
        for (name, items) in cases {
            let want: Vec<[f32; 4]> = items.iter().map(|(_, d)| [d.x, d.y, d.w, d.h]).collect();
            assert_eq!(boxes(&join_cut_objects(items)), want, "{name}");
        }
    }
}
