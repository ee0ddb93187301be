//! Crops around motion (`escalation.regions = "motion"`, the default): which parts of
//! the camera frame go to the detector, when the whole frame goes instead ([`plan`]),
//! how they travel in one JPEG, and how a box found in one maps back to camera pixels.
//! Pure maths on plain numbers; the agent cuts the crops (`ingest`), the worker reads
//! them (`infer::frame_loop`).
//!
//! A motion box becomes a square of the full-resolution frame around it, at least
//! `min_side` (the model's input size: the detector then sees the object at camera
//! resolution, never shrunk) and a margin larger than the box; squares that overlap are
//! merged into one square holding both, until none overlap. A square is cut by the
//! frame's edges only when the frame is smaller than it (then it is a rectangle).
//!
//! The payload is one JPEG: the whole frame at detection size on top (the snapshot is
//! made from it), the crops below it, each starting on a 16-pixel row so JPEG blocks
//! never mix two of them.

use serde::{Deserialize, Serialize};

/// Most crops one frame carries; more motion boxes than that make one crop of their
/// union (many scattered boxes: the whole scene is moving).
pub const MAX_REGIONS: usize = 4;
/// A crop's side over its motion box's longer side: some context around the object.
pub const MARGIN: f32 = 1.25;
/// Rows of the payload where a crop may start (JPEG's largest block, 4:2:0 MCU).
const ALIGN: u32 = 16;

/// A rectangle in pixels: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    fn right(&self) -> u32 {
        self.x + self.w
    }
    fn bottom(&self) -> u32 {
        self.y + self.h
    }
    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }
    fn union(&self, o: &Rect) -> Rect {
        let (x, y) = (self.x.min(o.x), self.y.min(o.y));
        Rect {
            x,
            y,
            w: self.right().max(o.right()) - x,
            h: self.bottom().max(o.bottom()) - y,
        }
    }
    /// Whether it lies inside a `width` x `height` frame.
    pub fn within(&self, width: u32, height: u32) -> bool {
        self.w > 0
            && self.h > 0
            && self.x.checked_add(self.w).is_some_and(|r| r <= width)
            && self.y.checked_add(self.h).is_some_and(|b| b <= height)
    }
}

/// One crop of an escalated frame: where it was taken in the camera frame, and where
/// it lies in the payload JPEG (same size: crops are never scaled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Camera-frame pixels.
    pub frame: Rect,
    /// Top-left corner in the payload.
    pub at: [u32; 2],
}

impl Region {
    /// Its rectangle in the payload.
    pub fn in_payload(&self) -> Rect {
        Rect {
            x: self.at[0],
            y: self.at[1],
            w: self.frame.w,
            h: self.frame.h,
        }
    }
}

/// The square around `r` with side `side`, centred on it and moved inside the frame
/// (cut by the frame only where the frame is smaller).
fn square_around(r: &Rect, side: u32, width: u32, height: u32) -> Rect {
    let place = |start: u32, len: u32, side: u32, limit: u32| {
        let side = side.min(limit);
        let centre = start as i64 + len as i64 / 2;
        let lo = (centre - side as i64 / 2).clamp(0, (limit - side) as i64);
        (lo as u32, side)
    };
    let (x, w) = place(r.x, r.w, side, width);
    let (y, h) = place(r.y, r.h, side, height);
    Rect { x, y, w, h }
}

