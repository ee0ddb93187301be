//! Polygon geometry for zones and object masks: points and polygons in, answers out
//! (valid, self-crossing, inside). Polygons are in fractions of the frame (0.0..=1.0)
//! or in camera pixels until the frame size is known.

/// A point `[x, y]`.
pub type Point = [f64; 2];

/// A polygon in its units.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Fractions(Vec<Point>),
    Pixels(Vec<Point>),
}

impl Shape {
    /// The polygon in fractions of a `frame`-sized picture (None without a size).
    pub fn fractions(&self, frame: (u32, u32)) -> Option<Vec<Point>> {
        match self {
            Shape::Fractions(p) => Some(p.clone()),
            Shape::Pixels(p) => {
                let (w, h) = (f64::from(frame.0), f64::from(frame.1));
                (w > 0.0 && h > 0.0).then(|| p.iter().map(|[x, y]| [x / w, y / h]).collect())
            }
        }
    }

    /// Whether a pixel polygon reaches past a `frame`-sized picture.
    pub fn outside(&self, frame: (u32, u32)) -> bool {
        match self {
            Shape::Fractions(_) => false,
            Shape::Pixels(p) => p
                .iter()
                .any(|[x, y]| *x > f64::from(frame.0) || *y > f64::from(frame.1)),
        }
    }
}

/// Checks one polygon as written; `units` says how its points are read. Returns the
/// problems found.
pub fn check_polygon(points: &[Point], fractions: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if points.len() < 3 {
        errs.push(format!(
            "a polygon needs at least 3 points, got {}",
            points.len()
        ));
        return errs;
    }
    if let Some([x, y]) = points.iter().find(|[x, y]| {
        !x.is_finite()
            || !y.is_finite()
            || *x < 0.0
            || *y < 0.0
            || (fractions && (*x > 1.0 || *y > 1.0))
    }) {
        errs.push(if fractions {
            format!("point [{x}, {y}] is outside the frame: fractions are 0.0..=1.0 (use points_px for pixels)")
        } else {
            format!("point [{x}, {y}] is outside the frame: pixels are 0 or more")
        });
    }
    if let Some((a, b)) = self_intersection(points) {
        errs.push(format!(
            "the polygon crosses itself: edge {a} ({:?} to {:?}) crosses edge {b} ({:?} to {:?}); list the points in order around the area",
            points[a],
            points[(a + 1) % points.len()],
            points[b],
            points[(b + 1) % points.len()],
        ));
    }
    errs
}

/// The first pair of non-adjacent edges that cross (edge i runs from point i to i+1).
pub fn self_intersection(points: &[Point]) -> Option<(usize, usize)> {
    let n = points.len();
    if n < 4 {
        return None;
    }
    for a in 0..n {
        for b in a + 1..n {
            // Adjacent edges share a point; the first and last edges too.
            if b == a + 1 || (a == 0 && b == n - 1) {
                continue;
            }
            let (p1, p2) = (points[a], points[(a + 1) % n]);
            let (q1, q2) = (points[b], points[(b + 1) % n]);
            if segments_cross(p1, p2, q1, q2) {
                return Some((a, b));
            }
        }
    }
    None
}

fn orient(a: Point, b: Point, c: Point) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn on_segment(a: Point, b: Point, p: Point) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

/// Whether segments p1-p2 and q1-q2 touch or cross.
fn segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool {
    let (d1, d2) = (orient(q1, q2, p1), orient(q1, q2, p2));
    let (d3, d4) = (orient(p1, p2, q1), orient(p1, p2, q2));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(q1, q2, p1))
        || (d2 == 0.0 && on_segment(q1, q2, p2))
        || (d3 == 0.0 && on_segment(p1, p2, q1))
        || (d4 == 0.0 && on_segment(p1, p2, q2))
}

/// Whether `p` lies inside `poly` (even-odd rule; points on an edge count as inside).
pub fn contains(poly: &[Point], p: Point) -> bool {
    let n = poly.len();
    if n < 3 {
        return false;
    }
    let mut inside = false;
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + 1) % n]);
        if orient(a, b, p) == 0.0 && on_segment(a, b, p) {
            return true;
        }
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}
