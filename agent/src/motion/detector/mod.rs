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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
