//! Unit tests of the detector on synthetic scenes, one behaviour per test.

use std::time::{Duration, SystemTime};

use super::*;
use crate::motion::{EventTracker, MotionTransition};
use crate::values::{Fraction, IntIn};

mod scenes;

use scenes::{cloud, glints, leaves, lines, snow, square_at, wind, Scene, H, W};

/// The tests' analysis rate: frames are 200 ms apart.
const FPS: u32 = 5;

fn t(i: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_700_000_000)
        + Duration::from_millis(200 * i as u64)
}

/// Runs frames through detector and tracker; returns per-frame results and
/// (frame index, transition) pairs.
fn run(
    cfg: &MotionConfig,
    frames: impl IntoIterator<Item = Vec<u8>>,
) -> (Vec<FrameMotion>, Vec<(usize, MotionTransition)>) {
    let mut det = Detector::new(cfg, W as u32, H as u32, FPS);
    let mut tr = EventTracker::new(cfg, "test");
    let (mut per_frame, mut transitions) = (Vec::new(), Vec::new());
    for (i, f) in frames.into_iter().enumerate() {
        let m = det.process(&f).expect("frame size");
        if let Some(x) = tr.update(t(i), m) {
            transitions.push((i, x));
        }
        per_frame.push(m.clone());
    }
    if let Some(x) = tr.finish() {
        transitions.push((per_frame.len(), x));
    }
    (per_frame, transitions)
}

/// The defaults without the warm-up, for tests whose motion starts in the first
/// frames (the warm-up has its own test).
fn no_warmup() -> MotionConfig {
    MotionConfig {
        warmup_frames: Some(IntIn::lit(0)),
        ..MotionConfig::default()
    }
}

fn starts(tr: &[(usize, MotionTransition)]) -> usize {
    tr.iter()
        .filter(|(_, x)| matches!(x, MotionTransition::Started(_)))
        .count()
}

#[test]
fn a_moving_square_gives_a_box_that_matches_it() {
    let cfg = no_warmup();
    let mut scene = Scene::new();
    let frames: Vec<Vec<u8>> = (0..30)
        .map(|i| scene.frame(0.0, &square_at(i).into_iter().collect::<Vec<_>>(), 2.0))
        .collect();
    let (per_frame, _) = run(&cfg, frames);
    for (i, m) in per_frame.iter().enumerate().skip(6) {
        let (x, y, side, _) = square_at(i).unwrap();
        let truth = MotionBox {
            x: x as u32,
            y: y as u32,
            w: side as u32,
            h: side as u32,
        };
        let best = m.boxes.iter().map(|b| b.iou(&truth)).fold(0.0, f64::max);
        assert!(
            best >= 0.8,
            "frame {i}: best IoU {best:.2}, boxes {:?}, truth {truth:?}",
            m.boxes
        );
        assert_eq!(m.boxes.len(), 1, "frame {i}: {:?}", m.boxes);
        eprintln!("frame {i}: {m:?}");
    }
}

#[test]
fn sensor_noise_below_the_threshold_gives_no_event() {
    // (blur, noise sigma): blurred noise is ~0.4 sigma; without blur single pixels
    // may pass the threshold but stay under the minimum area.
    for (blur, sigma) in [(true, 8.0), (false, 5.0)] {
        let cfg = MotionConfig {
            blur,
            ..MotionConfig::default()
        };
        let mut scene = Scene::new();
        let frames: Vec<Vec<u8>> = (0..60).map(|_| scene.frame(0.0, &[], sigma)).collect();
        let (per_frame, tr) = run(&cfg, frames);
        assert!(tr.is_empty(), "blur {blur} sigma {sigma}: {tr:?}");
        assert!(per_frame
            .iter()
            .all(|m| m.boxes.is_empty() && !m.global_change));
        let worst = per_frame
            .iter()
            .map(|m| m.changed_fraction)
            .fold(0.0, f32::max);
        assert!(worst < 0.001, "blur {blur} sigma {sigma}: changed {worst}");
    }
}

