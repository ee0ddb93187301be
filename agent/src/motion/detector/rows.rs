//! The per-row kernels of the detector's hot loop: the 3x3 blur, the difference,
//! threshold, noise and background update, the shadow test, and square dilation.
//! Each works on whole rows with plain iterators and no bounds checks inside, and is
//! `#[inline(always)]` so that it is compiled into `Detector::step` twice: once
//! portable (SSE2 on x86-64, NEON on aarch64) and once inside the AVX2 step.

use super::FRAC;

/// Number of non-zero bytes in a 0/1 slice.
#[inline(always)]
pub(super) fn count(v: &[u8]) -> u32 {
    // Sums in u8 lanes over blocks of 255 so the compiler can use byte adds.
    v.chunks(255)
        .map(|c| c.iter().fold(0u8, |s, &x| s.wrapping_add(x & 1)) as u32)
        .sum()
}

/// Vertical pass of the 3x3 Gaussian for row `y`: `vp[x + 1] = a + 2b + c` for the
/// rows above, at and below (mirrored at the edges without repeating the edge pixel,
/// like OpenCV's default border), with the mirrored columns in `vp[0]` and `vp[w + 1]`
/// so that the horizontal pass has no edge cases.
#[inline(always)]
pub(super) fn vertical(src: &[u8], w: usize, h: usize, y: usize, vp: &mut [u16]) {
    let above = if y > 0 { y - 1 } else { (y + 1).min(h - 1) };
    let below = if y + 1 < h {
        y + 1
    } else {
        y.saturating_sub(1)
    };
    let (a, c, b) = (
        &src[above * w..(above + 1) * w],
        &src[y * w..(y + 1) * w],
        &src[below * w..(below + 1) * w],
    );
    for (((s, &p), &q), &r) in vp[1..w + 1].iter_mut().zip(a).zip(c).zip(b) {
        *s = p as u16 + 2 * q as u16 + r as u16;
    }
    vp[0] = vp[2.min(w)];
    vp[w + 1] = vp[w.saturating_sub(1).max(1)];
}

/// Horizontal pass over a padded vertical sum: the blurred row, rounded.
#[inline(always)]
pub(super) fn horizontal(vp: &[u16], w: usize) -> impl Iterator<Item = u16> + '_ {
    vp[..w]
        .iter()
        .zip(&vp[1..w + 1])
        .zip(&vp[2..w + 2])
        .map(|((&l, &c), &r)| (l + 2 * c + r + 8) >> 4)
}

/// Per-frame constants of `update_row`.
#[derive(Clone, Copy)]
pub(super) struct RowParams {
    /// Warm-up: the weight of this frame in the noise level's plain mean, in 1/65536.
    pub(super) warm: u16,
    /// Mark light candidates (brighter by at most 1 / shadow ratio) as 3 in `fg`.
    pub(super) light: bool,
    pub(super) thr: u16,
    pub(super) factor: u16,
    pub(super) shadow: u16,
    pub(super) rate: u16,
    /// Weight of a new difference in the noise level, in 1/65536.
    pub(super) noise_rate: u16,
    /// Exposure of the frame against the background, in 1/2^GAIN_BITS.
    pub(super) gain: u16,
}

/// Difference, threshold (raised where the pixel keeps changing), mask, noise and
/// background update of one row, in u16 lanes: `fg` gets 1 where the pixel is over its
/// threshold and not masked, `bvs` the background at the frame's exposure. Returns the
/// number of those pixels (shadows and light included; `settle_row` tests them).
/// `WARM`: the noise level learns the plain mean of every difference (warm-up) instead
/// of the quiet ones only.
#[inline(always)]
pub(super) fn update_row<const WARM: bool>(
    bg: &mut [u16],
    fg: &mut [u8],
    dev: &mut [u16],
    active: &[u8],
    cur: &[u8],
    bvs: &mut [u16],
    p: RowParams,
) -> u32 {
    let keep = (65536 - p.rate as u32) as u16;
    let pix = bg.iter_mut().zip(fg.iter_mut()).zip(dev.iter_mut());
    for (((((b, f), dv), &m), &c), bvo) in pix.zip(active).zip(cur).zip(bvs.iter_mut()) {
        let c = c as u16;
        // Background grey at the frame's exposure, rounded, as a 16x16-bit high
        // multiply (bg is grey << 8, gain < 4 << 12): (bg * gain) >> 16 is 16 x grey x
        // gain and fits in u16.
        let bv = ((((*b as u32 * p.gain as u32) >> 16) as u16) + 8) >> 4;
        *bvo = bv;
        let d = c.abs_diff(bv);
        let thr = p.thr.max(((*dv >> 2) * p.factor) >> 2);
        let raw = u8::from(d > thr);
        *f = raw & m;
        // The noise level learns only while the pixel is within the threshold (not from
        // shadows either), so a passing
        // object does not raise it; where leaves or water make the difference wide,
        // the threshold climbs until most of their changes fall below it (about twice
        // their amplitude). In 1/16 grey levels, a = noise_rate / 65536 (1/8 at 5 fps):
        // dev' = dev - dev a + 16 d a, as high multiplies (at a = 1/8 exactly the
        // shifts dev/8 and 2d).
        if WARM {
            // dev + (16 d - dev) * warm / 65536, in i32.
            let step = ((((d as i32) << 4) - *dv as i32) * p.warm as i32) >> 16;
            *dv = (*dv as i32 + step).clamp(0, u16::MAX as i32) as u16;
        } else {
            let learn = u16::from(raw ^ 1);
            let next = (*dv - mulhi(*dv, p.noise_rate)).wrapping_add(mulhi(d << 4, p.noise_rate));
            let mask = 0u16.wrapping_sub(learn);
            *dv = (next & mask) | (*dv & !mask);
        }
        // bg' = bg (1 - a) + (cur << 8) a as two truncating high multiplies; the +1
        // makes up for the two truncations (their fractions sum to one when a is
        // odd), so a constant frame is a fixed point: no drift.
        let keep_part = ((*b as u32 * keep as u32) >> 16) as u16;
        let cur_part = (((c << FRAC) as u32 * p.rate as u32) >> 16) as u16;
        *b = keep_part.wrapping_add(cur_part).wrapping_add(1);
    }
    // Counted after the loop in u8 lanes, cheaper than widening each pixel to u32.
    count(fg)
}

