//! Frame → model tensor: letterbox (keep aspect, pad) or stretch with fast_image_resize
//! (bilinear, OpenCV-style fixed kernel), channel order, scale, NCHW or NHWC.
//! [`Geometry`] is the pure maths, used again to map boxes back to the frame.

use fast_image_resize as fir;

use super::config::{ChannelOrder, ResizeMode};
use super::InferError;
use crate::image::RgbImage;

/// Grey used for letterbox padding (the ONNX model-zoo YOLOv4 preprocessing value).
pub const PAD_VALUE: u8 = 128;

/// Where a frame lands in the model input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub src_w: u32,
    pub src_h: u32,
    /// Size of the resized frame inside the input.
    pub new_w: u32,
    pub new_h: u32,
    /// Offset of the resized frame (letterbox padding on the left and top).
    pub pad_x: u32,
    pub pad_y: u32,
    /// Input pixels per frame pixel, per axis.
    pub sx: f32,
    pub sy: f32,
}

impl Geometry {
    pub fn new(mode: ResizeMode, src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        let (new_w, new_h) = match mode {
            ResizeMode::Stretch => (dst_w, dst_h),
            ResizeMode::Letterbox => {
                let s = (dst_w as f64 / src_w as f64).min(dst_h as f64 / src_h as f64);
                (
                    ((src_w as f64 * s).round() as u32).clamp(1, dst_w),
                    ((src_h as f64 * s).round() as u32).clamp(1, dst_h),
                )
            }
        };
        Self {
            src_w,
            src_h,
            new_w,
            new_h,
            pad_x: (dst_w - new_w) / 2,
            pad_y: (dst_h - new_h) / 2,
            sx: new_w as f32 / src_w as f32,
            sy: new_h as f32 / src_h as f32,
        }
    }

    /// Maps a box (x1, y1, x2, y2) in input pixels to frame pixels, clamped to the frame.
    pub fn to_frame(&self, b: [f32; 4]) -> [f32; 4] {
        let fx = |x: f32| ((x - self.pad_x as f32) / self.sx).clamp(0.0, self.src_w as f32);
        let fy = |y: f32| ((y - self.pad_y as f32) / self.sy).clamp(0.0, self.src_h as f32);
        [fx(b[0]), fy(b[1]), fx(b[2]), fy(b[3])]
    }
}

/// The model input's shape and value convention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputFormat {
    pub width: u32,
    pub height: u32,
    pub nchw: bool,
    pub order: ChannelOrder,
    pub scale: f32,
    pub mode: ResizeMode,
}

impl InputFormat {
    /// f32 values per image.
    pub fn len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reusable resizer and buffers (one per pipeline).
pub struct Preprocessor {
    resizer: fir::Resizer,
    options: fir::ResizeOptions,
    resized: Vec<u8>,
    lut: [f32; 256],
    format: InputFormat,
}

impl Preprocessor {
    pub fn new(format: InputFormat) -> Self {
        let mut lut = [0f32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = i as f32 * format.scale;
        }
        Self {
            resizer: fir::Resizer::new(),
            options: fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Interpolation(fir::FilterType::Bilinear)),
            resized: Vec::new(),
            lut,
            format,
        }
    }

    pub fn format(&self) -> &InputFormat {
        &self.format
    }