/// The crops for normalised motion boxes (`[x, y, w, h]` in 0..=1) of a `width` x
/// `height` camera frame: squares of at least `min_side`, merged while any overlap,
/// at most [`MAX_REGIONS`]. Largest first (they run first when the worker's batch is
/// full).
pub fn squares(boxes: &[[f32; 4]], width: u32, height: u32, min_side: u32) -> Vec<Rect> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let px = |v: f32, full: u32| (v.clamp(0.0, 1.0) * full as f32).round() as u32;
    let sized = |r: &Rect| {
        let side = ((r.w.max(r.h) as f32 * MARGIN).ceil() as u32).max(min_side);
        square_around(r, side, width, height)
    };
    let mut out: Vec<Rect> = boxes
        .iter()
        .map(|b| {
            let (x, y) = (px(b[0], width), px(b[1], height));
            let r = Rect {
                x: x.min(width - 1),
                y: y.min(height - 1),
                w: px(b[2], width).max(1),
                h: px(b[3], height).max(1),
            };
            sized(&Rect {
                w: r.w.min(width - r.x),
                h: r.h.min(height - r.y),
                ..r
            })
        })
        .collect();
    // Merge until no two overlap: a merged square is larger and may reach others.
    'merge: loop {
        for i in 0..out.len() {
            for j in i + 1..out.len() {
                if out[i].overlaps(&out[j]) {
                    let u = out[i].union(&out[j]);
                    out.swap_remove(j);
                    out[i] = square_around(&u, u.w.max(u.h), width, height);
                    continue 'merge;
                }
            }
        }
        break;
    }
    if out.len() > MAX_REGIONS {
        let u = out[1..].iter().fold(out[0], |a, b| a.union(b));
        out = vec![square_around(&u, u.w.max(u.h), width, height)];
    }
    out.sort_by_key(|r| (std::cmp::Reverse(r.w as u64 * r.h as u64), r.y, r.x));
    out
}

/// Motion covering at least this share of the frame sends the whole frame: most of the
/// scene is moving, and crops of it would be the frame again, in pieces.
pub const MOSTLY: f32 = 0.5;

/// Why a frame that could have gone as crops goes whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No motion box to crop around.
    NoMotion,
    /// The motion boxes cover at least [`MOSTLY`] of the frame.
    MostlyMoving,
    /// The crops would take more model runs than allowed (`max_crops`).
    TooManyCrops,
    /// The crops hold at least as many pixels as the frame: they would cost more than
    /// the frame and show nothing larger than it does.
    CropsCostMore,
}

impl Fallback {
    /// Its label on `edge_agent_crops_whole_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NoMotion => "no_motion",
            Fallback::MostlyMoving => "mostly_moving",
            Fallback::TooManyCrops => "too_many_crops",
            Fallback::CropsCostMore => "crops_cost_more",
        }
    }
}

/// What the detector sees of one frame: crops around motion, or the whole frame and
/// why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Crops(Vec<Rect>),
    Whole(Fallback),
}

/// Crops ([`squares`]) when they pay: the whole frame instead when motion covers most
/// of it, when more than `max_crops` crops (model runs) would be needed, or when the
/// crops' pixels add up to the frame's or more. The whole frame costs one model run at
/// detection size; crops cost one run each and show the object at camera resolution.
pub fn plan(boxes: &[[f32; 4]], width: u32, height: u32, min_side: u32, max_crops: usize) -> Plan {
    if boxes.is_empty() || width == 0 || height == 0 {
        return Plan::Whole(Fallback::NoMotion);
    }
    if covered(boxes) >= MOSTLY {
        return Plan::Whole(Fallback::MostlyMoving);
    }
    let crops = squares(boxes, width, height, min_side);
    if crops.len() > max_crops {
        return Plan::Whole(Fallback::TooManyCrops);
    }
    let pixels: u64 = crops.iter().map(|r| r.w as u64 * r.h as u64).sum();
    if pixels >= width as u64 * height as u64 {
        return Plan::Whole(Fallback::CropsCostMore);
    }
    Plan::Crops(crops)
}

