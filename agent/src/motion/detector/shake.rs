//! Camera shake: whether the view may have moved (a cheap test on sampled rows), and
//! the whole-pixel shift that best aligns the frame with the background, found on
//! coarse gradient images and refined on a sparse sample of full-size pixels.

use super::rows::count;
use super::{Detector, FRAC, GAIN_BITS, GRID};

/// Box-average downscale by `k` of a plane of `w`-long rows (`add(y, acc)` adds row
/// `y`'s grey levels to `acc`) to `cw` x `ch`. Rows are summed whole (vectorised), then
/// each run of `k` columns.
pub(super) fn downscale(
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
pub(super) fn gradient(src: &[u8], cw: usize, ch: usize, out: &mut Vec<u8>) {
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

impl Detector {
    /// The whole-pixel shift (dx, dy), within the shake radius, that best aligns the
    /// frame with the background; (0, 0) unless it fits clearly better. A search over
    /// coarse gradient images (gradients ignore the exposure changes that come with a
    /// shaking view) proposes it when it lowers their difference by a tenth; a search
    /// of +-2 px around it (or around no shift) on the gradients of a sparse sample of
    /// full-size pixels refines it, and it must fit better in most parts of the view.
    pub(super) fn estimate_shift(&mut self) -> (isize, isize) {
        if self.shake.radius == 0 {
            return (0, 0);
        }
        let (k, w, h) = (self.shake.coarse, self.w, self.h);
        let (cw, ch) = (w / k, h / k);
        let r = self.shake.radius.div_ceil(k).min(cw / 4).min(ch / 4);
        if r == 0 || cw < 4 || ch < 4 {
            return (0, 0);
        }
        let mut small = std::mem::take(&mut self.shake.small);
        let mut sums = std::mem::take(&mut self.shake.sums);
        let mut g = std::mem::take(&mut self.shake.grad_cur);
        let mut gb = std::mem::take(&mut self.shake.grad_bg);
        let ri = r as isize;
        let (cur, bg) = (&self.prep.cur, &self.bg.mean);
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
        (
            self.shake.small,
            self.shake.sums,
            self.shake.grad_cur,
            self.shake.grad_bg,
        ) = (small, sums, g, gb);
        let (mut bx, mut by) = if 10 * best.0 < 9 * still {
            (best.1 * k as isize, best.2 * k as isize)
        } else {
            (0, 0)
        };
        let lim = self.shake.radius as isize;
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

    /// Whether the camera may have moved, so that the shake search is worth its cost
    /// (about as much as the rest of the step): a moved view changes at its edges all
    /// over the frame, an object only where it is. Compares the frame with the
    /// background, unshifted, on about 24 evenly spaced rows, each pixel against its
    /// own threshold (the noise level included, so leaves and water do not count), and
    /// says yes when a quarter of the grid cells show change in 2 % of their samples.
    #[inline(always)]
    pub(super) fn view_may_have_moved(&mut self) -> bool {
        if self.shake.radius == 0 || self.grid.cells_eligible == 0 {
            return false;
        }
        let (w, h) = (self.w, self.h);
        let gain = if self.params.exposure {
            self.gain_cached((0, 0))
        } else {
            1 << GAIN_BITS
        };
        let (thr, factor) = (self.params.threshold as u16, self.params.noise_factor);
        let step = (h / (GRID * 3)).max(1);
        let mut changed = [0u32; GRID * GRID];
        let mut sampled = [0u32; GRID * GRID];
        for y in (step / 2..h).step_by(step) {
            let cy = y * GRID / h;
            let row = y * w..(y + 1) * w;
            let (bg, cur, dev, act) = (
                &self.bg.mean[row.clone()],
                &self.prep.cur[row.clone()],
                &self.bg.dev[row.clone()],
                &self.grid.active[row],
            );
            for cx in 0..GRID {
                let span = self.grid.cell_x[cx]..self.grid.cell_x[cx + 1];
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
        4 * on >= self.grid.cells_eligible
    }

    /// Picks a sparse grid of about 500 pixels inside the shake margin and keeps, for
    /// each, its index, the background's gradient there and its cell of a 4x4 grid.
    pub(super) fn pick_samples(&mut self) {
        let (w, h, r) = (self.w, self.h, self.shake.radius);
        let (iw, ih) = (w - 2 * r - 1, h - 2 * r - 1);
        let step = (((iw * ih) as f64 / 500.0).sqrt() as usize).max(1);
        let bg = &self.bg.mean;
        let bgv = |i: usize| (bg[i] + (1 << (FRAC - 1))) >> FRAC;
        self.shake.samples.clear();
        for y in (r..h - r - 1).step_by(step) {
            let cy = (y - r) * 4 / ih;
            for x in (r..w - r - 1).step_by(step) {
                let p = y * w + x;
                let gb = bgv(p + 1).abs_diff(bgv(p)) + bgv(p + w).abs_diff(bgv(p));
                let cell = (cy * 4 + (x - r) * 4 / iw) as u8;
                self.shake.samples.push((p as u32, gb, cell));
            }
        }
    }

    /// Sums of |gradient of frame(x + dx, y + dy) - gradient of background(x, y)| over
    /// the samples, per cell of a 4x4 grid.
    pub(super) fn sample_sad(&self, (dx, dy): (isize, isize)) -> [u64; 16] {
        let (w, cur) = (self.w, &self.prep.cur);
        let off = dy * w as isize + dx;
        let c = |i: usize| cur[i] as u16;
        let mut sad = [0u64; 16];
        for &(p, gb, cell) in &self.shake.samples {
            let q = (p as isize + off) as usize;
            let gc = c(q + 1).abs_diff(c(q)) + c(q + w).abs_diff(c(q));
            sad[cell as usize & 15] += gc.abs_diff(gb) as u64;
        }
        sad
    }
}
