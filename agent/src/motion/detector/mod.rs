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

mod rows;

use rows::{
    count, dilate, horizontal, settle_row, update_row, vertical, Plane, PlaneMut, RowParams,
};

mod boxes;

pub use boxes::{FrameMotion, MotionBox, NormBox};

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
    /// 1 where change counts, 0 in masked areas.
    active: Vec<u8>,
    active_count: u32,
    /// Column where each grid cell starts (GRID + 1 entries) and active pixels per cell.
    cell_x: [usize; GRID + 1],
    cell_active: [u32; GRID * GRID],
    cell_changed: [u32; GRID * GRID],
    /// Cells that are at least half unmasked: the ones the spread guard looks at.
    cells_eligible: u32,
    contrast: Option<Contrast>,
    /// Frame after the contrast table (only used with contrast on).
    stretched: Vec<u8>,
    /// Running-average background, grey << FRAC.
    bg: Vec<u16>,
    seeded: bool,
    /// Follow the camera's exposure: the background is scaled by the frame's gain.
    exposure: bool,
    /// Ratio scratch for the gain estimate.
    ratios: Vec<u32>,
    /// The frame after blur (and contrast), the one compared with the background.
    cur: Vec<u8>,
    /// Per-pixel recent mean difference from the background, in 1/16 grey levels,
    /// learnt where the pixel is quiet or flips (leaves, water, rain): where the scene
    /// always moves, the threshold rises to `noise_factor` times it.
    dev: Vec<u16>,
    noise_factor: u16,
    /// Weight of a new difference in `dev`, in 1/65536: 1/8 per 200 ms.
    noise_rate: u16,
    /// Warm-up frames still to learn, and how many were learnt (for the plain mean).
    warmup_left: u32,
    warmup_total: u32,
    /// Light test: least 3x3 correlation with the background (None: off).
    light_texture: Option<f32>,
    /// Rows of `fg` holding light candidates (value 3) this frame.
    light_rows: Vec<u32>,
    /// Speckle map: per block of `block` x `block` pixels (`bw` x `bh` blocks), the
    /// fraction of it covered by components under `min_area`, averaged over recent
    /// frames (1/8 per 200 ms: `speckle_rate` per frame), and this frame's sums.
    speckle: f32,
    speckle_rate: f32,
    block: usize,
    bw: usize,
    speckle_map: Vec<f32>,
    speckle_now: Vec<f32>,
    /// Shadow test: a pixel darker than the background, but at least this fraction of
    /// it (in 1/256), is a shadow, not a change (0: off).
    shadow: u16,
    /// Largest camera shake compensated, in analysis pixels (0: off).
    shake: usize,
    /// The last frame was shifted: the camera is shaking, search again.
    shaking: bool,
    /// The exposure gain already measured this frame, and at which shift.
    gain_at: Option<((isize, isize), u16)>,
    /// Shake estimate scratch: coarse (1/`coarse` size) gradient images of the frame
    /// and of the background, and a coarse row of sums.
    coarse: usize,
    grad_cur: Vec<u8>,
    grad_bg: Vec<u8>,
    small: Vec<u8>,
    sums: Vec<u32>,
    /// Shake refinement samples: (pixel index, background gradient, 4x4 cell).
    samples: Vec<(u32, u16, u8)>,
    /// Changed pixels (0/1) before and after dilation.
    fg: Vec<u8>,
    dilated: Vec<u8>,
    /// This frame labelled `dilated`.
    mask_ran: bool,
    /// The dilated masks (with their rows, and whether that frame labelled one) of the
    /// last `past.len()` frames, oldest first: 200 ms back (one frame at 5 fps). A blob
    /// that does not overlap the oldest appeared from nothing within 200 ms; looking
    /// back by time rather than by one frame keeps that test the same at any rate (at
    /// 15 fps a glint on water is still there one frame later).
    past: VecDeque<(Vec<u8>, Vec<bool>, bool)>,
    /// Rows of `fg`, `hdil` and `dilated` that may hold a set pixel: motion is sparse,
    /// so dilation and labelling skip the empty rows.
    fg_rows: Vec<bool>,
    hdil_rows: Vec<bool>,
    dilated_rows: Vec<bool>,
    /// Row scratch: vertical blur sums; dilation rows; the background at the frame's
    /// exposure (for the shadow and light tests of rows with change).
    vsum: Vec<u16>,
    bv_row: Vec<u16>,
    hdil: Vec<u8>,
    labeler: Labeler,
    components: Vec<Component>,
    out: FrameMotion,
    /// The CPU has AVX2: `process` runs the step compiled for it.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
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
        Self {
            w,
            h,
            fps,
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
            active_count: count(&active),
            active,
            cell_x,
            cell_active,
            cell_changed: [0; GRID * GRID],
            cells_eligible,
            contrast: cfg
                .contrast
                .enabled
                .then(|| Contrast::new(&cfg.contrast, fps)),
            stretched: if cfg.contrast.enabled {
                vec![0; n]
            } else {
                Vec::new()
            },
            bg: vec![0; n],
            seeded: false,
            exposure: cfg.follow_exposure,
            ratios: Vec::new(),
            cur: vec![0; n],
            dev: vec![0; n],
            noise_factor: cfg.noise_factor.get() as u16,
            noise_rate: ((per_frame(NOISE_RATE, fps) * 65536.0).round() as u32).clamp(1, 65535)
                as u16,
            warmup_left: 0,
            warmup_total: cfg.warmup_frames_at(fps),
            light_texture: (cfg.light_texture.get() < 1.0 && cfg.shadow_ratio.get() > 0.0)
                .then_some(cfg.light_texture.get() as f32),
            light_rows: Vec::with_capacity(h),
            speckle: cfg.speckle_factor.get() as f32,
            speckle_rate: per_frame(NOISE_RATE, fps) as f32,
            block,
            bw: w.div_ceil(block),
            speckle_map: vec![0.0; w.div_ceil(block) * h.div_ceil(block)],
            speckle_now: vec![0.0; w.div_ceil(block) * h.div_ceil(block)],
            shadow: (cfg.shadow_ratio.get() * 256.0).round().clamp(0.0, 256.0) as u16,
            shake: cfg.shake_radius.as_usize().min(w / 4).min(h / 4),
            shaking: false,
            gain_at: None,
            coarse: (w / 80).max(1),
            grad_cur: Vec::new(),
            grad_bg: Vec::new(),
            small: Vec::new(),
            sums: Vec::new(),
            samples: Vec::new(),
            fg: vec![0; n],
            dilated: vec![0; n],
            mask_ran: false,
            past: (0..frames_in(LOOK_BACK, fps).max(1))
                .map(|_| (vec![0; n], vec![false; h], false))
                .collect(),
            fg_rows: vec![false; h],
            hdil_rows: vec![false; h],
            dilated_rows: vec![false; h],
            vsum: vec![0; w + 2],
            bv_row: vec![0; w],
            hdil: vec![0; n],
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
        &self.active
    }
    /// Changed pixels (0/1) of the last frame, before dilation.
    pub fn changed(&self) -> &[u8] {
        &self.fg
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
        self.out.boxes.clear();
        self.out.global_change = false;
        self.out.reseeded = false;
        self.out.changed_fraction = 0.0;
        self.out.spread = 0.0;
        self.out.shift = (0, 0);
        self.out.learning = false;
        self.gain_at = None;
        // The last frame's mask joins the past; the oldest, no longer needed, lends its
        // buffers to this frame's.
        let last = (
            std::mem::take(&mut self.dilated),
            std::mem::take(&mut self.dilated_rows),
            std::mem::replace(&mut self.mask_ran, false),
        );
        self.past.push_back(last);
        if let Some((px, rows, _)) = self.past.pop_front() {
            (self.dilated, self.dilated_rows) = (px, rows);
        }
        let reset_contrast = !self.seeded;
        self.stretch(grey, reset_contrast);
        self.smooth(grey);
        if !self.seeded {
            self.reseed();
            return;
        }
        let shift = if self.shaking || self.view_may_have_moved() {
            self.estimate_shift()
        } else {
            (0, 0)
        };
        self.shaking = shift != (0, 0);
        self.out.shift = (shift.0 as i32, shift.1 as i32);
        let (changed, differ) = self.difference(shift);
        // The global guard counts shadows too: a whole scene that darkens is light.
        self.out.changed_fraction = if self.active_count == 0 {
            0.0
        } else {
            differ as f32 / self.active_count as f32
        };
        self.out.spread = self.spread();
        if self.warmup_left > 0 {
            self.warmup_left -= 1;
            self.out.learning = true;
        }
        if self.out.changed_fraction > self.global_change
            || (self.global_spread < 1.0 && self.out.spread >= self.global_spread)
        {
            self.out.global_change = true;
            if self.contrast.is_some() {
                self.stretch(grey, true);
                self.smooth(grey);
            }
            self.reseed();
            return;
        }
        if changed == 0 {
            self.learn_speckle();
            return;
        }
        // Dilation (a plain copy at radius 0).
        dilate(
            Plane {
                px: &self.fg,
                rows: &self.fg_rows,
            },
            PlaneMut {
                px: &mut self.hdil,
                rows: &mut self.hdil_rows,
            },
            PlaneMut {
                px: &mut self.dilated,
                rows: &mut self.dilated_rows,
            },
            self.w,
            self.radius,
        );
        let previous = self
            .past
            .front()
            .and_then(|(px, _, ran)| ran.then_some(px.as_slice()));
        self.labeler.label(
            &self.dilated,
            self.w,
            self.h,
            &self.dilated_rows,
            previous,
            &mut self.components,
        );
        self.mask_ran = true;
        let r = self.radius as u32;
        let (wmax, hmax) = (self.w as u32 - 1, self.h as u32 - 1);
        let (block, bw) = (self.block as u32, self.bw);
        for c in &self.components {
            let speck = c.area < self.min_area;
            // A flash: a small blob (under FLASH_AREA x `min_area`) that mostly lies
            // outside the mask of 200 ms before, so it neither persisted nor travelled
            // from a blob next to it: a glint on water, a raindrop, a flake. Objects
            // overlap their last position; far, small ones move little in the image.
            let flash = c.area < FLASH_AREA * self.min_area && 2 * c.overlap < c.area;
            if self.speckle > 0.0 && (speck || flash) {
                // Counted where its middle is.
                let (bx, by) = ((c.x0 + c.x1) / 2 / block, (c.y0 + c.y1) / 2 / block);
                self.speckle_now[by as usize * bw + bx as usize] += c.area as f32;
            }
            if speck {
                continue;
            }
            if c.area > self.max_area {
                continue;
            }
            if self.speckle > 0.0 {
                let (mut sum, mut n) = (0.0f32, 0u32);
                for by in c.y0 / block..=c.y1 / block {
                    let row = &self.speckle_map[by as usize * bw..(by as usize + 1) * bw];
                    sum += row[(c.x0 / block) as usize..=(c.x1 / block) as usize]
                        .iter()
                        .sum::<f32>();
                    n += c.x1 / block - c.x0 / block + 1;
                }
                let keep = 1.0 - (self.speckle * sum / n as f32).min(0.9);
                if (c.area as f32 * keep) < self.min_area as f32 {
                    continue;
                }
            }
            // Dilation grew the box by exactly r on each side (unless clipped by the
            // frame edge): shrink it back to the changed pixels.
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
            // Background coordinates back to frame coordinates.
            let (sx, sy) = (shift.0 as i64, shift.1 as i64);
            let fx0 = (x0 as i64 + sx).clamp(0, wmax as i64) as u32;
            let fy0 = (y0 as i64 + sy).clamp(0, hmax as i64) as u32;
            let fx1 = (x1 as i64 + sx).clamp(fx0 as i64, wmax as i64) as u32;
            let fy1 = (y1 as i64 + sy).clamp(fy0 as i64, hmax as i64) as u32;
            self.out.boxes.push(MotionBox {
                x: fx0,
                y: fy0,
                w: fx1 - fx0 + 1,
                h: fy1 - fy0 + 1,
            });
        }
        self.learn_speckle();
    }

    /// Folds this frame's specks into the speckle map (1/8 per 200 ms) and clears them.
    #[inline(always)]
    fn learn_speckle(&mut self) {
        if self.speckle == 0.0 {
            return;
        }
        let per_px = 1.0 / (self.block * self.block) as f32;
        let rate = self.speckle_rate;
        for (m, now) in self.speckle_map.iter_mut().zip(&mut self.speckle_now) {
            *m += (*now * per_px - *m) * rate;
            *now = 0.0;
        }
    }

    /// Updates the contrast table from `grey` and writes the stretched frame.
    fn stretch(&mut self, grey: &[u8], reset: bool) {
        if let Some(c) = &mut self.contrast {
            c.update(grey, self.w, reset);
            for (o, &v) in self.stretched.iter_mut().zip(grey) {
                *o = c.lut[v as usize];
            }
        }
    }

    /// The frame the detector works on: stretched when contrast is on.
    fn input<'a>(&'a self, grey: &'a [u8]) -> &'a [u8] {
        if self.contrast.is_some() {
            &self.stretched
        } else {
            grey
        }
    }

    /// Blurs (or copies) the detector's input into `cur`.
    #[inline(always)]
    fn smooth(&mut self, grey: &[u8]) {
        let (w, h, blur) = (self.w, self.h, self.blur);
        let mut vsum = std::mem::take(&mut self.vsum);
        let mut cur = std::mem::take(&mut self.cur);
        let src = self.input(grey);
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
        (self.vsum, self.cur) = (vsum, cur);
    }

    #[inline(always)]
    fn reseed(&mut self) {
        for (b, &c) in self.bg.iter_mut().zip(&self.cur) {
            *b = (c as u16) << FRAC;
        }
        if !self.seeded {
            self.fg.fill(0);
            self.fg_rows.fill(false);
            self.dev.fill(0);
            self.warmup_left = self.warmup_total;
        }
        // On a global change the changed pixels stay, for debug images; what the scene
        // taught about its noise stays too (rain and leaves go on after a light change).
        self.seeded = true;
        self.out.reseeded = true;
    }

    /// The whole-pixel shift (dx, dy), within the shake radius, that best aligns the
    /// frame with the background; (0, 0) unless it fits clearly better. A search over
    /// coarse gradient images (gradients ignore the exposure changes that come with a
    /// shaking view) proposes it when it lowers their difference by a tenth; a search
    /// of +-2 px around it (or around no shift) on the gradients of a sparse sample of
    /// full-size pixels refines it, and it must fit better in most parts of the view.
    fn estimate_shift(&mut self) -> (isize, isize) {
        if self.shake == 0 {
            return (0, 0);
        }
        let (k, w, h) = (self.coarse, self.w, self.h);
        let (cw, ch) = (w / k, h / k);
        let r = self.shake.div_ceil(k).min(cw / 4).min(ch / 4);
        if r == 0 || cw < 4 || ch < 4 {
            return (0, 0);
        }
        let mut small = std::mem::take(&mut self.small);
        let mut sums = std::mem::take(&mut self.sums);
        let mut g = std::mem::take(&mut self.grad_cur);
        let mut gb = std::mem::take(&mut self.grad_bg);
        let ri = r as isize;
        let (cur, bg) = (&self.cur, &self.bg);
        let n = cw * k;
        let cur_row = |y: usize, acc: &mut [u32]| {
            for (a, &v) in acc.iter_mut().zip(&cur[y * w..y * w + n]) {
                *a += v as u32;
            }
        };
        downscale(cur_row, k, cw, ch, &mut sums, &mut small);
        gradient(&small, cw, ch, &mut g);
        let bg_row = |y: usize, acc: &mut [u32]| {
            for (a, &v) in acc.iter_mut().zip(&bg[y * w..y * w + n]) {
                *a += (v >> FRAC) as u32;
            }
        };
        downscale(bg_row, k, cw, ch, &mut sums, &mut small);
        gradient(&small, cw, ch, &mut gb);
        let (gw, gh) = (cw - 1, ch - 1);
        let sad_at = |dx: isize, dy: isize| -> u64 {
            let xs = (r as isize + dx) as usize;
            (r..gh - r)
                .map(|y| {
                    let yy = (y as isize + dy) as usize;
                    let a = &gb[y * gw + r..y * gw + gw - r];
                    let c = &g[yy * gw + xs..yy * gw + xs + (gw - 2 * r)];
                    a.iter()
                        .zip(c)
                        .map(|(&p, &q)| p.abs_diff(q) as u32)
                        .sum::<u32>() as u64
                })
                .sum()
        };
        // Every other offset, then the neighbours of the best: a third of the work of
        // a full search, and gradients of box-averaged images are smooth enough.
        let still = sad_at(0, 0);
        let mut best = (still, 0isize, 0isize);
        let consider = |dx: isize, dy: isize, best: &mut (u64, isize, isize)| {
            if dx.abs() > ri || dy.abs() > ri || (dx, dy) == (0, 0) {
                return;
            }
            let sad = sad_at(dx, dy);
            // No shift wins ties, then the smaller one.
            if (sad, dx.abs() + dy.abs()) < (best.0, best.1.abs() + best.2.abs()) {
                *best = (sad, dx, dy);
            }
        };
        for dy in (-ri..=ri).step_by(2) {
            for dx in (-ri..=ri).step_by(2) {
                consider(dx, dy, &mut best);
            }
        }
        let (cx, cy) = (best.1, best.2);
        for dy in -1..=1 {
            for dx in -1..=1 {
                consider(cx + dx, cy + dy, &mut best);
            }
        }
        (self.small, self.sums, self.grad_cur, self.grad_bg) = (small, sums, g, gb);
        let (mut bx, mut by) = if 10 * best.0 < 9 * still {
            (best.1 * k as isize, best.2 * k as isize)
        } else {
            (0, 0)
        };
        let lim = self.shake as isize;
        self.pick_samples();
        let still = self.sample_sad((0, 0));
        let total = |c: &[u64; 16]| c.iter().sum::<u64>();
        let mut best_sad = if (bx, by) == (0, 0) {
            total(&still)
        } else {
            total(&self.sample_sad((bx, by)))
        };
        // Around no shift, only +-1: the coarse search would have seen more.
        let steps: &[isize] = if (bx, by) == (0, 0) { &[1] } else { &[2, 1] };
        for &step in steps {
            let (cx, cy) = (bx, by);
            for dy in [-step, 0, step] {
                for dx in [-step, 0, step] {
                    let (x, y) = (cx + dx, cy + dy);
                    if (dx, dy) == (0, 0) || x.abs() > lim || y.abs() > lim {
                        continue;
                    }
                    let s = total(&self.sample_sad((x, y)));
                    if s < best_sad {
                        (best_sad, bx, by) = (s, x, y);
                    }
                }
            }
        }
        if (bx, by) == (0, 0) {
            return (0, 0);
        }
        // A shaken camera moves the whole view: the shift must fit better in most
        // cells of the grid and worse in few. An object's edges on a plain scene
        // favour a shift only in the cells it covers.
        let moved = self.sample_sad((bx, by));
        let better = moved
            .iter()
            .zip(&still)
            .filter(|(m, s)| **m * 10 < **s * 8)
            .count();
        let worse = moved
            .iter()
            .zip(&still)
            .filter(|(m, s)| **m * 10 > **s * 12)
            .count();
        if better >= 8 && worse <= 2 {
            (bx, by)
        } else {
            (0, 0)
        }
    }

    /// The camera's exposure change against the background, in 1/2^GAIN_BITS: the
    /// median of frame / background over a sparse grid of about 1000 pixels (a median,
    /// so that an object covering a third of the view does not move it). Dark pixels
    /// say little and are left out; 1 when too few are left.
    fn gain(&mut self, (dx, dy): (isize, isize)) -> u16 {
        let (w, h, r) = (self.w, self.h, self.shake);
        let inner = (w - 2 * r) * (h - 2 * r);
        let step = ((inner as f64 / 1000.0).sqrt() as usize).max(1);
        self.ratios.clear();
        for y in (r..h - r).step_by(step) {
            let yy = (y as isize + dy) as usize;
            for x in (r..w - r).step_by(step) {
                let c = self.cur[yy * w + (x as isize + dx) as usize] as u32;
                let b = self.bg[y * w + x] as u32;
                if b >= 16 << FRAC {
                    self.ratios.push((c << (FRAC + GAIN_BITS)) / b);
                }
            }
        }
        if self.ratios.len() < 50 {
            return 1 << GAIN_BITS;
        }
        let mid = self.ratios.len() / 2;
        let (_, &mut g, _) = self.ratios.select_nth_unstable(mid);
        g.clamp(1 << (GAIN_BITS - 2), (4 << GAIN_BITS) - 1)
            .min(u16::MAX as u32) as u16
    }

    fn gain_cached(&mut self, shift: (isize, isize)) -> u16 {
        match self.gain_at {
            Some((at, g)) if at == shift => g,
            _ => {
                let g = self.gain(shift);
                self.gain_at = Some((shift, g));
                g
            }
        }
    }

    /// Whether the camera may have moved, so that the shake search is worth its cost
    /// (about as much as the rest of the step): a moved view changes at its edges all
    /// over the frame, an object only where it is. Compares the frame with the
    /// background, unshifted, on about 24 evenly spaced rows, each pixel against its
    /// own threshold (the noise level included, so leaves and water do not count), and
    /// says yes when a quarter of the grid cells show change in 2 % of their samples.
    #[inline(always)]
    fn view_may_have_moved(&mut self) -> bool {
        if self.shake == 0 || self.cells_eligible == 0 {
            return false;
        }
        let (w, h) = (self.w, self.h);
        let gain = if self.exposure {
            self.gain_cached((0, 0))
        } else {
            1 << GAIN_BITS
        };
        let (thr, factor) = (self.threshold as u16, self.noise_factor);
        let step = (h / (GRID * 3)).max(1);
        let mut changed = [0u32; GRID * GRID];
        let mut sampled = [0u32; GRID * GRID];
        for y in (step / 2..h).step_by(step) {
            let cy = y * GRID / h;
            let row = y * w..(y + 1) * w;
            let (bg, cur, dev, act) = (
                &self.bg[row.clone()],
                &self.cur[row.clone()],
                &self.dev[row.clone()],
                &self.active[row],
            );
            for cx in 0..GRID {
                let span = self.cell_x[cx]..self.cell_x[cx + 1];
                let n: u32 = bg[span.clone()]
                    .iter()
                    .zip(&cur[span.clone()])
                    .zip(&dev[span.clone()])
                    .zip(&act[span.clone()])
                    .map(|(((&b, &c), &dv), &m)| {
                        let bv = ((((b as u32 * gain as u32) >> 16) as u16) + 8) >> 4;
                        let t = thr.max(((dv >> 2) * factor) >> 2);
                        ((c as u16).abs_diff(bv) > t) as u32 & m as u32
                    })
                    .sum();
                changed[cy * GRID + cx] += n;
                sampled[cy * GRID + cx] += count(&act[span]);
            }
        }
        let on = changed
            .iter()
            .zip(&sampled)
            .filter(|(&c, &s)| s > 0 && c > 0 && 50 * c >= s)
            .count() as u32;
        4 * on >= self.cells_eligible
    }

    /// Picks a sparse grid of about 500 pixels inside the shake margin and keeps, for
    /// each, its index, the background's gradient there and its cell of a 4x4 grid.
    fn pick_samples(&mut self) {
        let (w, h, r) = (self.w, self.h, self.shake);
        let (iw, ih) = (w - 2 * r - 1, h - 2 * r - 1);
        let step = (((iw * ih) as f64 / 500.0).sqrt() as usize).max(1);
        let bg = &self.bg;
        let bgv = |i: usize| (bg[i] + (1 << (FRAC - 1))) >> FRAC;
        self.samples.clear();
        for y in (r..h - r - 1).step_by(step) {
            let cy = (y - r) * 4 / ih;
            for x in (r..w - r - 1).step_by(step) {
                let p = y * w + x;
                let gb = bgv(p + 1).abs_diff(bgv(p)) + bgv(p + w).abs_diff(bgv(p));
                let cell = (cy * 4 + (x - r) * 4 / iw) as u8;
                self.samples.push((p as u32, gb, cell));
            }
        }
    }

    /// Sums of |gradient of frame(x + dx, y + dy) - gradient of background(x, y)| over
    /// the samples, per cell of a 4x4 grid.
    fn sample_sad(&self, (dx, dy): (isize, isize)) -> [u64; 16] {
        let (w, cur) = (self.w, &self.cur);
        let off = dy * w as isize + dx;
        let c = |i: usize| cur[i] as u16;
        let mut sad = [0u64; 16];
        for &(p, gb, cell) in &self.samples {
            let q = (p as isize + off) as usize;
            let gc = c(q + 1).abs_diff(c(q)) + c(q + w).abs_diff(c(q));
            sad[cell as usize & 15] += gc.abs_diff(gb) as u64;
        }
        sad
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
        let warm_k = self.warmup_total - self.warmup_left + 1;
        let p = RowParams {
            warm: if self.warmup_left > 0 {
                (65536 / warm_k).min(65535) as u16
            } else {
                0
            },
            light: self.light_texture.is_some(),
            thr: self.threshold as u16,
            factor: self.noise_factor,
            shadow: self.shadow,
            rate: self.rate,
            noise_rate: self.noise_rate,
            gain: if self.exposure {
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
        self.light_rows.clear();
        let mut bv_row = std::mem::take(&mut self.bv_row);
        let rows = self
            .bg
            .chunks_exact_mut(w)
            .zip(self.fg.chunks_exact_mut(w))
            .zip(self.dev.chunks_exact_mut(w))
            .zip(self.active.chunks_exact(w));
        for (y, (((bg_row, fg_row), dev_row), act_row)) in rows.enumerate() {
            let ys = y as isize + dy;
            let edge = ey != 0 && (y == 0 || y == h - 1 || ys == 0 || ys == h as isize - 1);
            if ys < 0 || ys >= h as isize || x0 >= x1 || edge {
                if self.fg_rows[y] {
                    fg_row.fill(0);
                }
                self.fg_rows[y] = false;
                continue;
            }
            let ys = ys as usize;
            let cur = &self.cur
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
                self.fg_rows[y] = false;
                continue;
            }
            if p.shadow > 0 && settle_row(&mut fg_row[x0..x1], cur, bvs, p) > 0 {
                self.light_rows.push(y as u32);
            }
            let cy = y * GRID / h;
            let mut in_row = 0;
            for cx in 0..GRID {
                let n = count(&fg_row[self.cell_x[cx]..self.cell_x[cx + 1]]);
                cells[cy * GRID + cx] += n;
                in_row += n;
            }
            self.fg_rows[y] = in_row > 0;
            total += in_row;
        }
        self.bv_row = bv_row;
        if let Some(t) = self.light_texture {
            total -= self.light_pass((dx, dy), (x0, x1), p.gain, t, &mut cells);
        }
        self.cell_changed = cells;
        (total, differ)
    }

    /// Settles the light candidates (fg = 3) that `update_row` left: light when the
    /// 3x3 neighbourhood of the frame correlates with the background's (at the
    /// frame's exposure) at least `t`, or both are flat; else change. Runs after the
    /// row pass, so the background is this frame's (moved by `background_rate`
    /// towards the frame, which only raises the correlation a little). Returns how
    /// many candidates were light, taken off `cells`.
    fn light_pass(
        &mut self,
        (dx, dy): (isize, isize),
        (x0, x1): (usize, usize),
        gain: u16,
        t: f32,
        cells: &mut [u32; GRID * GRID],
    ) -> u32 {
        let (w, h) = (self.w, self.h);
        let bgv = |b: u16| ((((b as u32 * gain as u32) >> 16) as u16 + 8) >> 4) as i64;
        let row_ok = |y: isize| y >= 0 && y < h as isize && y + dy >= 0 && y + dy < h as isize;
        let t2 = (t as f64) * (t as f64);
        let mut cleared = 0;
        for &y in &self.light_rows {
            let y = y as usize;
            let cy = y * GRID / h;
            let mut cx = 0;
            let mut x = x0;
            while x < x1 {
                let i = y * w + x;
                // Candidates are 3, changed pixels 1: skip words with no 3 in them.
                if let Some(word) = self.fg.get(i..i + 8).filter(|_| x + 8 <= x1) {
                    let v = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
                    if v & 0x0202_0202_0202_0202 == 0 {
                        x += 8;
                        continue;
                    }
                }
                if self.fg[i] != 3 {
                    x += 1;
                    continue;
                }
                let (mut n, mut sc, mut sb, mut scc, mut sbb, mut scb) = (0i64, 0, 0, 0, 0, 0);
                for yy in y as isize - 1..=y as isize + 1 {
                    if !row_ok(yy) {
                        continue;
                    }
                    let ys = (yy + dy) as usize;
                    for xx in x.saturating_sub(1).max(x0)..(x + 2).min(x1) {
                        let b = bgv(self.bg[yy as usize * w + xx]);
                        let c = self.cur[ys * w + (xx as isize + dx) as usize] as i64;
                        n += 1;
                        (sc, sb, scc, sbb, scb) =
                            (sc + c, sb + b, scc + c * c, sbb + b * b, scb + c * b);
                    }
                }
                let cov = n * scb - sc * sb;
                let (vc, vb) = (n * scc - sc * sc, n * sbb - sb * sb);
                // Both flat (a standard deviation under 2 grey levels) is light. Else light
                // keeps the texture's shape (correlation at least `t`) and only scales it
                // (by 1 / shadow ratio at most: the deviation at most doubles, counting a
                // flat background as 2 levels); an object's edge over plain ground brings
                // a texture that was not there.
                let flat = 4 * n * n;
                let light = (vc < flat && vb < flat)
                    || (vc <= 4 * vb.max(flat)
                        && cov > 0
                        && (cov as f64) * (cov as f64) >= t2 * vc as f64 * vb as f64);
                if light {
                    self.fg[i] = 0;
                    while self.cell_x[cx + 1] <= x {
                        cx += 1;
                    }
                    cells[cy * GRID + cx] -= 1;
                    cleared += 1;
                } else {
                    self.fg[i] = 1;
                }
                x += 1;
            }
            self.fg_rows[y] = count(&self.fg[y * w + x0..y * w + x1]) > 0;
        }
        cleared
    }

    fn spread(&self) -> f32 {
        if self.cells_eligible == 0 {
            return 0.0;
        }
        let on = self
            .cell_changed
            .iter()
            .zip(&self.cell_active)
            .filter(|(&c, &a)| a > 0 && c as f32 >= self.cell_change * a as f32 && c > 0)
            .count();
        (on as f32 / self.cells_eligible as f32).min(1.0)
    }
}

