//! Light, shadow and speckle: the camera's exposure gain against the background, the
//! texture test that tells light on a surface from an object brighter than it, and
//! the speckle map that learns where small flashes (glints, flakes, raindrops) keep
//! appearing. The per-pixel shadow test is a row kernel (`rows::settle_row`).

use super::rows::count;
use super::{Component, Detector, Speckle, FRAC, GAIN_BITS, GRID};

impl Detector {
    /// The camera's exposure change against the background, in 1/2^GAIN_BITS: the
    /// median of frame / background over a sparse grid of about 1000 pixels (a median,
    /// so that an object covering a third of the view does not move it). Dark pixels
    /// say little and are left out; 1 when too few are left.
    pub(super) fn gain(&mut self, (dx, dy): (isize, isize)) -> u16 {
        let (w, h, r) = (self.w, self.h, self.shake.radius);
        let inner = (w - 2 * r) * (h - 2 * r);
        let step = ((inner as f64 / 1000.0).sqrt() as usize).max(1);
        self.bg.ratios.clear();
        for y in (r..h - r).step_by(step) {
            let yy = (y as isize + dy) as usize;
            for x in (r..w - r).step_by(step) {
                let c = self.prep.cur[yy * w + (x as isize + dx) as usize] as u32;
                let b = self.bg.mean[y * w + x] as u32;
                if b >= 16 << FRAC {
                    self.bg.ratios.push((c << (FRAC + GAIN_BITS)) / b);
                }
            }
        }
        if self.bg.ratios.len() < 50 {
            return 1 << GAIN_BITS;
        }
        let mid = self.bg.ratios.len() / 2;
        let (_, &mut g, _) = self.bg.ratios.select_nth_unstable(mid);
        g.clamp(1 << (GAIN_BITS - 2), (4 << GAIN_BITS) - 1)
            .min(u16::MAX as u32) as u16
    }

    pub(super) fn gain_cached(&mut self, shift: (isize, isize)) -> u16 {
        match self.bg.gain_at {
            Some((at, g)) if at == shift => g,
            _ => {
                let g = self.gain(shift);
                self.bg.gain_at = Some((shift, g));
                g
            }
        }
    }

    /// Settles the light candidates (fg = 3) that `update_row` left: light when the
    /// 3x3 neighbourhood of the frame correlates with the background's (at the
    /// frame's exposure) at least `t`, or both are flat; else change. Runs after the
    /// row pass, so the background is this frame's (moved by `background_rate`
    /// towards the frame, which only raises the correlation a little). Returns how
    /// many candidates were light, taken off `cells`.
    pub(super) fn light_pass(
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
        for &y in &self.masks.light_rows {
            let y = y as usize;
            let cy = y * GRID / h;
            let mut cx = 0;
            let mut x = x0;
            while x < x1 {
                let i = y * w + x;
                // Candidates are 3, changed pixels 1: skip words with no 3 in them.
                if let Some(word) = self.masks.fg.get(i..i + 8).filter(|_| x + 8 <= x1) {
                    let v = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
                    if v & 0x0202_0202_0202_0202 == 0 {
                        x += 8;
                        continue;
                    }
                }
                if self.masks.fg[i] != 3 {
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
                        let b = bgv(self.bg.mean[yy as usize * w + xx]);
                        let c = self.prep.cur[ys * w + (xx as isize + dx) as usize] as i64;
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
                    self.masks.fg[i] = 0;
                    while self.grid.cell_x[cx + 1] <= x {
                        cx += 1;
                    }
                    cells[cy * GRID + cx] -= 1;
                    cleared += 1;
                } else {
                    self.masks.fg[i] = 1;
                }
                x += 1;
            }
            self.masks.fg_rows[y] = count(&self.masks.fg[y * w + x0..y * w + x1]) > 0;
        }
        cleared
    }
}

impl Speckle {
    pub(super) fn on(&self) -> bool {
        self.factor > 0.0
    }

    /// A blob too small to count, or a flash: counted where its middle is.
    pub(super) fn note(&mut self, c: &Component) {
        let block = self.block as u32;
        let (bx, by) = ((c.x0 + c.x1) / 2 / block, (c.y0 + c.y1) / 2 / block);
        self.now[by as usize * self.bw + bx as usize] += c.area as f32;
    }

    /// The share of a blob's area that counts where specks keep appearing.
    pub(super) fn keep(&self, c: &Component) -> f32 {
        let (block, bw) = (self.block as u32, self.bw);
        let (mut sum, mut n) = (0.0f32, 0u32);
        for by in c.y0 / block..=c.y1 / block {
            let row = &self.map[by as usize * bw..(by as usize + 1) * bw];
            sum += row[(c.x0 / block) as usize..=(c.x1 / block) as usize]
                .iter()
                .sum::<f32>();
            n += c.x1 / block - c.x0 / block + 1;
        }
        1.0 - (self.factor * sum / n as f32).min(0.9)
    }

    /// Folds this frame's specks into the map (1/8 per 200 ms) and clears them.
    #[inline(always)]
    pub(super) fn learn(&mut self) {
        if self.factor == 0.0 {
            return;
        }
        let per_px = 1.0 / (self.block * self.block) as f32;
        let rate = self.rate;
        for (m, now) in self.map.iter_mut().zip(&mut self.now) {
            *m += (*now * per_px - *m) * rate;
            *now = 0.0;
        }
    }
}
