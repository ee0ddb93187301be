//! Images in and out of JPEG (and PNG, for `detect`): the agent encodes escalated
//! frames, the worker decodes them and encodes snapshots. One wrapper over the codecs
//! for both sides; a leaf that depends on nothing else in the crate.
//!
//! jpeg-encoder (SIMD) encodes and zune-jpeg decodes: both pure Rust, and the fastest
//! that build here without downloads. `agent/benches/transport.rs` measures them per
//! 640x360 frame against libjpeg-turbo (through GStreamer's jpegenc/jpegdec) as the
//! baseline; turbojpeg/image were not available offline.

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Largest side accepted, so that a hostile header cannot make us allocate gigabytes.
pub const MAX_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("payload is not a decodable image ({bytes} bytes): {reason}")]
    Undecodable { bytes: usize, reason: String },
    #[error("RGB buffer of {width}x{height} needs {need} bytes, has {len}")]
    BadRgb {
        width: u32,
        height: u32,
        len: usize,
        need: usize,
    },
    #[error("JPEG encoding of {width}x{height} failed: {reason}")]
    Encode {
        width: u32,
        height: u32,
        reason: String,
    },
}

/// An 8-bit RGB image, rows packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, ImageError> {
        check_rgb(&data, width, height)?;
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

fn check_rgb(rgb: &[u8], width: u32, height: u32) -> Result<(), ImageError> {
    let need = width as usize * height as usize * 3;
    if width == 0 || height == 0 || rgb.len() != need {
        return Err(ImageError::BadRgb {
            width,
            height,
            len: rgb.len(),
            need,
        });
    }
    Ok(())
}

fn bad(bytes: &[u8], reason: impl Into<String>) -> ImageError {
    ImageError::Undecodable {
        bytes: bytes.len(),
        reason: reason.into(),
    }
}

/// A JPEG's width and height, read from its header without decoding a pixel (what a
/// decode would allocate is known, and refused, before it happens).
pub fn jpeg_size(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(bad(bytes, "no JPEG start-of-image marker"));
    }
    let options = DecoderOptions::default()
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers()
        .map_err(|e| bad(bytes, format!("JPEG: {e:?}")))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| bad(bytes, "JPEG: no header"))?;
    Ok((w as u32, h as u32))
}

/// Decodes a baseline or progressive JPEG to RGB (greyscale JPEGs are expanded).
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(bad(bytes, "no JPEG start-of-image marker"));
    }
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let data = dec
        .decode()
        .map_err(|e| bad(bytes, format!("JPEG: {e:?}")))?;
    let info = dec.info().ok_or_else(|| bad(bytes, "JPEG: no header"))?;
    RgbImage::new(info.width as u32, info.height as u32, data)
        .map_err(|_| bad(bytes, "JPEG: decoded size does not match its header"))
}

/// Decodes an 8-bit PNG (RGB, RGBA, grey) to RGB.
pub fn decode_png(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(bytes, format!("PNG: {e}")))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(bad(
            bytes,
            format!("PNG: {w}x{h} is larger than {MAX_SIDE}"),
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(bytes, "PNG: image too large"))?;
    let mut buf = vec![0; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(bytes, format!("PNG: {e}")))?;
    buf.truncate(frame.buffer_size());
    let rgb = match frame.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        other => {
            return Err(bad(
                bytes,
                format!("PNG: unsupported colour type {other:?}"),
            ))
        }
    };
    RgbImage::new(w, h, rgb)
}

/// Decodes JPEG or PNG by their signatures.
pub fn decode_any(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(bytes)
    } else {
        decode_jpeg(bytes)
    }
}

/// Encodes packed RGB (3 bytes per pixel) as a baseline JPEG at `quality` (1..=100).
pub fn encode_rgb(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, ImageError> {
    check_rgb(rgb, width, height)?;
    if width > u16::MAX as u32 || height > u16::MAX as u32 {
        return Err(ImageError::Encode {
            width,
            height,
            reason: "too large for JPEG".into(),
        });
    }
    // Roughly 1 byte per 10 pixels at usual qualities; grows if needed.
    let mut out = Vec::with_capacity(rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(
            rgb,
            width as u16,
            height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| ImageError::Encode {
            width,
            height,
            reason: e.to_string(),
        })?;
    Ok(out)
}

/// Encodes an image as a baseline JPEG at `quality` (1..=100).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    encode_rgb(&img.data, img.width, img.height, quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
            }
        }
        v
    }

    #[test]
    fn an_rgb_frame_round_trips_within_jpeg_error() {
        let rgb = gradient(64, 48);
        let jpeg = encode_rgb(&rgb, 64, 48, 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let back = decode_jpeg(&jpeg).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let max_err = rgb
            .iter()
            .zip(&back.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max_err < 24, "max error {max_err}");
    }

    #[test]
    fn jpeg_round_trip_keeps_size_and_colour() {
        let mut data = vec![0u8; 64 * 48 * 3];
        for px in data.chunks_exact_mut(3) {
            px.copy_from_slice(&[200, 30, 40]);
        }
        let img = RgbImage::new(64, 48, data).unwrap();
        let jpeg = encode_jpeg(&img, 95).unwrap();
        let back = decode_jpeg(&jpeg).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let px = &back.data[(20 * 64 + 30) * 3..][..3];
        assert!(px[0].abs_diff(200) < 6 && px[1].abs_diff(30) < 6, "{px:?}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            encode_rgb(&[0; 10], 4, 4, 80).unwrap_err().to_string(),
            "RGB buffer of 4x4 needs 48 bytes, has 10"
        );
        assert!(matches!(
            encode_rgb(&[], 0, 0, 80),
            Err(ImageError::BadRgb { .. })
        ));
        let jpeg = encode_rgb(&gradient(32, 32), 32, 32, 80).unwrap();
        for n in [0, 2, 10, jpeg.len() / 2] {
            let _ = decode_jpeg(&jpeg[..n]); // may succeed partially, must not panic
        }
    }

    #[test]
    fn non_jpeg_payloads_are_clear_errors() {
        for (payload, want) in [
            (&b"hello world"[..], "no JPEG start-of-image marker"),
            (&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3][..], "JPEG:"),
            (&[][..], "no JPEG start-of-image marker"),
        ] {
            let err = decode_jpeg(payload).unwrap_err().to_string();
            assert!(err.contains("payload is not a decodable image"), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
}
