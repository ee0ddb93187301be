//! Contrast normalisation for dark and infrared scenes: the low and high grey-level
//! percentiles are measured on every frame (on a quarter of the pixels), averaged over
//! recent frames, and a lookup table stretches that range to 0..=255, with the gain
//! capped so that a black frame is not turned into amplified noise.

use super::config::ContrastConfig;

pub struct Contrast {
    low_pct: f64,
    high_pct: f64,
    max_gain: f64,
    /// Weight of a new frame in the running average of the percentiles.
    weight: f64,
    low: f64,
    high: f64,
    primed: bool,
    hist: [u32; 256],
    /// The table built from (low, high) rounded to 1/4 grey level.
    built_for: (i32, i32),
    pub lut: [u8; 256],
}

impl Contrast {
    /// For a detector fed `fps` analysis frames a second.
    pub fn new(cfg: &ContrastConfig, fps: u32) -> Self {
        let mut lut = [0u8; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = i as u8;
        }
        Self {
            low_pct: cfg.low_percentile.get(),
            high_pct: cfg.high_percentile.get(),
            max_gain: cfg.max_gain.get() as f64,
            weight: 1.0 / f64::from(cfg.window_frames_at(fps)),
            low: 0.0,
            high: 255.0,
            primed: false,
            hist: [0; 256],
            built_for: (-1, -1),
            lut,
        }
    }

    /// Measures `grey` and updates the table. With `reset`, forgets the recent frames
    /// (after a global change such as an infrared switch, the old range is meaningless).
    pub fn update(&mut self, grey: &[u8], width: usize, reset: bool) {
        self.hist = [0; 256];
        let mut n = 0u32;
        for row in grey.chunks_exact(width).step_by(2) {
            for &v in row.iter().step_by(2) {
                self.hist[v as usize] += 1;
            }
            n += row.len().div_ceil(2) as u32;
        }
        if n == 0 {
            return;
        }
        let (lo, hi) = (
            percentile(&self.hist, n, self.low_pct),
            percentile(&self.hist, n, self.high_pct),
        );
        if reset || !self.primed {
            (self.low, self.high, self.primed) = (lo, hi, true);
        } else {
            self.low += (lo - self.low) * self.weight;
            self.high += (hi - self.high) * self.weight;
        }
        let key = ((self.low * 4.0) as i32, (self.high * 4.0) as i32);
        if key != self.built_for {
            self.built_for = key;
            self.build();
        }
    }

    fn build(&mut self) {
        let span = (self.high - self.low).max(1.0);
        let gain = (255.0 / span).min(self.max_gain);
        // When the gain is capped, stretch around the middle of the range.
        let mid = (self.low + self.high) / 2.0;
        let from = mid - 127.5 / gain;
        for (i, v) in self.lut.iter_mut().enumerate() {
            *v = ((i as f64 - from) * gain).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The grey level below which fraction `p` of the `n` counted pixels lie.
fn percentile(hist: &[u32; 256], n: u32, p: f64) -> f64 {
    let target = (p * n as f64) as u64;
    let mut acc = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        acc += c as u64;
        if acc > target {
            return i as f64;
        }
    }
    255.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dark_low_contrast_frame_is_stretched_within_the_gain_cap() {
        let cfg = ContrastConfig {
            enabled: true,
            ..ContrastConfig::default()
        };
        let mut c = Contrast::new(&cfg, 5);
        // Levels 20..=60: span 40, full stretch would be x6.4, capped at x4.
        let frame: Vec<u8> = (0..64 * 64).map(|i| 20 + (i % 41) as u8).collect();
        c.update(&frame, 64, false);
        let (lo, hi) = (c.lut[20], c.lut[60]);
        assert!(hi - lo >= 150, "stretched {lo}..{hi}");
        assert_eq!(c.lut[41] as i32 - c.lut[40] as i32, 4);
        // Wide frames stay (almost) as they are.
        let wide: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % 256) as u8).collect();
        c.update(&wide, 64, true);
        assert!(c.lut[128].abs_diff(128) <= 3 && c.lut[0] <= 8 && c.lut[255] >= 247);
    }
}