#[test]
fn light_changes_give_no_event() {
    // (name, brightness offset of frame i)
    type Offset = fn(usize) -> f64;
    let rows: &[(&str, Offset)] = &[
        ("a step up by 60", |i| if i >= 20 { 60.0 } else { 0.0 }),
        ("a step down by 50", |i| if i >= 20 { -50.0 } else { 0.0 }),
        ("a slow ramp of 0.5 per frame", |i| 0.5 * i as f64),
        ("a flicker every 10 frames", |i| {
            if i % 10 == 9 {
                40.0
            } else {
                0.0
            }
        }),
    ];
    for follow in [true, false] {
        let cfg = MotionConfig {
            follow_exposure: follow,
            ..MotionConfig::default()
        };
        for (name, offset) in rows {
            let mut scene = Scene::new();
            let frames: Vec<Vec<u8>> = (0..80).map(|i| scene.frame(offset(i), &[], 2.0)).collect();
            let (per_frame, tr) = run(&cfg, frames);
            assert!(tr.is_empty(), "{name}, follow {follow}: {tr:?}");
            assert!(
                per_frame.iter().all(|m| m.boxes.is_empty()),
                "{name}, follow {follow}"
            );
            if !name.starts_with("a step") {
                continue;
            }
            let (at, after) = (&per_frame[20], &per_frame[21]);
            if follow {
                // The exposure is followed: no reseed, few changed pixels.
                assert!(
                    !at.global_change && at.changed_fraction < 0.02,
                    "{name}: {at:?}"
                );
            } else {
                assert!(at.global_change && at.reseeded, "{name}");
                assert!(
                    !after.global_change && after.changed_fraction < 0.001,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn a_shaken_camera_is_compensated_within_the_shake_radius_and_global_beyond_it() {
    // Shifting the lines changes about a third of the pixels, in every grid cell.
    let frames = vec![
        lines(0, None),
        lines(0, None),
        lines(4, None),
        lines(4, Some((100, 100))),
        lines(1, Some((120, 100))),
        lines(0, None),
    ];
    let (per_frame, tr) = run(&no_warmup(), frames.clone());
    // Compensated: no change but the square, which is found where it is.
    assert_eq!(per_frame[2].shift, (4, 0), "{:?}", per_frame[2]);
    assert!(
        per_frame[2].boxes.is_empty() && !per_frame[2].global_change,
        "{:?}",
        per_frame[2]
    );
    for (i, x) in [(3, 100), (4, 120)] {
        let m = &per_frame[i];
        assert!(!m.global_change, "frame {i}: {m:?}");
        assert_eq!(m.boxes.len(), 1, "frame {i}: {m:?}");
        let b = m.boxes[0];
        assert!(
            b.x.abs_diff(x) <= 2 && b.y.abs_diff(100) <= 2 && b.w.abs_diff(20) <= 3,
            "frame {i}: {b:?}"
        );
    }
    assert!(per_frame[5].boxes.is_empty(), "{:?}", per_frame[5]);
    assert_eq!(tr.len(), 2, "one event, started and ended: {tr:?}");

    // Without compensation the shift is a global change, spread over the grid.
    let cfg = MotionConfig {
        shake_radius: IntIn::lit(0),
        ..no_warmup()
    };
    let (per_frame, tr) = run(&cfg, frames[..3].to_vec());
    let m = &per_frame[2];
    assert!(m.changed_fraction < 0.5, "changed {}", m.changed_fraction);
    assert!(m.global_change && m.spread >= 0.9, "{m:?}");
    assert!(tr.is_empty(), "{tr:?}");
}

#[test]
fn a_shadow_is_not_motion_but_a_dark_object_is() {
    // A 40 px square dimmed to `factor` of the background (130..200), crossing from
    // frame 5.
    let dimmed = |scene: &mut Scene, i: usize, factor: f64| -> Vec<u8> {
        let mut f = scene.frame(60.0, &[], 2.0);
        if let Some((sx, sy, side, _)) = square_at(i) {
            for y in sy..sy + side {
                for x in sx..(sx + side).min(W) {
                    f[y * W + x] = (f[y * W + x] as f64 * factor) as u8;
                }
            }
        }
        f
    };
    // (dimming factor, shadow_ratio, events expected)
    for (factor, ratio, want) in [(0.75, 0.7, 0), (0.4, 0.7, 1), (0.75, 0.0, 1)] {
        let cfg = MotionConfig {
            shadow_ratio: Fraction::lit(ratio),
            ..MotionConfig::default()
        };
        let mut scene = Scene::new();
        let frames: Vec<Vec<u8>> = (0..40).map(|i| dimmed(&mut scene, i, factor)).collect();
        let (per_frame, tr) = run(&cfg, frames);
        assert_eq!(starts(&tr), want, "factor {factor}, ratio {ratio}: {tr:?}");
        assert!(per_frame.iter().all(|m| !m.global_change));
    }
}

/// The times in the settings are times at any analysis rate: a square that stops
/// fades into the background (`background_rate`, per 200 ms) after the same time,
/// and the warm-up (`warmup`, 1.6 s) lasts as long, at 5, 10 and 15 fps.
#[test]
fn a_stopped_object_fades_and_the_warm_up_ends_after_the_same_time_at_any_rate() {
    let mut seen = Vec::new();
    for fps in [5u32, 10, 15] {
        let cfg = MotionConfig::default();
        let mut det = Detector::new(&cfg, W as u32, H as u32, fps);
        let mut scene = Scene::new();
        let (mut last_box, mut learning) = (0.0f64, 0u32);
        for i in 0..20 * fps {
            let secs = f64::from(i) / f64::from(fps);
            // A square appears at 2 s (after the warm-up) and stays.
            let squares: &[(usize, usize, usize, u8)] = if secs >= 2.0 {
                &[(140, 70, 40, 220)]
            } else {
                &[]
            };
            let m = det.process(&scene.frame(0.0, squares, 2.0)).unwrap();
            if m.has_motion() {
                last_box = secs;
            }
            learning += u32::from(m.learning);
        }
        let warm_up = f64::from(learning) / f64::from(fps);
        assert!(
            (warm_up - 1.6).abs() < 0.01,
            "{fps} fps: warm-up {warm_up} s"
        );
        assert!(
            last_box > 3.0,
            "{fps} fps: the square faded at once ({last_box} s)"
        );
        seen.push((fps, last_box));
    }
    eprintln!("last box (fps, s): {seen:?}");
    // Within one 5 fps frame of each other.
    let (lo, hi) = seen.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &(_, t)| {
        (lo.min(t), hi.max(t))
    });
    assert!(hi - lo <= 0.2, "last box (fps, s): {seen:?}");
}

#[test]
fn motion_inside_a_mask_gives_no_event_and_outside_it_does() {
    let mask = vec![vec![[0.0, 0.2], [0.9, 0.2], [0.9, 0.7], [0.0, 0.7]]];
    let frames = |scene: &mut Scene, y: usize| -> Vec<Vec<u8>> {
        (0..30)
            .map(|i| {
                scene.frame(
                    0.0,
                    &square_at(i)
                        .map(|(x, _, s, g)| (x, y, s, g))
                        .into_iter()
                        .collect::<Vec<_>>(),
                    2.0,
                )
            })
            .collect()
    };
    let cfg = MotionConfig {
        masks: mask,
        ..MotionConfig::default()
    };
    // Rows 60..100 lie inside the mask (36..126); rows 130..170 outside.
    let (per_frame, tr) = run(&cfg, frames(&mut Scene::new(), 60));
    assert!(tr.is_empty(), "{tr:?}");
    assert!(per_frame
        .iter()
        .all(|m| m.boxes.is_empty() && m.changed_fraction == 0.0));
    let (_, tr) = run(&cfg, frames(&mut Scene::new(), 130));
    assert_eq!(starts(&tr), 1, "{tr:?}");
}

#[test]
fn the_event_starts_within_k_frames_and_ends_after_the_quiet_period() {
    for k in [1, 2, 4] {
        let cfg = MotionConfig {
            start_frames: IntIn::lit(k),
            ..no_warmup()
        };
        let mut scene = Scene::new();
        // Motion in frames 5..30, then 30 quiet frames (6 s at 5 fps).
        let frames: Vec<Vec<u8>> = (0..60)
            .map(|i| scene.frame(0.0, &square_at(i).into_iter().collect::<Vec<_>>(), 2.0))
            .collect();
        let (per_frame, tr) = run(&cfg, frames);
        let last_motion = per_frame.iter().rposition(|m| m.has_motion()).unwrap();
        assert!(last_motion == 29, "K={k}: last motion at {last_motion}");
        let started: Vec<_> = tr
            .iter()
            .filter(|(_, x)| matches!(x, MotionTransition::Started(_)))
            .collect();
        assert_eq!(started.len(), 1, "K={k}: {tr:?}");
        let (at, ev) = (started[0].0, started[0].1.event());
        // The square appears at frame 5; frame 5 differs from the background already.
        assert!(
            (5..5 + k as usize).contains(&at),
            "K={k}: started at frame {at}"
        );
        assert_eq!(ev.start, t(5), "K={k}");
        let (end_at, MotionTransition::Ended(ended)) = tr.last().unwrap().clone() else {
            panic!("K={k}: no end in {tr:?}");
        };
        // Quiet period 3 s = 15 frames after the last motion.
        assert_eq!(end_at, last_motion + 15, "K={k}");
        assert_eq!(ended.end, Some(t(last_motion)), "K={k}");
    }
}

#[test]
fn contrast_normalisation_finds_faint_motion_in_a_dark_scene() {
    // A dark scene (levels ~10..30) with a square only 15 levels brighter.
    let dark = |scene: &mut Scene, i: usize| -> Vec<u8> {
        let sq: Vec<_> = square_at(i)
            .map(|(x, y, s, _)| (x, y, s, 0))
            .into_iter()
            .collect();
        let mut f = scene.frame(-80.0, &[], 0.0);
        for &(sx, sy, side, _) in &sq {
            for y in sy..sy + side {
                for x in sx..(sx + side).min(W) {
                    f[y * W + x] = f[y * W + x].saturating_add(15);
                }
            }
        }
        f.iter()
            .map(|&v| (v as f64 + scene.noise(1.0)).round().clamp(0.0, 255.0) as u8)
            .collect()
    };
    let mut on = MotionConfig::default();
    on.contrast.enabled = true;
    for (cfg, want) in [(MotionConfig::default(), 0), (on, 1)] {
        let mut scene = Scene::new();
        let frames: Vec<Vec<u8>> = (0..40).map(|i| dark(&mut scene, i)).collect();
        let (_, tr) = run(&cfg, frames);
        assert_eq!(
            starts(&tr),
            want,
            "contrast {}: {tr:?}",
            cfg.contrast.enabled
        );
    }
}

/// Nuisance scenes: 70 frames, a 30 px square (grey `grey`) walking right from
/// frame 30 to 59 on row 120, and `nuisance` drawn on every frame. Returns
/// (frames with the square that box it, frames with it, empty frames with a box,
/// empty frames).
fn nuisance_score(
    cfg: &MotionConfig,
    grey: u8,
    nuisance: impl Fn(usize, &mut [u8], &mut u64),
) -> (usize, usize, usize, usize) {
    let walker = |i: usize| (30..60).contains(&i).then(|| (20 + 8 * (i - 30), 120));
    let mut scene = Scene::new();
    let mut rng = 0x5eed_u64;
    let frames: Vec<Vec<u8>> = (0..70)
        .map(|i| {
            let mut f = scene.frame(0.0, &[], 2.0);
            nuisance(i, &mut f, &mut rng);
            if let Some((x, y)) = walker(i) {
                for row in f.chunks_exact_mut(W).skip(y).take(30) {
                    row[x..x + 30].fill(grey);
                }
            }
            f
        })
        .collect();
    let (per_frame, _) = run(cfg, frames);
    let (mut found, mut objects, mut alarms, mut empty) = (0, 0, 0, 0);
    let (mut missed, mut alarmed) = (Vec::new(), Vec::new());
    for (i, m) in per_frame.iter().enumerate() {
        match walker(i) {
            Some((x, y)) => {
                // Found: boxes cover at least half of it (as the scorer's recall).
                let covered = (y..y + 30)
                    .flat_map(|yy| (x..x + 30).map(move |xx| (xx as u32, yy as u32)))
                    .filter(|&(xx, yy)| {
                        m.boxes.iter().any(|b| {
                            (b.x..b.x + b.w).contains(&xx) && (b.y..b.y + b.h).contains(&yy)
                        })
                    })
                    .count();
                objects += 1;
                if 2 * covered >= 30 * 30 {
                    found += 1;
                } else {
                    missed.push(i);
                }
            }
            None => {
                empty += 1;
                if !m.boxes.is_empty() {
                    alarms += 1;
                    alarmed.push(i);
                }
            }
        }
    }
    eprintln!("missed frames {missed:?}, empty frames with a box {alarmed:?}");
    (found, objects, alarms, empty)
}

type Score = (&'static str, usize, usize, usize, usize, usize, usize);

/// Scores the scene under each (name, config, most alarms, least alarms) row, then
/// checks every row's bounds.
fn assert_nuisance_rows<const N: usize>(
    grey: u8,
    nuisance: impl Fn(usize, &mut [u8], &mut u64) + Copy,
    rows: [(&'static str, MotionConfig, usize, usize); N],
) {
    let mut scores = Vec::new();
    for (name, cfg, most, least) in rows {
        let (found, objects, alarms, empty) = nuisance_score(&cfg, grey, nuisance);
        eprintln!("{name}: found {found}/{objects}, alarms {alarms}/{empty}");
        scores.push((name, found, objects, alarms, empty, most, least));
    }
    assert_nuisance(&scores);
}

/// Each row: every square found but one at most, alarms within bounds.
fn assert_nuisance(scores: &[Score]) {
    for &(name, found, objects, alarms, empty, most, least) in scores {
        assert!(found + 1 >= objects, "{name}: found {found}/{objects}");
        assert!(
            (least..=most).contains(&alarms),
            "{name}: {alarms}/{empty} empty frames with a box, expected {least}..={most}"
        );
    }
}

#[test]
fn swaying_leaves_are_learnt_in_the_warm_up_and_raise_few_boxes() {
    let off = MotionConfig {
        warmup_frames: Some(IntIn::lit(0)),
        ..MotionConfig::default()
    };
    assert_nuisance_rows(
        200,
        leaves,
        [
            ("defaults", MotionConfig::default(), 10, 0),
            ("no warm-up", off, 40, 15),
        ],
    );
}

#[test]
fn trees_in_strong_wind_with_a_car_passing_raise_few_boxes() {
    let off = MotionConfig {
        warmup_frames: Some(IntIn::lit(0)),
        ..MotionConfig::default()
    };
    assert_nuisance_rows(
        200,
        wind,
        [
            // MOG2 alarmed on 24 of 33 empty frames of the held-out clip, edge-agent 11.
            ("defaults", MotionConfig::default(), 10, 0),
            ("no warm-up", off, 40, 20),
        ],
    );
}

#[test]
fn snow_flakes_raise_few_boxes_once_the_speckle_map_knows_them() {
    let off = MotionConfig {
        speckle_factor: IntIn::lit(0),
        ..MotionConfig::default()
    };
    assert_nuisance_rows(
        200,
        snow,
        [
            ("defaults", MotionConfig::default(), 10, 0),
            ("no speckle map", off, 40, 20),
        ],
    );
}

#[test]
fn a_cloud_shadow_passing_is_light_but_a_slightly_brighter_object_is_not() {
    let off = MotionConfig {
        light_texture: Fraction::lit(1.0),
        ..MotionConfig::default()
    };
    // The square is grey 240 on ground of 170..210 (less in the shadow): at most
    // 1 / 0.7 brighter, but flat where the ground is checkered.
    assert_nuisance_rows(
        240,
        cloud,
        [
            ("defaults", MotionConfig::default(), 5, 0),
            ("no light test", off, 40, 12),
        ],
    );
}

#[test]
fn the_avx2_step_and_the_portable_one_agree_bit_for_bit() {
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx2") {
        // Nothing skips silently in CI (.ci/run sets EDGE_AGENT_REQUIRE_ALL).
        assert!(
            std::env::var_os("EDGE_AGENT_REQUIRE_ALL").is_none(),
            "this CPU has no AVX2: the AVX2 step cannot be compared"
        );
        eprintln!("this CPU has no AVX2: both detectors run the portable step");
    }
    // Everything that runs per pixel: moving squares, leaves, glints, a light step,
    // a shaken view and the warm-up.
    let mut scene = Scene::new();
    let mut rng = 0x5eed_u64;
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let sq: Vec<_> = square_at(i).into_iter().collect();
            let mut f = scene.frame(if i >= 20 { 30.0 } else { 0.0 }, &sq, 2.0);
            leaves(i, &mut f, &mut rng);
            glints(i, &mut f, &mut rng);
            if i % 7 == 3 {
                f.rotate_left(3 * W + 2);
            }
            f
        })
        .collect();
    let cfg = MotionConfig::default();
    let mut fast = Detector::new(&cfg, W as u32, H as u32, FPS);
    let mut portable = Detector::new(&cfg, W as u32, H as u32, FPS);
    #[cfg(target_arch = "x86_64")]
    {
        portable.avx2 = false;
    }
    for (i, f) in frames.iter().enumerate() {
        let a = fast.process(f).unwrap().clone();
        let b = portable.process(f).unwrap().clone();
        assert_eq!(a, b, "frame {i}");
        assert_eq!(fast.changed(), portable.changed(), "frame {i}");
    }
}

#[test]
fn boxes_are_filtered_by_area() {
    // The blur widens each square by a pixel per side, dilation by two more: a 3 px
    // square makes 81 px (< 116, min_area), a 15 px one 289, a 30 px one 1296
    // (> 576, max_area).
    let cfg = MotionConfig {
        min_area: Fraction::lit(0.002),
        max_area: Fraction::lit(0.01),
        ..no_warmup()
    };
    let mut scene = Scene::new();
    let f0 = scene.frame(0.0, &[], 0.0);
    let f1 = scene.frame(
        0.0,
        &[(10, 10, 3, 250), (100, 100, 30, 250), (200, 20, 15, 250)],
        0.0,
    );
    let (per_frame, _) = run(&cfg, [f0, f1]);
    assert_eq!(
        per_frame[1].boxes,
        vec![MotionBox {
            x: 199,
            y: 19,
            w: 17,
            h: 17
        }]
    );
}

#[test]
fn a_frame_of_the_wrong_size_is_an_error() {
    let mut det = Detector::new(&MotionConfig::default(), 8, 4, FPS);
    let err = det.process(&[0; 31]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "grey frame has 31 bytes, expected 8x4 = 32"
    );
}

#[test]
fn the_blur_matches_the_3x3_gaussian_with_mirrored_edges() {
    for (w, h) in [(5usize, 3usize), (2, 2), (17, 4)] {
        let src: Vec<u8> = (0..w * h).map(|i| (i * 37 % 256) as u8).collect();
        let mirror = |i: isize, n: isize| {
            (if i < 0 {
                -i
            } else if i >= n {
                2 * n - 2 - i
            } else {
                i
            }) as usize
        };
        let mut det = Detector::new(&MotionConfig::default(), w as u32, h as u32, FPS);
        det.smooth(&src);
        for y in 0..h {
            let got = &det.prep.cur[y * w..(y + 1) * w];
            for (x, &g) in got.iter().enumerate() {
                let mut s = 0u32;
                for (dy, ky) in [(-1, 1), (0, 2), (1, 1)] {
                    for (dx, kx) in [(-1, 1), (0, 2), (1, 1)] {
                        let yy = mirror(y as isize + dy, h as isize);
                        let xx = mirror(x as isize + dx, w as isize);
                        s += ky * kx * src[yy * w + xx] as u32;
                    }
                }
                assert_eq!(g as u32, (s + 8) >> 4, "{w}x{h} at ({x}, {y})");
            }
        }
    }
}

#[test]
fn the_background_follows_a_constant_frame_without_drift() {
    let cfg = MotionConfig {
        global_change: Fraction::lit(1.0),
        global_spread: Fraction::lit(1.0),
        ..MotionConfig::default()
    };
    let mut det = Detector::new(&cfg, 16, 16, FPS);
    det.process(&[0; 256]).unwrap();
    let f = [200u8; 256];
    for _ in 0..100 {
        det.process(&f).unwrap();
    }
    // (1 - 0.05)^100 leaves 0.6% of the 200 step: about one grey level.
    assert!(
        det.bg.mean.iter().all(|&b| (b >> FRAC).abs_diff(199) <= 1),
        "{:?}",
        &det.bg.mean[..4]
    );
    for _ in 0..200 {
        det.process(&f).unwrap();
    }
    assert!(
        det.bg.mean.iter().all(|&b| b.abs_diff(200 << FRAC) <= 20),
        "{:?}",
        &det.bg.mean[..4]
    );
}
