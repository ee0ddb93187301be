//! JPEG (and PNG, for `detect`) decoding into RGB and JPEG encoding of snapshots.
//! One small function each; the transport's frame codec may take them over later.

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::InferError;

/// Largest side accepted, so that a hostile header cannot make us allocate gigabytes.
pub const MAX_SIDE: u32 = 8192;

/// An 8-bit RGB image, rows packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, InferError> {
        let need = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != need {
            return Err(InferError::BadImage {
                bytes: data.len(),
                reason: format!("RGB buffer of {width}x{height} needs {need} bytes"),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

fn bad(bytes: &[u8], reason: impl Into<String>) -> InferError {
    InferError::BadImage {
        bytes: bytes.len(),
        reason: reason.into(),
    }
}

/// Decodes a baseline or progressive JPEG to RGB (greyscale JPEGs are expanded).
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, InferError> {
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
pub fn decode_png(bytes: &[u8]) -> Result<RgbImage, InferError> {
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
pub fn decode_any(bytes: &[u8]) -> Result<RgbImage, InferError> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(bytes)
    } else {
        decode_jpeg(bytes)
    }
}

/// Encodes RGB as a baseline JPEG.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, InferError> {
    if img.width > u16::MAX as u32 || img.height > u16::MAX as u32 {
        return Err(InferError::Snapshot(format!(
            "{}x{} is too large for JPEG",
            img.width, img.height
        )));
    }
    let mut out = Vec::with_capacity(img.data.len() / 8);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(
        &img.data,
        img.width as u16,
        img.height as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .map_err(|e| InferError::Snapshot(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
