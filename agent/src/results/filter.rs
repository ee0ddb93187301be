//! Object filters: which detections count before tracking (Frigate's `filters`). Pure:
//! a box, its score and the rules in, a verdict out.
//!
//! Rules come in layers: the defaults, the class's settings (`[events.tracks.classes.NAME]`),
//! the camera's (`[cameras.objects.NAME]`), each overriding the one before field by field
//! (object masks add up). A zone's rules (`[cameras.zones.Z.objects.NAME]`) apply on top
//! to boxes whose bottom centre is in the zone: such a box must pass them too.

use super::config::{ClassTracks, TracksConfig};
use super::geometry::{contains, Point, Shape};
use super::track::BBox;
use super::zones::Scene;

/// Why a detection was filtered (the `reason` label of `edge_agent_filtered_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    MinArea,
    MaxArea,
    MinRatio,
    MaxRatio,
    MinScore,
    Mask,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MinArea => "min_area",
            Reason::MaxArea => "max_area",
            Reason::MinRatio => "min_ratio",
            Reason::MaxRatio => "max_ratio",
            Reason::MinScore => "min_score",
            Reason::Mask => "mask",
        }
    }
}

/// One layer's filters, as plain numbers. Areas at most 1.0 are fractions of the frame
/// area, larger ones pixels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub min_area: Option<f64>,
    pub max_area: Option<f64>,
    pub min_ratio: Option<f64>,
    pub max_ratio: Option<f64>,
    /// The score a detection needs to start a track: under half of it, it is dropped.
    pub min_score: Option<f32>,
    pub masks: Vec<Shape>,
}

impl Filter {
    /// The object filter of `class` before any camera: the class's settings over the
    /// defaults.
    pub fn of_class(tracks: &TracksConfig, class: &str) -> Filter {
        let min_score = tracks.rules(class).min_score;
        let mut f = tracks
            .classes
            .get(class)
            .map(Filter::of)
            .unwrap_or_default();
        f.min_score = Some(min_score);
        f
    }

    /// The filter fields of `c`.
    pub fn of(c: &ClassTracks) -> Filter {
        Filter {
            min_area: c.min_area,
            max_area: c.max_area,
            min_ratio: c.min_ratio,
            max_ratio: c.max_ratio,
            min_score: c.min_score.map(|s| s.get() as f32),
            masks: c
                .masks
                .iter()
                .map(|p| Shape::Fractions(p.clone()))
                .chain(c.masks_px.iter().map(|p| Shape::Pixels(p.clone())))
                .collect(),
        }
    }

    /// `over` laid on `self`: its fields where set, masks added.
    pub fn then(mut self, over: Filter) -> Filter {
        self.min_area = over.min_area.or(self.min_area);
        self.max_area = over.max_area.or(self.max_area);
        self.min_ratio = over.min_ratio.or(self.min_ratio);
        self.max_ratio = over.max_ratio.or(self.max_ratio);
        self.min_score = over.min_score.or(self.min_score);
        self.masks.extend(over.masks);
        self
    }

    /// Whether box `b` with `score` in a `frame`-sized picture passes; the first rule
    /// it fails otherwise.
    pub fn check(&self, b: &BBox, score: f32, frame: (u32, u32)) -> Result<(), Reason> {
        let area = f64::from(b.w) * f64::from(b.h);
        let frame_area = f64::from(frame.0) * f64::from(frame.1);
        // Fractions of an unknown frame size cannot be judged: the box passes.
        let as_area = |limit: f64| {
            if limit <= 1.0 {
                (frame_area > 0.0).then_some(area / frame_area.max(1.0))
            } else {
                Some(area)
            }
        };
        if let Some(min) = self.min_area {
            if as_area(min).is_some_and(|a| a < min) {
                return Err(Reason::MinArea);
            }
        }
        if let Some(max) = self.max_area {
            if as_area(max).is_some_and(|a| a > max) {
                return Err(Reason::MaxArea);
            }
        }
        let ratio = f64::from(b.w) / f64::from(b.h).max(f64::MIN_POSITIVE);
        if self.min_ratio.is_some_and(|m| ratio < m) {
            return Err(Reason::MinRatio);
        }
        if self.max_ratio.is_some_and(|m| ratio > m) {
            return Err(Reason::MaxRatio);
        }
        if self.min_score.is_some_and(|m| score < m / 2.0) {
            return Err(Reason::MinScore);
        }
        let foot = bottom_centre(b, frame);
        if let Some(foot) = foot {
            for m in &self.masks {
                if m.fractions(frame).is_some_and(|p| contains(&p, foot)) {
                    return Err(Reason::Mask);
                }
            }
        }
        Ok(())
    }
}

/// Where box `b` stands: its bottom centre in fractions of a `frame`-sized picture
/// (None without a size).
pub fn bottom_centre(b: &BBox, frame: (u32, u32)) -> Option<Point> {
    (frame.0 > 0 && frame.1 > 0).then(|| {
        [
            (f64::from(b.x) + f64::from(b.w) / 2.0) / f64::from(frame.0),
            (f64::from(b.y) + f64::from(b.h)) / f64::from(frame.1),
        ]
    })
}

