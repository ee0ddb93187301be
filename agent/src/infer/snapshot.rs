//! Event snapshots: boxes and labels drawn on the frame with a tiny built-in bitmap
//! font, privacy classes pixelated first, then JPEG-encoded. Every image the worker
//! publishes goes through [`render`], so privacy boxes are never published in clear.

use super::InferError;
use crate::image::{encode_jpeg, RgbImage};
use crate::wire::detections::Detection;

/// 5x7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        ' ' => [0; 7],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

const PALETTE: [[u8; 3]; 8] = [
    [255, 56, 56],
    [56, 255, 56],
    [56, 120, 255],
    [255, 210, 0],
    [255, 0, 200],
    [0, 220, 220],
    [255, 140, 0],
    [160, 90, 255],
];

/// Colour of a class's boxes.
pub fn class_colour(class_id: usize) -> [u8; 3] {
    PALETTE[class_id % PALETTE.len()]
}

/// Integer rectangle (x0, y0, x1, y1), exclusive end, clipped to the image.
fn clip(img: &RgbImage, x: f32, y: f32, w: f32, h: f32) -> Option<(u32, u32, u32, u32)> {
    let x0 = x.floor().max(0.0) as u32;
    let y0 = y.floor().max(0.0) as u32;
    let x1 = ((x + w).ceil().max(0.0) as u32).min(img.width);
    let y1 = ((y + h).ceil().max(0.0) as u32).min(img.height);
    (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
}

fn fill(img: &mut RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), c: [u8; 3]) {
    let w = img.width as usize;
    for y in y0 as usize..y1 as usize {
        for px in img.data[(y * w + x0 as usize) * 3..(y * w + x1 as usize) * 3].chunks_exact_mut(3)
        {
            px.copy_from_slice(&c);
        }
    }
}

/// Replaces the rectangle by blocks of their mean colour.
pub fn pixelate(img: &mut RgbImage, x: f32, y: f32, w: f32, h: f32, block: u32) {
    let Some((x0, y0, x1, y1)) = clip(img, x, y, w, h) else {
        return;
    };
    let block = block.max(1);
    let iw = img.width as usize;
    let mut by = y0;
    while by < y1 {
        let ey = (by + block).min(y1);
        let mut bx = x0;
        while bx < x1 {
            let ex = (bx + block).min(x1);
            let mut sum = [0u64; 3];
            for yy in by..ey {
                for xx in bx..ex {
                    let p = (yy as usize * iw + xx as usize) * 3;
                    for (s, v) in sum.iter_mut().zip(&img.data[p..p + 3]) {
                        *s += *v as u64;
                    }
                }
            }
            let n = ((ey - by) * (ex - bx)) as u64;
            let mean = sum.map(|s| (s / n) as u8);
            fill(img, (bx, by, ex, ey), mean);
            bx = ex;
        }
        by = ey;
    }
}

fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, c: [u8; 3]) {
    let mut cx = x;
    for ch in text.chars() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) != 0 {
                    let px = cx + col * scale;
                    let py = y + row as u32 * scale;
                    if px < img.width && py < img.height {
                        let r = (
                            px,
                            py,
                            (px + scale).min(img.width),
                            (py + scale).min(img.height),
                        );
                        fill(img, r, c);
                    }
                }
            }
        }
        cx += 6 * scale;
        if cx >= img.width {
            break;
        }
    }
}

fn draw_box(img: &mut RgbImage, d: &Detection, thickness: u32, scale: u32) {
    let Some((x0, y0, x1, y1)) = clip(img, d.x, d.y, d.w, d.h) else {
        return;
    };
    let c = class_colour(d.class_id);
    let t = thickness;
    fill(img, (x0, y0, x1, (y0 + t).min(y1)), c);
    fill(img, (x0, y1.saturating_sub(t).max(y0), x1, y1), c);
    fill(img, (x0, y0, (x0 + t).min(x1), y1), c);
    fill(img, (x1.saturating_sub(t).max(x0), y0, x1, y1), c);
    let label = format!("{} {:.0}%", d.class, d.score * 100.0);
    let lw = (label.chars().count() as u32 * 6 + 1) * scale;
    let lh = 9 * scale;
    // Above the box when there is room, else inside its top edge.
    let ly = if y0 >= lh { y0 - lh } else { y0 };
    let bg = (x0, ly, (x0 + lw).min(img.width), (ly + lh).min(img.height));
    fill(img, bg, c);
    draw_text(img, x0 + scale, ly + scale, &label, scale, [0, 0, 0]);
}

