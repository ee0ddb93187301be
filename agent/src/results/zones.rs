//! Zones and object masks: named polygons of a camera's view, and the geometry that
//! says whether an object is in one. Pure: polygons and points in, answers out.
//!
//! An object's position is the bottom centre of its box (where it touches the ground,
//! as Frigate does): a car on the carriageway is on it even when its roof overhangs
//! the pavement. Polygons are written in fractions of the frame (`points`, 0.0..=1.0)
//! or in camera pixels (`points_px`); pixels become fractions once the frame size is
//! known, so everything below works in fractions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::ClassTracks;
pub use super::geometry::{check_polygon, contains, Point, Shape};

/// One zone of a camera (`[cameras.zones.NAME]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The polygon in fractions of the frame (0.0..=1.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<Point>,
    /// The polygon in camera pixels (the size of the frames the boxes are in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points_px: Vec<Point>,
    /// Classes that can be in the zone (empty: every class).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Object filters per class for boxes whose bottom centre is in the zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, ClassTracks>,
}

impl ZoneConfig {
    /// The zone's polygon: `points`, else `points_px`.
    pub fn shape(&self) -> Shape {
        if self.points_px.is_empty() {
            Shape::Fractions(self.points.clone())
        } else {
            Shape::Pixels(self.points_px.clone())
        }
    }

    /// Checks the zone; returns (key relative to it, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match (self.points.is_empty(), self.points_px.is_empty()) {
            (true, true) => errs.push((
                "points".into(),
                "a zone needs a polygon: points (fractions of the frame) or points_px (pixels)"
                    .into(),
            )),
            (false, false) => errs.push((
                "points_px".into(),
                "give either points (fractions) or points_px (pixels), not both".into(),
            )),
            (false, true) => errs.extend(
                check_polygon(&self.points, true)
                    .into_iter()
                    .map(|m| ("points".to_string(), m)),
            ),
            (true, false) => errs.extend(
                check_polygon(&self.points_px, false)
                    .into_iter()
                    .map(|m| ("points_px".to_string(), m)),
            ),
        }
        for (class, o) in &self.objects {
            for (key, set) in [
                ("confirm_frames", o.confirm_frames.is_some()),
                ("forget_after", o.forget_after.is_some()),
                ("threshold", o.threshold.is_some()),
                ("required_zones", o.required_zones.is_some()),
            ] {
                if set {
                    errs.push((
                        format!("objects.{class}.{key}"),
                        "is a track setting: set it per class globally ([events.tracks.classes.NAME]) or per camera ([cameras.objects.NAME]), not per zone".into(),
                    ));
                }
            }
            errs.extend(
                o.check_filters()
                    .into_iter()
                    .map(|(k, m)| (format!("objects.{class}.{k}"), m)),
            );
        }
        errs
    }
}

/// One camera's zones, resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Zone {
    pub name: String,
    pub shape: Shape,
    pub classes: Vec<String>,
    pub objects: BTreeMap<String, ClassTracks>,
}

impl Default for Shape {
    fn default() -> Self {
        Shape::Fractions(Vec::new())
    }
}

/// What one camera adds to the global event settings: its zones and its object rules
/// per class (`[cameras.objects.NAME]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scene {
    pub zones: Vec<Zone>,
    pub objects: BTreeMap<String, ClassTracks>,
}

impl Scene {
    pub fn new(
        zones: &BTreeMap<String, ZoneConfig>,
        objects: &BTreeMap<String, ClassTracks>,
    ) -> Self {
        Scene {
            zones: zones
                .iter()
                .map(|(name, z)| Zone {
                    name: name.clone(),
                    shape: z.shape(),
                    classes: z.classes.clone(),
                    objects: z.objects.clone(),
                })
                .collect(),
            objects: objects.clone(),
        }
    }

