//! The frame-difference detector. Pure: a grey frame in, boxes out; no I/O, no clock.
//!
//! Per frame, in one pass over the rows: optional contrast table, 3x3 Gaussian blur,
//! absolute difference against the background, threshold, mask, background update
//! (running average, u16 with 8 fractional bits), and the count of changed pixels per
//! grid cell. Then, unless the change is global: square dilation and connected
//! components into boxes, filtered by area. All buffers are sized in `new`; the hot
//! loops work on whole rows with iterators the compiler vectorises (SSE2 on x86-64,
//! NEON on aarch64) and have no bounds checks inside.

use std::collections::VecDeque;
use std::time::Duration;

use super::config::{frames_in, per_frame, MotionConfig};
use super::contrast::Contrast;
use super::label::{Component, Labeler};
use super::mask;
use super::MotionError;

mod boxes;
mod light;
mod rows;
mod shake;

pub use boxes::{FrameMotion, MotionBox, NormBox};
use rows::{
    count, dilate, horizontal, settle_row, update_row, vertical, Plane, PlaneMut, RowParams,
};

/// Grid used by the spread (camera moved, rain) guard.
const GRID: usize = 8;
/// Fractional bits of the background.
const FRAC: u32 = 8;
/// Fractional bits of the exposure gain.
const GAIN_BITS: u32 = 12;
/// Blobs under this many times `min_area` that appear from nothing feed the speckle map.
const FLASH_AREA: u32 = 4;
/// How far back a blob's earlier position is looked for (see `Detector::past`).
const LOOK_BACK: Duration = Duration::from_millis(200);
/// Weight per 200 ms of a new frame in the noise level and the speckle map: they
/// average over about 1.6 s.
const NOISE_RATE: f64 = 0.125;