    /// Writes one frame into `out` (one image slot of the input tensor), every value of it.
    pub fn fill(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<Geometry, InferError> {
        let f = self.format;
        debug_assert_eq!(out.len(), f.len());
        let geo = Geometry::new(f.mode, img.width, img.height, f.width, f.height);
        let src: &[u8] = if geo.new_w == img.width && geo.new_h == img.height {
            &img.data
        } else {
            let src =
                fir::images::ImageRef::new(img.width, img.height, &img.data, fir::PixelType::U8x3)
                    .map_err(|e| InferError::BadImage {
                        bytes: img.data.len(),
                        reason: format!("resize source: {e}"),
                    })?;
            self.resized
                .resize(geo.new_w as usize * geo.new_h as usize * 3, 0);
            let mut dst = fir::images::Image::from_slice_u8(
                geo.new_w,
                geo.new_h,
                &mut self.resized,
                fir::PixelType::U8x3,
            )
            .map_err(|e| InferError::BadImage {
                bytes: img.data.len(),
                reason: format!("resize target: {e}"),
            })?;
            self.resizer
                .resize(&src, &mut dst, &self.options)
                .map_err(|e| InferError::BadImage {
                    bytes: img.data.len(),
                    reason: format!("resize: {e}"),
                })?;
            &self.resized
        };
        write_tensor(src, &geo, &f, &self.lut, out);
        Ok(geo)
    }
}

/// Copies the resized RGB frame into the tensor slot, padding around it.
fn write_tensor(src: &[u8], geo: &Geometry, f: &InputFormat, lut: &[f32; 256], out: &mut [f32]) {
    let (w, h) = (f.width as usize, f.height as usize);
    let (nw, nh) = (geo.new_w as usize, geo.new_h as usize);
    let (px, py) = (geo.pad_x as usize, geo.pad_y as usize);
    let pad = lut[PAD_VALUE as usize];
    // Source channel for each output channel.
    let map: [usize; 3] = match f.order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let padded = nw != w || nh != h;
    if f.nchw {
        let plane = w * h;
        for (c, &sc) in map.iter().enumerate() {
            let dst = &mut out[c * plane..(c + 1) * plane];
            if padded {
                dst.fill(pad);
            }
            for y in 0..nh {
                let srow = &src[y * nw * 3..(y + 1) * nw * 3];
                let drow = &mut dst[(py + y) * w + px..(py + y) * w + px + nw];
                for (d, s) in drow.iter_mut().zip(srow.chunks_exact(3)) {
                    *d = lut[s[sc] as usize];
                }
            }
        }
    } else {
        if padded {
            out.fill(pad);
        }
        for y in 0..nh {
            let srow = &src[y * nw * 3..(y + 1) * nw * 3];
            let drow = &mut out[((py + y) * w + px) * 3..((py + y) * w + px + nw) * 3];
            for (d, s) in drow.chunks_exact_mut(3).zip(srow.chunks_exact(3)) {
                d[0] = lut[s[map[0]] as usize];
                d[1] = lut[s[map[1]] as usize];
                d[2] = lut[s[map[2]] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_pads_the_short_axis_evenly() {
        // 640x480 into 416x416: scale 0.65, 416x312, 52 px above and below.
        let g = Geometry::new(ResizeMode::Letterbox, 640, 480, 416, 416);
        assert_eq!((g.new_w, g.new_h, g.pad_x, g.pad_y), (416, 312, 0, 52));
        // Portrait 480x640: padding on the x axis instead.
        let g = Geometry::new(ResizeMode::Letterbox, 480, 640, 416, 416);
        assert_eq!((g.new_w, g.new_h, g.pad_x, g.pad_y), (312, 416, 52, 0));
        // Odd remainder: 1280x720 into 416: 416x234, 182 px of padding, 91 above.
        let g = Geometry::new(ResizeMode::Letterbox, 1280, 720, 416, 416);
        assert_eq!((g.new_w, g.new_h, g.pad_x, g.pad_y), (416, 234, 0, 91));
    }

    #[test]
    fn boxes_map_back_through_letterbox_padding_on_either_axis() {
        // Landscape: a box at input (104, 52+65) .. (208, 52+130) is, divided by 0.65,
        // frame (160, 100) .. (320, 200).
        let g = Geometry::new(ResizeMode::Letterbox, 640, 480, 416, 416);
        let b = g.to_frame([104.0, 117.0, 208.0, 182.0]);
        for (got, want) in b.iter().zip([160.0, 100.0, 320.0, 200.0]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        // Portrait: x padded by 52.
        let g = Geometry::new(ResizeMode::Letterbox, 480, 640, 416, 416);
        let b = g.to_frame([52.0 + 65.0, 104.0, 52.0 + 130.0, 208.0]);
        for (got, want) in b.iter().zip([100.0, 160.0, 200.0, 320.0]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        // Boxes reaching into the padding are clamped to the frame.
        let b = g.to_frame([10.0, -5.0, 500.0, 420.0]);
        assert_eq!(b, [0.0, 0.0, 480.0, 640.0]);
    }

    #[test]
    fn stretch_scales_each_axis_on_its_own() {
        let g = Geometry::new(ResizeMode::Stretch, 832, 208, 416, 416);
        assert_eq!((g.pad_x, g.pad_y, g.sx, g.sy), (0, 0, 0.5, 2.0));
        assert_eq!(
            g.to_frame([100.0, 100.0, 200.0, 300.0]),
            [200.0, 50.0, 400.0, 150.0]
        );
    }

    fn format(nchw: bool, order: ChannelOrder) -> InputFormat {
        InputFormat {
            width: 4,
            height: 4,
            nchw,
            order,
            scale: 1.0,
            mode: ResizeMode::Letterbox,
        }
    }

    #[test]
    fn tensor_holds_the_frame_with_padding_in_the_chosen_order() {
        // A 4x2 frame (no resize needed) letterboxed into 4x4: one padding row above
        // and one below. Pixel (x, y) has R = 10x+y, G = 100, B = 200.
        let mut data = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                data.extend([10 * x + y, 100, 200]);
            }
        }
        let img = RgbImage::new(4, 2, data).unwrap();
        let mut out = vec![0f32; 48];
        let geo = Preprocessor::new(format(true, ChannelOrder::Rgb))
            .fill(&img, &mut out)
            .unwrap();
        assert_eq!((geo.pad_x, geo.pad_y), (0, 1));
        // NCHW, RGB: plane 0 is R. Row 0 is padding, row 1 is frame row 0.
        assert_eq!(&out[0..4], &[128.0; 4]);
        assert_eq!(&out[4..8], &[0.0, 10.0, 20.0, 30.0]);
        assert_eq!(&out[8..12], &[1.0, 11.0, 21.0, 31.0]);
        assert_eq!(&out[12..16], &[128.0; 4]);
        assert_eq!(out[16 + 5], 100.0);
        assert_eq!(out[32 + 5], 200.0);

        // NHWC, BGR: each pixel is (B, G, R).
        let mut out = vec![0f32; 48];
        Preprocessor::new(format(false, ChannelOrder::Bgr))
            .fill(&img, &mut out)
            .unwrap();
        let px = |x: usize, y: usize| &out[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(px(2, 1), &[200.0, 100.0, 20.0]);
        assert_eq!(px(0, 0), &[128.0, 128.0, 128.0]);
    }

    #[test]
    fn resizing_keeps_a_flat_colour_flat() {
        let img = RgbImage::new(64, 32, [90u8, 60, 30].repeat(64 * 32)).unwrap();
        let mut f = format(true, ChannelOrder::Rgb);
        f.width = 32;
        f.height = 32;
        let mut out = vec![0f32; 32 * 32 * 3];
        let geo = Preprocessor::new(f).fill(&img, &mut out).unwrap();
        assert_eq!((geo.new_w, geo.new_h, geo.pad_y), (32, 16, 8));
        assert_eq!(out[(8 + 3) * 32 + 5], 90.0);
        assert_eq!(out[1024 + (8 + 3) * 32 + 5], 60.0);
    }
}