    /// The zones (in name order) a `class` object standing at `at` (fractions of a
    /// `frame`-sized picture) is in.
    pub fn zones_at(&self, class: &str, at: Point, frame: (u32, u32)) -> Vec<&Zone> {
        self.zones
            .iter()
            .filter(|z| z.classes.is_empty() || z.classes.iter().any(|c| c == class))
            .filter(|z| z.shape.fractions(frame).is_some_and(|p| contains(&p, at)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [Point; 4] = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]];

    #[test]
    fn points_inside_outside_and_on_the_edge_of_a_polygon() {
        let l_shape = [
            [0.0, 0.0],
            [1.0, 0.0],
            [1.0, 0.5],
            [0.5, 0.5],
            [0.5, 1.0],
            [0.0, 1.0],
        ];
        let rows: [(&[Point], Point, bool); 8] = [
            (&SQUARE, [0.5, 0.5], true),
            (&SQUARE, [0.1, 0.5], false),
            (&SQUARE, [0.9, 0.9], false),
            (&SQUARE, [0.8, 0.5], true),
            (&SQUARE, [0.2, 0.2], true),
            (&l_shape, [0.25, 0.75], true),
            (&l_shape, [0.75, 0.75], false),
            (&l_shape[..2], [0.5, 0.0], false),
        ];
        for (poly, p, want) in rows {
            assert_eq!(contains(poly, p), want, "{p:?} in {poly:?}");
        }
    }

    #[test]
    fn bad_polygons_give_the_exact_problem() {
        let bow_tie: Vec<Point> = vec![[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]];
        let rows: Vec<(Vec<Point>, bool, Vec<&str>)> = vec![
            (SQUARE.to_vec(), true, vec![]),
            (vec![[0.0, 0.0], [1.0, 0.0]], true, vec!["a polygon needs at least 3 points, got 2"]),
            (
                vec![[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]],
                true,
                vec!["point [1.5, 0] is outside the frame: fractions are 0.0..=1.0 (use points_px for pixels)"],
            ),
            (vec![[0.0, 0.0], [1500.0, 0.0], [0.0, 700.0]], false, vec![]),
            (
                vec![[0.0, -4.0], [1500.0, 0.0], [0.0, 700.0]],
                false,
                vec!["point [0, -4] is outside the frame: pixels are 0 or more"],
            ),
            (
                bow_tie,
                true,
                vec!["the polygon crosses itself: edge 0 ([0.0, 0.0] to [1.0, 1.0]) crosses edge 2 ([1.0, 0.0] to [0.0, 1.0]); list the points in order around the area"],
            ),
        ];
        for (poly, fractions, want) in rows {
            assert_eq!(check_polygon(&poly, fractions), want, "{poly:?}");
        }
    }

    #[test]
    fn a_zone_in_pixels_is_placed_by_the_frame_size_and_classes_limit_who_is_in_it() {
        let mut zones = BTreeMap::new();
        zones.insert(
            "road".to_string(),
            ZoneConfig {
                points_px: vec![[0.0, 360.0], [1280.0, 360.0], [1280.0, 720.0], [0.0, 720.0]],
                ..Default::default()
            },
        );
        zones.insert(
            "lane".to_string(),
            ZoneConfig {
                points: vec![[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]],
                classes: vec!["accident".into()],
                ..Default::default()
            },
        );
        let scene = Scene::new(&zones, &BTreeMap::new());
        let names = |class: &str, at: Point, frame| -> Vec<String> {
            scene
                .zones_at(class, at, frame)
                .iter()
                .map(|z| z.name.clone())
                .collect()
        };
        assert_eq!(
            names("accident", [0.25, 0.75], (1280, 720)),
            ["lane", "road"]
        );
        assert_eq!(names("fire", [0.25, 0.75], (1280, 720)), ["road"]);
        assert_eq!(
            names("fire", [0.25, 0.25], (1280, 720)),
            Vec::<String>::new()
        );
        // The same pixels on a larger frame cover its top half only.
        assert_eq!(
            names("fire", [0.75, 0.75], (2560, 1440)),
            Vec::<String>::new()
        );
        // No size yet: pixel zones cannot be placed.
        assert_eq!(names("fire", [0.25, 0.75], (0, 0)), Vec::<String>::new());
        assert!(scene.zones[1].shape.outside((640, 360)));
        assert!(!scene.zones[1].shape.outside((1280, 720)));
    }
}
