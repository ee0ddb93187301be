//! Mask polygons (normalised coordinates) rasterised once per camera into a per-pixel
//! "counts" map: 1 where change counts, 0 where it is ignored.

/// Rasterises `polygons` for a `width` x `height` frame. A pixel is masked when its
/// centre lies inside any polygon (even-odd rule per polygon).
pub fn rasterise(polygons: &[Vec<[f64; 2]>], width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut active = vec![1u8; w * h];
    let mut xs: Vec<f64> = Vec::new();
    for poly in polygons.iter().filter(|p| p.len() >= 3) {
        for y in 0..h {
            let cy = (y as f64 + 0.5) / h as f64;
            xs.clear();
            for i in 0..poly.len() {
                let [x0, y0] = poly[i];
                let [x1, y1] = poly[(i + 1) % poly.len()];
                // Half-open in y so a vertex shared by two edges is counted once.
                if (y0 <= cy) != (y1 <= cy) {
                    xs.push(x0 + (cy - y0) / (y1 - y0) * (x1 - x0));
                }
            }
            xs.sort_by(f64::total_cmp);
            let row = &mut active[y * w..(y + 1) * w];
            for pair in xs.chunks_exact(2) {
                // Pixels whose centre (x + 0.5) / w lies in [pair[0], pair[1]).
                let from = (pair[0] * w as f64 - 0.5).ceil().max(0.0) as usize;
                let to = ((pair[1] * w as f64 - 0.5).ceil().max(0.0) as usize).min(w);
                if from < to {
                    row[from..to].fill(0);
                }
            }
        }
    }
    active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rectangle_masks_the_pixels_whose_centres_it_covers() {
        let m = rasterise(
            &[vec![[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]],
            8,
            4,
        );
        let expect: Vec<u8> = [
            [1, 1, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0, 0, 1, 1],
            [1, 1, 0, 0, 0, 0, 1, 1],
        ]
        .concat();
        assert_eq!(m, expect);
    }

    #[test]
    fn a_triangle_masks_about_half_of_the_frame() {
        let m = rasterise(&[vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], 100, 100);
        let masked = m.iter().filter(|&&v| v == 0).count();
        assert!((4900..=5100).contains(&masked), "masked {masked}");
        assert_eq!(m[0], 0);
        assert_eq!(m[99 * 100 + 99], 1);
    }

    #[test]
    fn no_polygons_leave_every_pixel_active() {
        assert!(rasterise(&[], 5, 3).iter().all(|&v| v == 1));
    }
}