pub struct Detector {
    w: usize,
    h: usize,
    fps: u32,
    /// The settings, at the analysis rate.
    params: Params,
    /// Where change counts, and the grid of the spread guard.
    grid: Grid,
    /// The frame as it is compared: after contrast and blur.
    prep: Prepared,
    /// What the detector learnt of the scene: background, noise, exposure.
    bg: Background,
    /// The camera-shake search.
    shake: Shake,
    /// Where small blobs keep appearing from nothing (flakes, glints).
    speckle: Speckle,
    /// Changed pixels and their dilated masks, this frame's and the recent past's.
    masks: Masks,
    labeler: Labeler,
    components: Vec<Component>,
    out: FrameMotion,
    /// The CPU has AVX2: `process` runs the step compiled for it.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

/// The settings of [`MotionConfig`] that the step reads, as frames and per-frame weights
/// at the analysis rate.
struct Params {
    threshold: u8,
    /// Background weight of a new frame, in 1/65536, odd (see `difference`). u16 so
    /// that the update is a pair of 16x16-bit high multiplies (SSE2 `pmulhuw`, NEON
    /// `umull`+narrow), which every target vectorises.
    rate: u16,
    blur: bool,
    radius: usize,
    min_area: u32,
    max_area: u32,
    global_change: f32,
    global_spread: f32,
    cell_change: f32,
    /// Where the scene always moves, the threshold rises to `noise_factor` times the
    /// pixel's recent mean difference (`Background::dev`).
    noise_factor: u16,
    /// Weight of a new difference in `dev`, in 1/65536: 1/8 per 200 ms.
    noise_rate: u16,
    /// Shadow test: a pixel darker than the background, but at least this fraction of
    /// it (in 1/256), is a shadow, not a change (0: off).
    shadow: u16,
    /// Light test: least 3x3 correlation with the background (None: off).
    light_texture: Option<f32>,
    /// Follow the camera's exposure: the background is scaled by the frame's gain.
    exposure: bool,
}

/// The motion mask and the grid of the spread (camera moved, rain) guard.
struct Grid {
    /// 1 where change counts, 0 in masked areas.
    active: Vec<u8>,
    active_count: u32,
    /// Column where each grid cell starts (GRID + 1 entries) and active pixels per cell.
    cell_x: [usize; GRID + 1],
    cell_active: [u32; GRID * GRID],
    cell_changed: [u32; GRID * GRID],
    /// Cells that are at least half unmasked: the ones the spread guard looks at.
    cells_eligible: u32,
}

/// The frame as the detector compares it.
struct Prepared {
    contrast: Option<Contrast>,
    /// Frame after the contrast table (only used with contrast on).
    stretched: Vec<u8>,
    /// The frame after blur (and contrast), the one compared with the background.
    cur: Vec<u8>,
    /// Row scratch: vertical blur sums.
    vsum: Vec<u16>,
}

/// What the detector learnt of the scene.
struct Background {
    /// Running-average background, grey << FRAC.
    mean: Vec<u16>,
    seeded: bool,
    /// Per-pixel recent mean difference from the background, in 1/16 grey levels,
    /// learnt where the pixel is quiet or flips (leaves, water, rain).
    dev: Vec<u16>,
    /// Warm-up frames still to learn, and how many were learnt (for the plain mean).
    warmup_left: u32,
    warmup_total: u32,
    /// Ratio scratch for the gain estimate.
    ratios: Vec<u32>,
    /// The exposure gain already measured this frame, and at which shift.
    gain_at: Option<((isize, isize), u16)>,
    /// Row scratch: the background at the frame's exposure (for the shadow and light
    /// tests of rows with change).
    row: Vec<u16>,
}

/// The camera-shake search.
struct Shake {
    /// Largest camera shake compensated, in analysis pixels (0: off).
    radius: usize,
    /// The last frame was shifted: the camera is shaking, search again.
    shaking: bool,
    /// Scratch: coarse (1/`coarse` size) gradient images of the frame and of the
    /// background, and a coarse row of sums.
    coarse: usize,
    grad_cur: Vec<u8>,
    grad_bg: Vec<u8>,
    small: Vec<u8>,
    sums: Vec<u32>,
    /// Refinement samples: (pixel index, background gradient, 4x4 cell).
    samples: Vec<(u32, u16, u8)>,
}

/// The speckle map: per block of `block` x `block` pixels (`bw` x `bh` blocks), the
/// fraction of it covered by components under `min_area`, averaged over recent frames
/// (1/8 per 200 ms: `rate` per frame), and this frame's sums.
pub(super) struct Speckle {
    factor: f32,
    rate: f32,
    block: usize,
    bw: usize,
    map: Vec<f32>,
    now: Vec<f32>,
}

/// Changed pixels and the masks made of them.
struct Masks {
    /// Changed pixels (0/1) before and after dilation.
    fg: Vec<u8>,
    dilated: Vec<u8>,
    /// Rows of `fg`, `hdil` and `dilated` that may hold a set pixel: motion is sparse,
    /// so dilation and labelling skip the empty rows.
    fg_rows: Vec<bool>,
    hdil_rows: Vec<bool>,
    dilated_rows: Vec<bool>,
    /// Dilation scratch: the horizontal pass.
    hdil: Vec<u8>,
    /// This frame labelled `dilated`.
    ran: bool,
    /// The dilated masks (with their rows, and whether that frame labelled one) of the
    /// last `past.len()` frames, oldest first: 200 ms back (one frame at 5 fps). A blob
    /// that does not overlap the oldest appeared from nothing within 200 ms; looking
    /// back by time rather than by one frame keeps that test the same at any rate (at
    /// 15 fps a glint on water is still there one frame later).
    past: VecDeque<(Vec<u8>, Vec<bool>, bool)>,
    /// Rows of `fg` holding light candidates (value 3) this frame.
    light_rows: Vec<u32>,
}

impl Detector {
    /// A detector for `width` x `height` grey frames arriving `fps` a second; mask
    /// polygons are rasterised here, and the settings given as time or per 200 ms become
    /// frames and per-frame weights at that rate.
    pub fn new(cfg: &MotionConfig, width: u32, height: u32, fps: u32) -> Self {
        let (w, h) = (width.max(1) as usize, height.max(1) as usize);
        let n = w * h;
        // 8 px at 320 wide: a few specks per block.
        let block = (w / 40).max(4);
        let frame_area = n as f64;
        let active = mask::rasterise(&cfg.masks, w as u32, h as u32);
        let mut cell_x = [0usize; GRID + 1];
        for (i, c) in cell_x.iter_mut().enumerate() {
            *c = i * w / GRID;
        }
        let mut cell_active = [0u32; GRID * GRID];
        for (y, row) in active.chunks_exact(w).enumerate() {
            let cy = y * GRID / h;
            for cx in 0..GRID {
                cell_active[cy * GRID + cx] += count(&row[cell_x[cx]..cell_x[cx + 1]]);
            }
        }
        let cells_eligible = (0..GRID * GRID)
            .filter(|&i| {
                let cy = i / GRID;
                let rows = (cy + 1) * h / GRID - cy * h / GRID;
                let cols = cell_x[i % GRID + 1] - cell_x[i % GRID];
                cell_active[i] > 0 && 2 * cell_active[i] as usize >= rows * cols
            })
            .count() as u32;
        let speckle_blocks = w.div_ceil(block) * h.div_ceil(block);
        Self {
            w,
            h,
            fps,
            params: Params {
                threshold: cfg.threshold.get().clamp(1, 255) as u8,
                rate: ((per_frame(cfg.background_rate.get(), fps) * 65536.0).round() as u32)
                    .clamp(1, 65535) as u16
                    | 1,
                blur: cfg.blur,
                radius: cfg.dilate_radius.as_usize(),
                min_area: (cfg.min_area.get() * frame_area).ceil() as u32,
                max_area: (cfg.max_area.get() * frame_area).floor() as u32,
                global_change: cfg.global_change.get() as f32,
                global_spread: cfg.global_spread.get() as f32,
                cell_change: cfg.cell_change.get() as f32,
                noise_factor: cfg.noise_factor.get() as u16,
                noise_rate: ((per_frame(NOISE_RATE, fps) * 65536.0).round() as u32).clamp(1, 65535)
                    as u16,
                shadow: (cfg.shadow_ratio.get() * 256.0).round().clamp(0.0, 256.0) as u16,
                light_texture: (cfg.light_texture.get() < 1.0 && cfg.shadow_ratio.get() > 0.0)
                    .then_some(cfg.light_texture.get() as f32),
                exposure: cfg.follow_exposure,
            },
            grid: Grid {
                active_count: count(&active),
                active,
                cell_x,
                cell_active,
                cell_changed: [0; GRID * GRID],
                cells_eligible,
            },
            prep: Prepared {
                contrast: cfg
                    .contrast
                    .enabled
                    .then(|| Contrast::new(&cfg.contrast, fps)),
                stretched: if cfg.contrast.enabled {
                    vec![0; n]
                } else {
                    Vec::new()
                },
                cur: vec![0; n],
                vsum: vec![0; w + 2],
            },
            bg: Background {
                mean: vec![0; n],
                seeded: false,
                dev: vec![0; n],
                warmup_left: 0,
                warmup_total: cfg.warmup_frames_at(fps),
                ratios: Vec::new(),
                gain_at: None,
                row: vec![0; w],
            },
            shake: Shake {
                radius: cfg.shake_radius.as_usize().min(w / 4).min(h / 4),
                shaking: false,
                coarse: (w / 80).max(1),
                grad_cur: Vec::new(),
                grad_bg: Vec::new(),
                small: Vec::new(),
                sums: Vec::new(),
                samples: Vec::new(),
            },
            speckle: Speckle {
                factor: cfg.speckle_factor.get() as f32,
                rate: per_frame(NOISE_RATE, fps) as f32,
                block,
                bw: w.div_ceil(block),
                map: vec![0.0; speckle_blocks],
                now: vec![0.0; speckle_blocks],
            },
            masks: Masks {
                fg: vec![0; n],
                dilated: vec![0; n],
                fg_rows: vec![false; h],
                hdil_rows: vec![false; h],
                dilated_rows: vec![false; h],
                hdil: vec![0; n],
                ran: false,
                past: (0..frames_in(LOOK_BACK, fps).max(1))
                    .map(|_| (vec![0; n], vec![false; h], false))
                    .collect(),
                light_rows: Vec::with_capacity(h),
            },
            labeler: Labeler::default(),
            components: Vec::new(),
            out: FrameMotion::default(),
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        }
    }