/// The verdict on one detection of `class` on a camera: the zones it stands in (by
/// name) and the score it needs to start a track, or why it was filtered. `base` is
/// the class's filter before the camera (defaults and `[events.tracks.classes.NAME]`).
pub fn judge(
    scene: &Scene,
    base: &Filter,
    class: &str,
    b: &BBox,
    score: f32,
    frame: (u32, u32),
) -> Result<(Vec<String>, Option<f32>), Reason> {
    let camera = match scene.objects.get(class) {
        Some(c) => base.clone().then(Filter::of(c)),
        None => base.clone(),
    };
    camera.check(b, score, frame)?;
    let mut min_score = camera.min_score;
    let mut zones = Vec::new();
    if let Some(foot) = bottom_centre(b, frame) {
        for z in scene.zones_at(class, foot, frame) {
            if let Some(o) = z.objects.get(class) {
                let f = Filter::of(o);
                f.check(b, score, frame)?;
                if let Some(s) = f.min_score {
                    min_score = Some(min_score.map_or(s, |m| m.max(s)));
                }
            }
            zones.push(z.name.clone());
        }
    }
    Ok((zones, min_score))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::zones::ZoneConfig;
    use crate::values::Fraction;

    fn bx(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox { x, y, w, h }
    }

    #[test]
    fn each_filter_names_the_rule_a_box_fails() {
        let frame = (1000, 500);
        let f = |edit: &dyn Fn(&mut Filter)| {
            let mut f = Filter::default();
            edit(&mut f);
            f
        };
        let rows: Vec<(Filter, BBox, f32, Result<(), Reason>)> = vec![
            (Filter::default(), bx(0.0, 0.0, 1.0, 1.0), 0.1, Ok(())),
            // 20 x 20 = 400 px under 500 px.
            (
                f(&|f| f.min_area = Some(500.0)),
                bx(0.0, 0.0, 20.0, 20.0),
                0.9,
                Err(Reason::MinArea),
            ),
            (
                f(&|f| f.min_area = Some(300.0)),
                bx(0.0, 0.0, 20.0, 20.0),
                0.9,
                Ok(()),
            ),
            // 100 x 100 = 2% of the frame, over a max of 1%.
            (
                f(&|f| f.max_area = Some(0.01)),
                bx(0.0, 0.0, 100.0, 100.0),
                0.9,
                Err(Reason::MaxArea),
            ),
            (
                f(&|f| f.max_area = Some(0.05)),
                bx(0.0, 0.0, 100.0, 100.0),
                0.9,
                Ok(()),
            ),
            // A pole: 10 wide, 100 high.
            (
                f(&|f| f.min_ratio = Some(0.5)),
                bx(0.0, 0.0, 10.0, 100.0),
                0.9,
                Err(Reason::MinRatio),
            ),
            (
                f(&|f| f.max_ratio = Some(2.0)),
                bx(0.0, 0.0, 300.0, 100.0),
                0.9,
                Err(Reason::MaxRatio),
            ),
            (
                f(&|f| f.min_score = Some(0.6)),
                bx(0.0, 0.0, 10.0, 10.0),
                0.29,
                Err(Reason::MinScore),
            ),
            // Between half of min_score and it: kept, to continue a track.
            (
                f(&|f| f.min_score = Some(0.6)),
                bx(0.0, 0.0, 10.0, 10.0),
                0.31,
                Ok(()),
            ),
            // Standing at (0.1, 0.2): in a mask over the top-left quarter.
            (
                f(&|f| {
                    f.masks = vec![Shape::Fractions(vec![
                        [0.0, 0.0],
                        [0.5, 0.0],
                        [0.5, 0.5],
                        [0.0, 0.5],
                    ])]
                }),
                bx(50.0, 0.0, 100.0, 100.0),
                0.9,
                Err(Reason::Mask),
            ),
            // Its top is in the mask, its foot is not.
            (
                f(&|f| {
                    f.masks = vec![Shape::Pixels(vec![
                        [0.0, 0.0],
                        [500.0, 0.0],
                        [500.0, 250.0],
                        [0.0, 250.0],
                    ])]
                }),
                bx(50.0, 200.0, 100.0, 100.0),
                0.9,
                Ok(()),
            ),
        ];
        for (filter, b, score, want) in rows {
            assert_eq!(
                filter.check(&b, score, frame),
                want,
                "{filter:?} {b:?} {score}"
            );
        }
    }

    #[test]
    fn camera_rules_override_the_class_and_zone_rules_apply_inside_the_zone() {
        let mut objects = BTreeMap::new();
        objects.insert(
            "fire".to_string(),
            ClassTracks {
                min_area: Some(100.0),
                ..Default::default()
            },
        );
        let mut zones = BTreeMap::new();
        zones.insert(
            "road".to_string(),
            ZoneConfig {
                points: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
                objects: [(
                    "fire".to_string(),
                    ClassTracks {
                        min_area: Some(1000.0),
                        min_score: Some(Fraction::lit(0.8)),
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            },
        );
        let scene = Scene::new(&zones, &objects);
        let base = Filter {
            min_area: Some(5000.0),
            min_score: Some(0.5),
            ..Default::default()
        };
        let frame = (1000, 1000);
        // 20 x 20 = 400 px: the camera's 100 replaces the class's 5000. Above the road.
        assert_eq!(
            judge(&scene, &base, "fire", &bx(0.0, 0.0, 20.0, 20.0), 0.9, frame),
            Ok((vec![], Some(0.5)))
        );
        // The same box standing on the road: the road's 1000 px applies.
        assert_eq!(
            judge(
                &scene,
                &base,
                "fire",
                &bx(0.0, 700.0, 20.0, 20.0),
                0.9,
                frame
            ),
            Err(Reason::MinArea)
        );
        // Large enough for the road: in it, and it needs the road's score.
        assert_eq!(
            judge(
                &scene,
                &base,
                "fire",
                &bx(0.0, 700.0, 40.0, 40.0),
                0.9,
                frame
            ),
            Ok((vec!["road".to_string()], Some(0.8)))
        );
        // Another class: the class rules alone (no base filter for it here).
        assert_eq!(
            judge(
                &scene,
                &Filter::default(),
                "knife",
                &bx(0.0, 700.0, 5.0, 5.0),
                0.9,
                frame
            ),
            Ok((vec!["road".to_string()], None))
        );
    }
}