/// The published picture of a frame: privacy classes pixelated, then every detection
/// boxed and labelled.
pub fn render(frame: &RgbImage, detections: &[Detection], privacy: &[String]) -> RgbImage {
    let mut img = frame.clone();
    for d in detections.iter().filter(|d| privacy.contains(&d.class)) {
        let block = ((d.w.min(d.h) / 6.0) as u32).clamp(4, 32);
        pixelate(&mut img, d.x, d.y, d.w, d.h, block);
    }
    let scale = if img.width >= 800 { 2 } else { 1 };
    let thickness = (img.width / 320).clamp(1, 4);
    for d in detections {
        draw_box(&mut img, d, thickness, scale);
    }
    img
}

/// [`render`] and encode as JPEG.
pub fn snapshot_jpeg(
    frame: &RgbImage,
    detections: &[Detection],
    privacy: &[String],
    quality: u8,
) -> Result<Vec<u8>, InferError> {
    Ok(encode_jpeg(&render(frame, detections, privacy), quality)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &str, class_id: usize, x: f32, y: f32, w: f32, h: f32) -> Detection {
        Detection {
            class_id,
            class: class.into(),
            score: 0.9,
            x,
            y,
            w,
            h,
        }
    }

    fn checker(w: u32, h: u32) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                data.extend([v, v, v]);
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn privacy_boxes_are_pixelated_and_the_rest_is_untouched() {
        let img = checker(64, 64);
        let out = render(
            &img,
            &[det("person", 1, 16.0, 16.0, 32.0, 32.0)],
            &["person".into()],
        );
        let px = |x: u32, y: u32| &out.data[((y * 64 + x) * 3) as usize..][..3];
        // Inside (away from the drawn border) the checkerboard became flat grey blocks.
        assert_eq!(px(24, 24), px(25, 24));
        assert!(px(24, 24)[0].abs_diff(127) <= 8, "{:?}", px(24, 24));
        // Far outside the box the checkerboard is intact.
        assert_eq!(px(60, 60), &[255, 255, 255]);
        assert_eq!(px(61, 60), &[0, 0, 0]);
    }

    #[test]
    fn non_privacy_boxes_keep_their_pixels_and_get_an_outline_and_label() {
        let img = checker(64, 64);
        let d = det("fire", 0, 16.0, 24.0, 32.0, 32.0);
        let out = render(&img, std::slice::from_ref(&d), &["person".into()]);
        let px = |x: u32, y: u32| out.data[((y * 64 + x) * 3) as usize..][..3].to_vec();
        assert_eq!(
            px(30, 40),
            img.data[((40 * 64 + 30) * 3) as usize..][..3].to_vec()
        );
        assert_eq!(px(16, 40), class_colour(0).to_vec()); // left edge
        assert_eq!(px(30, 24), class_colour(0).to_vec()); // top edge
                                                          // Label background above the box, text pixels in black.
        let label: Vec<Vec<u8>> = (16..40).map(|x| px(x, 18)).collect();
        assert!(label.iter().any(|p| p == &class_colour(0).to_vec()));
        assert!(label.iter().any(|p| p == &vec![0, 0, 0]));
    }

    #[test]
    fn boxes_outside_or_across_the_edge_do_not_panic_and_the_clipped_privacy_box_is_pixelated() {
        let img = checker(64, 48);
        let dets = [
            det("fire", 0, -50.0, -50.0, 10.0, 10.0),
            det("fire", 0, 40.0, 30.0, 100.0, 100.0),
            det("person", 1, -16.0, -16.0, 48.0, 40.0),
        ];
        let jpeg = snapshot_jpeg(&img, &dets, &["person".into()], 90).unwrap();
        let out = crate::image::decode_jpeg(&jpeg).unwrap();
        assert_eq!((out.width, out.height), (64, 48));
        // Grey spread (max - min of the red channel) over a region of the decoded JPEG.
        let spread = |x0: u32, y0: u32, x1: u32, y1: u32| {
            let vals: Vec<u8> = (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .map(|(x, y)| out.data[((y * 64 + x) * 3) as usize])
                .collect();
            vals.iter().max().unwrap() - vals.iter().min().unwrap()
        };
        // The part of the person inside the picture (0..32 x 0..24), away from its
        // outline and label: flat blocks, where the checkerboard spans 0..255.
        let inside = spread(8, 12, 28, 20);
        assert!(inside < 60, "privacy region not pixelated: spread {inside}");
        // The checkerboard outside every box survives.
        let outside = spread(44, 4, 60, 20);
        assert!(
            outside > 150,
            "untouched region lost its detail: spread {outside}"
        );
    }
}
