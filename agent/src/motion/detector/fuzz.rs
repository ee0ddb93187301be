//! Bounded fuzzing with a seeded generator: any frame size and content, any valid
//! setting, masks included; frames of the wrong size are an error that names the size,
//! never a panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::values::{Fraction, IntIn};

fn random_config(rng: &mut StdRng) -> MotionConfig {
    let (a, b) = (rng.random_range(0.0..=1.0), rng.random_range(0.0..=1.0));
    let mut c = MotionConfig {
        blur: rng.random(),
        threshold: IntIn::new(rng.random_range(1..=255)).unwrap(),
        background_rate: Fraction::new(rng.random_range(0.0..=1.0)).unwrap(),
        dilate_radius: IntIn::new(rng.random_range(0..=16)).unwrap(),
        min_area: Fraction::new(f64::min(a, b)).unwrap(),
        max_area: Fraction::new(f64::max(a, b)).unwrap(),
        global_change: Fraction::new(rng.random_range(0.0..=1.0)).unwrap(),
        cell_change: Fraction::new(rng.random_range(0.0..=1.0)).unwrap(),
        ..MotionConfig::default()
    };
    c.contrast.enabled = rng.random();
    if rng.random_bool(0.3) {
        // Polygons anywhere, degenerate ones included (points, lines, outside 0..1).
        c.masks = (0..rng.random_range(1..3))
            .map(|_| {
                (0..rng.random_range(1..6))
                    .map(|_| [rng.random_range(-0.5..1.5), rng.random_range(-0.5..1.5)])
                    .collect()
            })
            .collect();
    }
    c
}

#[test]
fn any_frame_size_content_and_setting_is_processed_or_named_as_wrong_never_a_panic() {
    let mut rng = StdRng::seed_from_u64(0x00d3_7ec7);
    for _ in 0..150 {
        let (w, h) = match rng.random_range(0..4) {
            0 => (rng.random_range(1..4), rng.random_range(1..4)),
            1 => (1, rng.random_range(1..200)),
            2 => (rng.random_range(1..200), 1),
            _ => (rng.random_range(1..120), rng.random_range(1..90)),
        };
        let cfg = random_config(&mut rng);
        let mut d = Detector::new(&cfg, w, h, 5);
        let n = (w * h) as usize;
        let mut frame = vec![0u8; n];
        for _ in 0..6 {
            match rng.random_range(0..4) {
                0 => rng.fill(&mut frame[..]),
                1 => frame.fill(rng.random()),
                2 => {
                    // A bright block somewhere.
                    let x = rng.random_range(0..w) as usize;
                    let y = rng.random_range(0..h) as usize;
                    for yy in y..(y + 8).min(h as usize) {
                        for xx in x..(x + 8).min(w as usize) {
                            frame[yy * w as usize + xx] = 255;
                        }
                    }
                }
                _ => {}
            }
            let m = d.process(&frame).unwrap();
            for b in &m.boxes {
                assert!(b.x + b.w <= w && b.y + b.h <= h, "{b:?} outside {w}x{h}");
            }
        }
        let wrong = if rng.random() { n + 1 } else { n - 1 };
        let err = d.process(&vec![0u8; wrong]).unwrap_err();
        assert!(
            matches!(err, MotionError::FrameSize { width, height, got } if (width, height, got) == (w, h, wrong)),
            "{err}"
        );
    }
}
