//! The synthetic scenes the detector's tests run on: a smooth background with
//! sensor noise, moving squares, lines for a shaken view, and nuisances (leaves, wind, snow,
//! glints on water, a cloud shadow). Deterministic: every generator is seeded.

/// The scenes' frame size.
pub(super) const W: usize = 320;
pub(super) const H: usize = 180;

/// Deterministic synthetic frames: a smooth background, squares, sensor noise.
pub(super) struct Scene {
    seed: u64,
    base: Vec<u8>,
}

impl Scene {
    pub(super) fn new() -> Self {
        // A gentle gradient with soft bumps, 70..=140.
        let base = (0..W * H)
            .map(|i| {
                let (x, y) = ((i % W) as f64, (i / W) as f64);
                (100.0 + 0.1 * x - 0.1 * y + 10.0 * (x / 23.0).sin() * (y / 17.0).cos()) as u8
            })
            .collect();
        Self { seed: 7, base }
    }

    /// Gaussian-ish noise of standard deviation `sigma` (sum of four uniforms).
    pub(super) fn noise(&mut self, sigma: f64) -> f64 {
        let mut s = 0.0;
        for _ in 0..4 {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s += (self.seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
        }
        // Var of a sum of 4 uniforms on [-0.5, 0.5] is 1/3.
        s * sigma * 3f64.sqrt()
    }

    /// The background plus `offset`, squares `(x, y, side, grey)` and noise.
    pub(super) fn frame(
        &mut self,
        offset: f64,
        squares: &[(usize, usize, usize, u8)],
        sigma: f64,
    ) -> Vec<u8> {
        let mut f: Vec<u8> = self
            .base
            .iter()
            .map(|&v| (v as f64 + offset).clamp(0.0, 255.0) as u8)
            .collect();
        for &(sx, sy, side, g) in squares {
            for y in sy..(sy + side).min(H) {
                for x in sx..(sx + side).min(W) {
                    f[y * W + x] = g;
                }
            }
        }
        if sigma > 0.0 {
            for v in f.iter_mut() {
                *v = (*v as f64 + self.noise(sigma)).round().clamp(0.0, 255.0) as u8;
            }
        }
        f
    }
}

/// A 40 px square of grey 180 moving right by 8 px per frame from frame 5 on.
pub(super) fn square_at(i: usize) -> Option<(usize, usize, usize, u8)> {
    (5..30)
        .contains(&i)
        .then(|| (20 + 8 * (i - 5), 60, 40, 180))
}

/// Thin dark lines every 40 px (a period beyond the shake radius, so the shift is
/// not ambiguous), shifted right by `dx`, with a square at `sq`.
pub(super) fn lines(dx: usize, sq: Option<(usize, usize)>) -> Vec<u8> {
    (0..W * H)
        .map(|i| {
            let (x, y) = (i % W, i / W);
            if sq.is_some_and(|(sx, sy)| (sx..sx + 20).contains(&x) && (sy..sy + 20).contains(&y)) {
                250
            } else if (x + 80 - dx) % 40 < 3 || y % 40 < 3 {
                40
            } else {
                160
            }
        })
        .collect()
}

pub(super) fn next(rng: &mut u64) -> u64 {
    *rng = rng
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *rng >> 33
}

/// Swaying foliage: high-contrast stripes in the top-left corner jump by up to 2 px
/// every frame.
pub(super) fn leaves(_: usize, f: &mut [u8], rng: &mut u64) {
    let s = (next(rng) % 5) as usize;
    for (y, row) in f.chunks_exact_mut(W).take(70).enumerate() {
        for (x, v) in row[..140].iter_mut().enumerate() {
            *v = if ((x + s + y / 3) / 5).is_multiple_of(2) {
                60
            } else {
                150
            };
        }
    }
}

/// Trees in strong wind (as the held-out dynamic-background clip of issue 30): two
/// large crowns (ellipses 120x100 and 100x80 px, over a third of the frame) of 3 px leaf
/// clusters, 60 or 150, shaken every frame by up to 3 px, and in gusts (frames 20..35
/// and 50..70) by up to 7 px. The test's moving square is the car passing under them.
pub(super) fn wind(i: usize, f: &mut [u8], rng: &mut u64) {
    let reach = if (20..35).contains(&i) || (50..70).contains(&i) {
        7
    } else {
        3
    };
    let dx = (next(rng) % (2 * reach + 1)) as i64 - reach as i64;
    let dy = (next(rng) % (reach + 1)) as i64 - reach as i64 / 2;
    let crowns = [(60.0, 50.0, 60.0, 50.0), (175.0, 45.0, 50.0, 40.0)];
    for (y, row) in f.chunks_exact_mut(W).take(100).enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            let inside = crowns.iter().any(|&(cx, cy, rx, ry)| {
                let (u, w) = ((x as f64 - cx) / rx, (y as f64 - cy) / ry);
                u * u + w * w <= 1.0
            });
            if inside {
                // A fixed pattern of leaf clusters, moved with the branches.
                let (lx, ly) = ((x as i64 + dx + 64) / 3, (y as i64 + dy + 64) / 3);
                let h = (lx.wrapping_mul(73_856_093) ^ ly.wrapping_mul(19_349_663)) as u64;
                *v = if (h >> 7).is_multiple_of(2) { 60 } else { 150 };
            }
        }
    }
}

/// Snow: 80 flakes of 2x2 px at new random places every frame.
pub(super) fn snow(_: usize, f: &mut [u8], rng: &mut u64) {
    for _ in 0..80 {
        let (x, y) = (next(rng) as usize % (W - 2), next(rng) as usize % (H - 2));
        for row in f.chunks_exact_mut(W).skip(y).take(2) {
            row[x..x + 2].fill(235);
        }
    }
}

/// Glints on water: 20 blobs of 8x12 px, 70 grey levels brighter, at new random
/// places in the top 100 rows every frame; each is a box on its own (over
/// `min_area` once dilated), too large for a speck. (Scored on the scorer's water
/// scene in tests/motion.rs.)
pub(super) fn glints(_: usize, f: &mut [u8], rng: &mut u64) {
    for _ in 0..20 {
        let (x, y) = (next(rng) as usize % (W - 8), next(rng) as usize % 88);
        for row in f.chunks_exact_mut(W).skip(y).take(12) {
            for v in &mut row[x..x + 8] {
                *v = v.saturating_add(70);
            }
        }
    }
}

/// Bright textured ground (a 6 px checker of +-20 over about 170..210) under a
/// cloud shadow: 0.72 of the light over 120 px, with 20 px soft edges, drifting
/// right 8 px per frame.
pub(super) fn cloud(i: usize, f: &mut [u8], _: &mut u64) {
    let centre = -40.0 + 8.0 * i as f64;
    for (y, row) in f.chunks_exact_mut(W).enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            let checker = if (x / 6 + y / 6) % 2 == 0 {
                20.0
            } else {
                -20.0
            };
            let ground = *v as f64 + 90.0 + checker;
            let t = (((x as f64 - centre).abs() - 60.0) / 20.0).clamp(0.0, 1.0);
            let light = 0.72 + 0.28 * t;
            *v = (ground * light).round().clamp(0.0, 255.0) as u8;
        }
    }
}