    /// Runs the portable step even where the CPU has AVX2, for the benchmark to time
    /// the build an ARM box runs (NEON through the same portable code).
    #[doc(hidden)]
    pub fn use_portable_step(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            self.avx2 = false;
        }
    }

    pub fn width(&self) -> u32 {
        self.w as u32
    }
    pub fn height(&self) -> u32 {
        self.h as u32
    }
    /// The analysis rate the detector was built for.
    pub fn fps(&self) -> u32 {
        self.fps
    }
    /// 1 where change counts, 0 in masked areas (for debug images).
    pub fn active(&self) -> &[u8] {
        &self.grid.active
    }
    /// Changed pixels (0/1) of the last frame, before dilation.
    pub fn changed(&self) -> &[u8] {
        &self.masks.fg
    }
    /// The last result.
    pub fn last(&self) -> &FrameMotion {
        &self.out
    }

    /// Runs one frame. `grey` holds `width * height` bytes, rows without padding.
    pub fn process(&mut self, grey: &[u8]) -> Result<&FrameMotion, MotionError> {
        if grey.len() != self.w * self.h {
            return Err(MotionError::FrameSize {
                width: self.w as u32,
                height: self.h as u32,
                got: grey.len(),
            });
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is only set when the CPU reports AVX2 (see `new`).
            unsafe { self.step_avx2(grey) };
            return Ok(&self.out);
        }
        self.step(grey);
        Ok(&self.out)
    }