/// Box-average downscale by `k` of a plane of `w`-long rows (`add(y, acc)` adds row
/// `y`'s grey levels to `acc`) to `cw` x `ch`. Rows are summed whole (vectorised), then
/// each run of `k` columns.
fn downscale(
    add: impl Fn(usize, &mut [u32]),
    k: usize,
    cw: usize,
    ch: usize,
    acc: &mut Vec<u32>,
    out: &mut Vec<u8>,
) {
    out.resize(cw * ch, 0);
    acc.resize(cw * k, 0);
    let div = (k * k) as u32;
    for (y, o) in out.chunks_exact_mut(cw).enumerate() {
        acc.fill(0);
        for yy in y * k..(y + 1) * k {
            add(yy, acc);
        }
        for (o, run) in o.iter_mut().zip(acc.chunks_exact(k)) {
            *o = (run.iter().sum::<u32>() / div).min(255) as u8;
        }
    }
}

/// |horizontal| + |vertical| forward difference, (cw - 1) x (ch - 1), halved to fit u8.
fn gradient(src: &[u8], cw: usize, ch: usize, out: &mut Vec<u8>) {
    let gw = cw - 1;
    out.resize(gw * (ch - 1), 0);
    for (y, o) in out.chunks_exact_mut(gw).enumerate() {
        let (a, b) = (&src[y * cw..(y + 1) * cw], &src[(y + 1) * cw..(y + 2) * cw]);
        for (x, o) in o.iter_mut().enumerate() {
            let gx = a[x + 1].abs_diff(a[x]) as u16;
            let gy = b[x].abs_diff(a[x]) as u16;
            *o = ((gx + gy) >> 1) as u8;
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