/// The share of the frame the union of normalised boxes covers (overlaps counted once:
/// the plane is cut along every box edge and each cell inside a box counted).
fn covered(boxes: &[[f32; 4]]) -> f32 {
    let clamp = |b: &[f32; 4]| {
        let x0 = b[0].clamp(0.0, 1.0);
        let y0 = b[1].clamp(0.0, 1.0);
        [
            x0,
            y0,
            (b[0] + b[2]).clamp(x0, 1.0),
            (b[1] + b[3]).clamp(y0, 1.0),
        ]
    };
    let rects: Vec<[f32; 4]> = boxes.iter().map(clamp).collect();
    let edges = |a: usize, b: usize| {
        let mut v: Vec<f32> = rects.iter().flat_map(|r| [r[a], r[b]]).collect();
        v.sort_by(f32::total_cmp);
        v.dedup();
        v
    };
    let (xs, ys) = (edges(0, 2), edges(1, 3));
    let mut area = 0.0;
    for x in xs.windows(2) {
        for y in ys.windows(2) {
            let (cx, cy) = ((x[0] + x[1]) / 2.0, (y[0] + y[1]) / 2.0);
            if rects
                .iter()
                .any(|r| r[0] <= cx && cx < r[2] && r[1] <= cy && cy < r[3])
            {
                area += (x[1] - x[0]) * (y[1] - y[0]);
            }
        }
    }
    area
}

/// Places the whole frame (`whole` = width, height) at the payload's top-left and the
/// crops below it, one under the other, each on a 16-pixel row. Returns the regions and
/// the payload's size.
pub fn layout(whole: (u32, u32), crops: &[Rect]) -> (Vec<Region>, (u32, u32)) {
    let mut y = whole.1.next_multiple_of(ALIGN);
    let mut w = whole.0;
    let mut regions = Vec::with_capacity(crops.len());
    let mut bottom = whole.1;
    for c in crops {
        regions.push(Region {
            frame: *c,
            at: [0, y],
        });
        bottom = y + c.h;
        y = bottom.next_multiple_of(ALIGN);
        w = w.max(c.w);
    }
    (regions, (w, bottom))
}

/// The payload picture of a frame: the whole frame (packed RGB of `size`) at the
/// top-left and each crop (its rectangle in the camera frame, its packed RGB) below, as
/// [`layout`] places them. Returns the regions, the picture and its size.
pub fn compose(
    whole: &[u8],
    size: (u32, u32),
    crops: &[(Rect, &[u8])],
) -> (Vec<Region>, Vec<u8>, (u32, u32)) {
    let rects: Vec<Rect> = crops.iter().map(|c| c.0).collect();
    let (regions, (pw, ph)) = layout(size, &rects);
    let mut payload = vec![0u8; pw as usize * ph as usize * 3];
    paste_rgb(&mut payload, pw, whole, size.0, [0, 0]);
    for (r, (rect, rgb)) in regions.iter().zip(crops) {
        paste_rgb(&mut payload, pw, rgb, rect.w, r.at);
    }
    (regions, payload, (pw, ph))
}

/// A box `[x, y, w, h]` found in a crop (crop pixels) in camera pixels.
pub fn crop_to_camera(b: [f32; 4], frame: &Rect) -> [f32; 4] {
    [b[0] + frame.x as f32, b[1] + frame.y as f32, b[2], b[3]]
}