    /// The step compiled for AVX2: the per-pixel loops below are inlined into it and
    /// vectorised 16 lanes of u16 wide instead of SSE2's 8. Integer arithmetic only,
    /// so the result is the same bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn step_avx2(&mut self, grey: &[u8]) {
        self.step(grey)
    }

    #[inline(always)]
    fn step(&mut self, grey: &[u8]) {
        self.out.clear();
        self.bg.gain_at = None;
        self.masks.rotate();
        let reset_contrast = !self.bg.seeded;
        self.stretch(grey, reset_contrast);
        self.smooth(grey);
        if !self.bg.seeded {
            self.reseed();
            return;
        }
        let shift = if self.shake.shaking || self.view_may_have_moved() {
            self.estimate_shift()
        } else {
            (0, 0)
        };
        self.shake.shaking = shift != (0, 0);
        self.out.shift = (shift.0 as i32, shift.1 as i32);
        let (changed, differ) = self.difference(shift);
        // The global guard counts shadows too: a whole scene that darkens is light.
        self.out.changed_fraction = if self.grid.active_count == 0 {
            0.0
        } else {
            differ as f32 / self.grid.active_count as f32
        };
        self.out.spread = self.grid.spread(self.params.cell_change);
        if self.bg.warmup_left > 0 {
            self.bg.warmup_left -= 1;
            self.out.learning = true;
        }
        if self.out.changed_fraction > self.params.global_change
            || (self.params.global_spread < 1.0 && self.out.spread >= self.params.global_spread)
        {
            self.out.global_change = true;
            if self.prep.contrast.is_some() {
                self.stretch(grey, true);
                self.smooth(grey);
            }
            self.reseed();
            return;
        }
        if changed > 0 {
            self.label();
            self.collect_boxes(shift);
        }
        self.speckle.learn();
    }

    /// Dilates the changed pixels (a plain copy at radius 0) and labels the blobs.
    #[inline(always)]
    fn label(&mut self) {
        let m = &mut self.masks;
        dilate(
            Plane {
                px: &m.fg,
                rows: &m.fg_rows,
            },
            PlaneMut {
                px: &mut m.hdil,
                rows: &mut m.hdil_rows,
            },
            PlaneMut {
                px: &mut m.dilated,
                rows: &mut m.dilated_rows,
            },
            self.w,
            self.params.radius,
        );
        let previous = m
            .past
            .front()
            .and_then(|(px, _, ran)| ran.then_some(px.as_slice()));
        self.labeler.label(
            &m.dilated,
            self.w,
            self.h,
            &m.dilated_rows,
            previous,
            &mut self.components,
        );
        m.ran = true;
    }

    /// The labelled blobs that count, as boxes in frame coordinates; the small ones and
    /// the flashes feed the speckle map.
    #[inline(always)]
    fn collect_boxes(&mut self, shift: (isize, isize)) {
        let p = &self.params;
        let (wmax, hmax) = (self.w as u32 - 1, self.h as u32 - 1);
        for c in &self.components {
            let speck = c.area < p.min_area;
            // A flash: a small blob (under FLASH_AREA x `min_area`) that mostly lies
            // outside the mask of 200 ms before, so it neither persisted nor travelled
            // from a blob next to it: a glint on water, a raindrop, a flake. Objects
            // overlap their last position; far, small ones move little in the image.
            let flash = c.area < FLASH_AREA * p.min_area && 2 * c.overlap < c.area;
            if self.speckle.on() && (speck || flash) {
                self.speckle.note(c);
            }
            if speck || c.area > p.max_area {
                continue;
            }
            if self.speckle.on() && (c.area as f32 * self.speckle.keep(c)) < p.min_area as f32 {
                continue;
            }
            self.out
                .boxes
                .push(shrink(c, p.radius as u32, (wmax, hmax), shift));
        }
    }

    /// Updates the contrast table from `grey` and writes the stretched frame.
    fn stretch(&mut self, grey: &[u8], reset: bool) {
        if let Some(c) = &mut self.prep.contrast {
            c.update(grey, self.w, reset);
            for (o, &v) in self.prep.stretched.iter_mut().zip(grey) {
                *o = c.lut[v as usize];
            }
        }
    }

    /// Blurs (or copies) the detector's input into `cur`.
    #[inline(always)]
    fn smooth(&mut self, grey: &[u8]) {
        let (w, h, blur) = (self.w, self.h, self.params.blur);
        let mut vsum = std::mem::take(&mut self.prep.vsum);
        let mut cur = std::mem::take(&mut self.prep.cur);
        let src = self.prep.source(grey);
        for (y, out) in cur.chunks_exact_mut(w).enumerate() {
            if blur {
                vertical(src, w, h, y, &mut vsum);
                for (o, v) in out.iter_mut().zip(horizontal(&vsum, w)) {
                    *o = v as u8;
                }
            } else {
                out.copy_from_slice(&src[y * w..(y + 1) * w]);
            }
        }
        (self.prep.vsum, self.prep.cur) = (vsum, cur);
    }

    #[inline(always)]
    fn reseed(&mut self) {
        for (b, &c) in self.bg.mean.iter_mut().zip(&self.prep.cur) {
            *b = (c as u16) << FRAC;
        }
        if !self.bg.seeded {
            self.masks.fg.fill(0);
            self.masks.fg_rows.fill(false);
            self.bg.dev.fill(0);
            self.bg.warmup_left = self.bg.warmup_total;
        }
        // On a global change the changed pixels stay, for debug images; what the scene
        // taught about its noise stays too (rain and leaves go on after a light change).
        self.bg.seeded = true;
        self.out.reseeded = true;
    }

    /// Difference, threshold, mask and background update, row by row, comparing the
    /// background at (x, y) with the frame at (x + dx, y + dy); pixels whose partner
    /// lies outside the frame neither change nor learn. Returns the number of changed
    /// pixels and of those over the threshold (shadows included), and fills the
    /// per-cell counts.
    #[inline(always)]
    fn difference(&mut self, (dx, dy): (isize, isize)) -> (u32, u32) {
        let (w, h) = (self.w, self.h);
        // During warm-up the noise level is the plain mean of the differences so far:
        // frame k of the warm-up weighs 1/k.
        let warm_k = self.bg.warmup_total - self.bg.warmup_left + 1;
        let p = RowParams {
            warm: if self.bg.warmup_left > 0 {
                (65536 / warm_k).min(65535) as u16
            } else {
                0
            },
            light: self.params.light_texture.is_some(),
            thr: self.params.threshold as u16,
            factor: self.params.noise_factor,
            shadow: self.params.shadow,
            rate: self.params.rate,
            noise_rate: self.params.noise_rate,
            gain: if self.params.exposure {
                self.gain_cached((dx, dy))
            } else {
                1 << GAIN_BITS
            },
        };
        // When shifted, the edge pixels of either frame (blurred with mirrored
        // neighbours) are not compared with inner ones.
        let (ex, ey) = (isize::from(dx != 0), isize::from(dy != 0));
        let (x0, x1) = (
            (-dx).max(0).max(ex - dx).max(ex) as usize,
            (w as isize - dx)
                .min(w as isize)
                .min(w as isize - ex - dx)
                .min(w as isize - ex)
                .max(0) as usize,
        );
        let mut total = 0u32;
        let mut differ = 0u32;
        let mut cells = [0u32; GRID * GRID];
        self.masks.light_rows.clear();
        let mut bv_row = std::mem::take(&mut self.bg.row);
        let rows = self
            .bg
            .mean
            .chunks_exact_mut(w)
            .zip(self.masks.fg.chunks_exact_mut(w))
            .zip(self.bg.dev.chunks_exact_mut(w))
            .zip(self.grid.active.chunks_exact(w));
        for (y, (((bg_row, fg_row), dev_row), act_row)) in rows.enumerate() {
            let ys = y as isize + dy;
            let edge = ey != 0 && (y == 0 || y == h - 1 || ys == 0 || ys == h as isize - 1);
            if ys < 0 || ys >= h as isize || x0 >= x1 || edge {
                if self.masks.fg_rows[y] {
                    fg_row.fill(0);
                }
                self.masks.fg_rows[y] = false;
                continue;
            }
            let ys = ys as usize;
            let cur = &self.prep.cur
                [ys * w + (x0 as isize + dx) as usize..ys * w + (x1 as isize + dx) as usize];
            fg_row[..x0].fill(0);
            fg_row[x1..].fill(0);
            let bvs = &mut bv_row[..x1 - x0];
            let args = (
                &mut bg_row[x0..x1],
                &mut fg_row[x0..x1],
                &mut dev_row[x0..x1],
                &act_row[x0..x1],
                cur,
                p,
            );
            let d = if p.warm > 0 {
                update_row::<true>(args.0, args.1, args.2, args.3, args.4, bvs, args.5)
            } else {
                update_row::<false>(args.0, args.1, args.2, args.3, args.4, bvs, args.5)
            };
            differ += d;
            // Most rows have nothing over the threshold: they need neither the shadow
            // and light tests nor the cell counts.
            if d == 0 {
                self.masks.fg_rows[y] = false;
                continue;
            }
            if p.shadow > 0 && settle_row(&mut fg_row[x0..x1], cur, bvs, p) > 0 {
                self.masks.light_rows.push(y as u32);
            }
            let cy = y * GRID / h;
            let mut in_row = 0;
            for cx in 0..GRID {
                let n = count(&fg_row[self.grid.cell_x[cx]..self.grid.cell_x[cx + 1]]);
                cells[cy * GRID + cx] += n;
                in_row += n;
            }
            self.masks.fg_rows[y] = in_row > 0;
            total += in_row;
        }
        self.bg.row = bv_row;
        if let Some(t) = self.params.light_texture {
            total -= self.light_pass((dx, dy), (x0, x1), p.gain, t, &mut cells);
        }
        self.grid.cell_changed = cells;
        (total, differ)
    }
}