/// (a * b) >> 16: a 16x16-bit high multiply, which every target vectorises.
#[inline(always)]
pub(super) fn mulhi(a: u16, b: u16) -> u16 {
    ((a as u32 * b as u32) >> 16) as u16
}

/// Shadow test of a row `update_row` marked (`shadow` > 0): a changed pixel darker
/// than the background by a factor no lower than the shadow ratio is a shadow (0);
/// one brighter by at most 1 / ratio becomes a light candidate (3) for
/// `Detector::light_pass` when the light test is on. Returns the number of candidates.
#[inline(always)]
pub(super) fn settle_row(fg: &mut [u8], cur: &[u8], bvs: &[u16], p: RowParams) -> u32 {
    let mut light = 0u32;
    let light_on = u8::from(p.light);
    for ((f, &c), &bv) in fg.iter_mut().zip(cur).zip(bvs) {
        let c = c as u16;
        // A shadow darkens by a factor: cur in [ratio * bg, bg). bv <= 255 and the ratio
        // <= 256, so both sides fit in u16.
        let shadow = u8::from(c < bv && (c << 8) >= bv.min(255) * p.shadow);
        let now = *f & !shadow;
        // The other side of the shadow test: brighter by at most 1 / ratio (cur *
        // ratio <= bv), settled by the texture test later.
        let lit = now & light_on & u8::from(c > bv && c * p.shadow <= bv.min(255) << 8);
        *f = now | (lit << 1);
        light += lit as u32;
    }
    light
}

/// A 0/1 image and which of its rows may hold a set pixel (the others are all zero).
pub(super) struct Plane<'a> {
    pub(super) px: &'a [u8],
    pub(super) rows: &'a [bool],
}

pub(super) struct PlaneMut<'a> {
    pub(super) px: &'a mut [u8],
    pub(super) rows: &'a mut [bool],
}

/// Square dilation of radius `r` of a 0/1 image: a horizontal then a vertical max
/// (max of a window is separable for a square). Rows that stay empty are only cleared
/// when they held something before.
#[inline(always)]
pub(super) fn dilate(src: Plane, tmp: PlaneMut, dst: PlaneMut, w: usize, r: usize) {
    let rows = src.px.chunks_exact(w).zip(tmp.px.chunks_exact_mut(w));
    for (((s, t), &any), t_any) in rows.zip(src.rows).zip(tmp.rows.iter_mut()) {
        if !any {
            if *t_any {
                t.fill(0);
                *t_any = false;
            }
            continue;
        }
        *t_any = true;
        t.copy_from_slice(s);
        for k in 1..=r.min(w - 1) {
            for (o, &v) in t[..w - k].iter_mut().zip(&s[k..]) {
                *o |= v;
            }
            for (o, &v) in t[k..].iter_mut().zip(&s[..w - k]) {
                *o |= v;
            }
        }
    }
    let h = src.rows.len();
    let tmp_px: &[u8] = tmp.px;
    let tmp_rows: &[bool] = tmp.rows;
    for (y, (d, d_any)) in dst
        .px
        .chunks_exact_mut(w)
        .zip(dst.rows.iter_mut())
        .enumerate()
    {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
        let mut first = true;
        for k in lo..=hi {
            if !tmp_rows[k] {
                continue;
            }
            let t = &tmp_px[k * w..(k + 1) * w];
            if first {
                d.copy_from_slice(t);
                first = false;
            } else {
                for (o, &v) in d.iter_mut().zip(t) {
                    *o |= v;
                }
            }
        }
        if first && *d_any {
            d.fill(0);
        }
        *d_any = !first;
    }
}
