//! JPEG encode (agent side, escalated frames and snapshots) and decode (worker side).
//!
//! jpeg-encoder (SIMD) encodes and zune-jpeg decodes: both pure Rust, and the fastest
//! that build here without downloads. `agent/benches/transport.rs` measures them per
//! 640x360 frame against libjpeg-turbo (through GStreamer's jpegenc/jpegdec) as the
//! baseline; turbojpeg/image were not available offline.

use jpeg_encoder::{ColorType, Encoder};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Frames larger than this in either direction are refused (decode bombs).
pub const MAX_SIDE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error("frame of {width}x{height} with {len} bytes is not packed RGB")]
    BadInput { width: u32, height: u32, len: usize },
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    #[error("JPEG decoding failed: {0}")]
    Decode(String),
}

/// Encodes packed RGB (3 bytes per pixel) at `quality` (1..=100).
pub fn encode_rgb(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, JpegError> {
    let bad = || JpegError::BadInput {
        width,
        height,
        len: rgb.len(),
    };
    if width == 0 || height == 0 || width > u16::MAX as u32 || height > u16::MAX as u32 {
        return Err(bad());
    }
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(bad());
    }
    // Roughly 1 byte per 10 pixels at usual qualities; grows if needed.
    let mut out = Vec::with_capacity(rgb.len() / 8);
    Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(rgb, width as u16, height as u16, ColorType::Rgb)
        .map_err(|e| JpegError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a JPEG into packed RGB; returns (pixels, width, height).
pub fn decode_rgb(jpeg: &[u8]) -> Result<(Vec<u8>, u32, u32), JpegError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    let pixels = dec
        .decode()
        .map_err(|e| JpegError::Decode(format!("{e:?}")))?;
    let info = dec
        .info()
        .ok_or_else(|| JpegError::Decode("no image information".into()))?;
    let (w, h) = (info.width as u32, info.height as u32);
    if pixels.len() != w as usize * h as usize * 3 {
        return Err(JpegError::Decode(format!(
            "decoder returned {} bytes for {w}x{h} RGB",
            pixels.len()
        )));
    }
    Ok((pixels, w, h))
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
        let (back, w, h) = decode_rgb(&jpeg).unwrap();
        assert_eq!((w, h), (64, 48));
        let max_err = rgb
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max_err < 24, "max error {max_err}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            encode_rgb(&[0; 10], 4, 4, 80),
            Err(JpegError::BadInput { .. })
        ));
        assert!(encode_rgb(&[], 0, 0, 80).is_err());
        assert!(decode_rgb(b"not a jpeg").is_err());
        let jpeg = encode_rgb(&gradient(32, 32), 32, 32, 80).unwrap();
        for n in [0, 2, 10, jpeg.len() / 2] {
            let _ = decode_rgb(&jpeg[..n]); // may succeed partially, must not panic
        }
    }
}
