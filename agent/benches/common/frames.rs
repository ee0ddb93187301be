//! The motion benches' synthetic grey frames: texture, sensor noise and three moving
//! squares. Shared by `benches/motion.rs`, which times the step on them, and
//! `scripts/motion-arm`, which counts its instructions.

/// Frames with texture, sensor noise and a few moving squares.
pub fn synthetic(w: usize, h: usize, n: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let base: Vec<u8> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            (100.0 + 40.0 * (x / w as f32) - 20.0 * (y / h as f32)
                + 12.0 * (x * 0.07).sin() * (y * 0.05).cos()) as u8
        })
        .collect();
    let s = (w / 16).max(4);
    (0..n)
        .map(|i| {
            let mut f = base.clone();
            let squares = [
                (w / 10 + i * w / 80, h / 5, 200u8),
                (w / 2, h / 2 + i * h / 120, 30),
                (w - s - 1 - (i * w / 60) % (w - s - 1), h / 8 * 6, 220),
            ];
            for (sx, sy, g) in squares {
                for row in f.chunks_exact_mut(w).skip(sy).take(s) {
                    for v in row.iter_mut().skip(sx).take(s) {
                        *v = g;
                    }
                }
            }
            for v in f.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed & 7) as i16 - 3;
                *v = (*v as i16 + noise).clamp(0, 255) as u8;
            }
            f
        })
        .collect()
}