/// Dilation grew a blob's box by exactly `r` on each side (unless clipped by the frame
/// edge): shrinks it back to the changed pixels, and moves it from background to frame
/// coordinates.
fn shrink(c: &Component, r: u32, (wmax, hmax): (u32, u32), shift: (isize, isize)) -> MotionBox {
    let (x0, y0) = ((c.x0 + r).min(c.x1), (c.y0 + r).min(c.y1));
    let x0 = if c.x0 == 0 { 0 } else { x0 };
    let y0 = if c.y0 == 0 { 0 } else { y0 };
    let x1 = if c.x1 == wmax {
        wmax
    } else {
        c.x1.saturating_sub(r).max(x0)
    };
    let y1 = if c.y1 == hmax {
        hmax
    } else {
        c.y1.saturating_sub(r).max(y0)
    };
    let (sx, sy) = (shift.0 as i64, shift.1 as i64);
    let fx0 = (x0 as i64 + sx).clamp(0, wmax as i64) as u32;
    let fy0 = (y0 as i64 + sy).clamp(0, hmax as i64) as u32;
    let fx1 = (x1 as i64 + sx).clamp(fx0 as i64, wmax as i64) as u32;
    let fy1 = (y1 as i64 + sy).clamp(fy0 as i64, hmax as i64) as u32;
    MotionBox {
        x: fx0,
        y: fy0,
        w: fx1 - fx0 + 1,
        h: fy1 - fy0 + 1,
    }
}

impl Grid {
    /// The share of eligible cells with at least `cell_change` of their active pixels
    /// changed.
    fn spread(&self, cell_change: f32) -> f32 {
        if self.cells_eligible == 0 {
            return 0.0;
        }
        let on = self
            .cell_changed
            .iter()
            .zip(&self.cell_active)
            .filter(|(&c, &a)| a > 0 && c as f32 >= cell_change * a as f32 && c > 0)
            .count();
        (on as f32 / self.cells_eligible as f32).min(1.0)
    }
}

impl Prepared {
    /// The frame the detector works on: stretched when contrast is on.
    fn source<'a>(&'a self, grey: &'a [u8]) -> &'a [u8] {
        if self.contrast.is_some() {
            &self.stretched
        } else {
            grey
        }
    }
}

impl Masks {
    /// The last frame's mask joins the past; the oldest, no longer needed, lends its
    /// buffers to this frame's.
    fn rotate(&mut self) {
        let last = (
            std::mem::take(&mut self.dilated),
            std::mem::take(&mut self.dilated_rows),
            std::mem::replace(&mut self.ran, false),
        );
        self.past.push_back(last);
        if let Some((px, rows, _)) = self.past.pop_front() {
            (self.dilated, self.dilated_rows) = (px, rows);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