/// A box in pixels of a `from` (width, height) picture of the camera frame, in pixels
/// of a `to` picture of it (the whole frame at detection size and the camera frame).
pub fn rescale(b: [f32; 4], from: (u32, u32), to: (u32, u32)) -> [f32; 4] {
    let sx = to.0 as f32 / from.0.max(1) as f32;
    let sy = to.1 as f32 / from.1.max(1) as f32;
    [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
}

/// Copies `rect` of a packed RGB picture `width` pixels wide out, packed.
pub fn cut_rgb(rgb: &[u8], width: u32, rect: &Rect) -> Vec<u8> {
    let (stride, row) = (width as usize * 3, rect.w as usize * 3);
    let x = rect.x as usize * 3;
    let mut out = Vec::with_capacity(row * rect.h as usize);
    for r in rgb
        .chunks_exact(stride)
        .skip(rect.y as usize)
        .take(rect.h as usize)
    {
        out.extend_from_slice(&r[x..x + row]);
    }
    out
}

/// Copies a packed RGB picture `w` pixels wide into `dst` (`dst_w` wide) at `at`.
pub fn paste_rgb(dst: &mut [u8], dst_w: u32, src: &[u8], w: u32, at: [u32; 2]) {
    let (stride, row) = (dst_w as usize * 3, w as usize * 3);
    if row == 0 {
        return;
    }
    for (i, r) in src.chunks_exact(row).enumerate() {
        let start = (at[1] as usize + i) * stride + at[0] as usize * 3;
        dst[start..start + row].copy_from_slice(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    /// Normalised box of a pixel rectangle in a 1920x1080 frame.
    fn n(x: u32, y: u32, w: u32, h: u32) -> [f32; 4] {
        [
            x as f32 / 1920.0,
            y as f32 / 1080.0,
            w as f32 / 1920.0,
            h as f32 / 1080.0,
        ]
    }

    #[test]
    fn motion_boxes_become_squares_merged_where_they_overlap() {
        // Name, motion boxes, least side, squares wanted.
        type Row = (&'static str, Vec<[f32; 4]>, u32, Vec<Rect>);
        let rows: Vec<Row> = vec![
            ("no motion, no crop", vec![], 416, vec![]),
            (
                "small box: the model's input size, centred",
                vec![n(1000, 500, 20, 20)],
                416,
                vec![r(802, 302, 416, 416)],
            ),
            (
                "at the corner: moved inside the frame",
                vec![n(0, 0, 10, 10)],
                416,
                vec![r(0, 0, 416, 416)],
            ),
            (
                "at the far corner",
                vec![n(1910, 1070, 10, 10)],
                416,
                vec![r(1504, 664, 416, 416)],
            ),
            (
                "large box: its longer side and the margin",
                vec![n(100, 100, 400, 200)],
                416,
                vec![r(50, 0, 500, 500)],
            ),
            (
                "two far apart: two squares, larger first",
                vec![n(100, 500, 20, 20), n(1400, 500, 400, 40)],
                416,
                vec![r(1350, 270, 500, 500), r(0, 302, 416, 416)],
            ),
            (
                "two near: one square holding both",
                vec![n(800, 500, 20, 20), n(1000, 500, 20, 20)],
                416,
                vec![r(602, 202, 616, 616)],
            ),
            (
                "three in a row: merged, and the merged square reaches the third",
                vec![
                    n(300, 500, 10, 10),
                    n(600, 500, 10, 10),
                    n(1000, 500, 10, 10),
                ],
                416,
                vec![r(97, 0, 1116, 1080)],
            ),
            (
                "wider than the frame is high: cut by the frame",
                vec![n(100, 400, 1700, 100)],
                416,
                vec![r(0, 0, 1920, 1080)],
            ),
            (
                "more than MAX_REGIONS apart: one crop of their union",
                (0..5).map(|i| n(i * 400, 0, 8, 8)).collect(),
                100,
                vec![r(0, 0, 1654, 1080)],
            ),
        ];
        for (name, boxes, min, want) in rows {
            assert_eq!(squares(&boxes, 1920, 1080, min), want, "{name}");
        }
    }

    #[test]
    fn crops_go_unless_the_whole_frame_costs_less_or_most_of_it_moves() {
        // Name, motion boxes (pixels), frame, least side, most crops, plan wanted.
        type Row = (&'static str, Vec<[u32; 4]>, (u32, u32), u32, usize, Plan);
        let hd = (1920, 1080);
        let rows: Vec<Row> = vec![
            (
                "no motion",
                vec![],
                hd,
                416,
                2,
                Plan::Whole(Fallback::NoMotion),
            ),
            (
                "one small object: one crop at the model's size",
                vec![[1000, 500, 20, 20]],
                hd,
                416,
                2,
                Plan::Crops(vec![r(802, 302, 416, 416)]),
            ),
            (
                "two far apart, two allowed: two crops",
                vec![[100, 500, 20, 20], [1400, 500, 400, 40]],
                hd,
                416,
                2,
                Plan::Crops(vec![r(1350, 270, 500, 500), r(0, 302, 416, 416)]),
            ),
            (
                "three far apart, two allowed: the whole frame",
                vec![[100, 100, 10, 10], [1700, 100, 10, 10], [900, 800, 10, 10]],
                hd,
                416,
                2,
                Plan::Whole(Fallback::TooManyCrops),
            ),
            (
                "three far apart, four allowed: three crops",
                vec![[100, 100, 10, 10], [1700, 100, 10, 10], [900, 800, 10, 10]],
                hd,
                416,
                4,
                Plan::Crops(vec![
                    r(0, 0, 416, 416),
                    r(1497, 0, 416, 416),
                    r(697, 597, 416, 416),
                ]),
            ),
            (
                "one crop allowed, two near objects merge into one: a crop",
                vec![[800, 500, 20, 20], [1000, 500, 20, 20]],
                hd,
                416,
                1,
                Plan::Crops(vec![r(602, 202, 616, 616)]),
            ),
            (
                "motion over more than half the frame",
                vec![[0, 0, 1920, 600]],
                hd,
                416,
                2,
                Plan::Whole(Fallback::MostlyMoving),
            ),
            (
                "exactly half the frame",
                vec![[0, 0, 1920, 540]],
                hd,
                416,
                2,
                Plan::Whole(Fallback::MostlyMoving),
            ),
            (
                "a frame smaller than a crop: the crop would be the frame",
                vec![[100, 100, 10, 10]],
                (320, 240),
                416,
                2,
                Plan::Whole(Fallback::CropsCostMore),
            ),
            (
                "two crops adding up to the frame's pixels",
                vec![[0, 0, 10, 10], [822, 406, 10, 10]],
                (832, 416),
                416,
                2,
                Plan::Whole(Fallback::CropsCostMore),
            ),
            (
                "a frame a little wider than a crop: one crop is cheaper",
                vec![[300, 100, 10, 10]],
                (640, 360),
                416,
                2,
                Plan::Crops(vec![r(97, 0, 416, 360)]),
            ),
        ];
        for (name, boxes, (w, h), min, max, want) in rows {
            let norm: Vec<[f32; 4]> = boxes
                .iter()
                .map(|b| {
                    [
                        b[0] as f32 / w as f32,
                        b[1] as f32 / h as f32,
                        b[2] as f32 / w as f32,
                        b[3] as f32 / h as f32,
                    ]
                })
                .collect();
            assert_eq!(plan(&norm, w, h, min, max), want, "{name}");
        }
    }

    #[test]
    fn covered_share_counts_overlaps_once() {
        // Name, normalised boxes, share wanted.
        let rows: Vec<(&str, Vec<[f32; 4]>, f32)> = vec![
            ("none", vec![], 0.0),
            ("a quarter", vec![[0.0, 0.0, 0.5, 0.5]], 0.25),
            (
                "two quarters side by side",
                vec![[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 0.5, 0.5]],
                0.5,
            ),
            (
                "the same quarter twice",
                vec![[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]],
                0.25,
            ),
            (
                "two overlapping by half: 0.25 + 0.25 - 0.125",
                vec![[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.5, 0.5]],
                0.375,
            ),
            (
                "a box reaching past the frame is cut",
                vec![[0.5, 0.5, 1.0, 1.0]],
                0.25,
            ),
            ("the whole frame", vec![[0.0, 0.0, 1.0, 1.0]], 1.0),
        ];
        for (name, boxes, want) in rows {
            let got = covered(&boxes);
            assert!((got - want).abs() < 1e-5, "{name}: {got}, want {want}");
        }
    }

    #[test]
    fn squares_never_overlap_and_stay_inside_the_frame() {
        // A sweep of box pairs and sizes, including a frame smaller than the minimum.
        for (fw, fh) in [(1920, 1080), (640, 360), (300, 200)] {
            for a in 0..12 {
                for b in 0..12 {
                    let boxes = [
                        [a as f32 / 12.0, 0.3, 0.02 * (b + 1) as f32, 0.05],
                        [b as f32 / 12.0, 0.6, 0.05, 0.02 * (a + 1) as f32],
                    ];
                    let sq = squares(&boxes, fw, fh, 416);
                    assert!(!sq.is_empty() && sq.len() <= 2);
                    for (i, s) in sq.iter().enumerate() {
                        assert!(s.within(fw, fh), "{s:?} in {fw}x{fh}");
                        assert!(s.w >= 416.min(fw) && s.h >= 416.min(fh), "{s:?}");
                        for t in &sq[i + 1..] {
                            assert!(!s.overlaps(t), "{s:?} overlaps {t:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn crops_lie_below_the_whole_frame_on_16_pixel_rows() {
        // Name, whole frame, crops, their places wanted, payload size wanted.
        type Row = (
            &'static str,
            (u32, u32),
            Vec<Rect>,
            Vec<[u32; 2]>,
            (u32, u32),
        );
        let rows: Vec<Row> = vec![
            ("no crop", (640, 360), vec![], vec![], (640, 360)),
            (
                "one crop wider than the frame",
                (640, 360),
                vec![r(5, 6, 700, 700)],
                vec![[0, 368]],
                (700, 1068),
            ),
            (
                "two crops",
                (640, 360),
                vec![r(0, 0, 416, 416), r(9, 9, 420, 420)],
                vec![[0, 368], [0, 784]],
                (640, 1204),
            ),
        ];
        for (name, whole, crops, at, size) in rows {
            let (regions, got) = layout(whole, &crops);
            assert_eq!(got, size, "{name}");
            let got_at: Vec<[u32; 2]> = regions.iter().map(|r| r.at).collect();
            assert_eq!(got_at, at, "{name}");
            for (reg, c) in regions.iter().zip(&crops) {
                assert_eq!(reg.frame, *c);
                assert!(reg.in_payload().within(size.0, size.1), "{name}");
            }
        }
    }

    #[test]
    fn boxes_map_back_to_camera_pixels() {
        let rows: Vec<(&str, [f32; 4], [f32; 4])> = vec![
            (
                "crop at the origin",
                crop_to_camera([10.0, 20.0, 30.0, 40.0], &r(0, 0, 416, 416)),
                [10.0, 20.0, 30.0, 40.0],
            ),
            (
                "crop inside the frame: shifted, same size",
                crop_to_camera([10.0, 20.0, 30.0, 40.0], &r(802, 302, 416, 416)),
                [812.0, 322.0, 30.0, 40.0],
            ),
            (
                "whole frame at detect size to 1080p",
                rescale([64.0, 36.0, 32.0, 18.0], (640, 360), (1920, 1080)),
                [192.0, 108.0, 96.0, 54.0],
            ),
            (
                "camera to snapshot",
                rescale([192.0, 108.0, 96.0, 54.0], (1920, 1080), (640, 360)),
                [64.0, 36.0, 32.0, 18.0],
            ),
            (
                "same size: unchanged",
                rescale([1.5, 2.5, 3.5, 4.5], (640, 360), (640, 360)),
                [1.5, 2.5, 3.5, 4.5],
            ),
        ];
        for (name, got, want) in rows {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-3, "{name}: {got:?}, want {want:?}");
            }
        }
    }

    #[test]
    fn a_crop_cut_and_pasted_lands_where_its_region_says() {
        // 6x4 picture whose pixel (x, y) is [x, y, 7].
        let (w, h) = (6u32, 4u32);
        let pic: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect();
        let c = r(2, 1, 3, 2);
        let cut = cut_rgb(&pic, w, &c);
        assert_eq!(
            cut,
            [2, 1, 7, 3, 1, 7, 4, 1, 7, 2, 2, 7, 3, 2, 7, 4, 2, 7].to_vec()
        );
        let mut dst = vec![0u8; 5 * 5 * 3];
        paste_rgb(&mut dst, 5, &cut, 3, [1, 2]);
        assert_eq!(cut_rgb(&dst, 5, &r(1, 2, 3, 2)), cut);
        assert_eq!(&dst[..15], &[0; 15], "rows above untouched");
    }
}
