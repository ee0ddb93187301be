//! The frame message that travels from the agent to the workers: a compact binary
//! framing around a JSON header and a JPEG payload.
//!
//! ```text
//! offset 0   4 bytes  magic "EDGF"
//!        4   1 byte   format version (2; 1 is still read)
//!        5   1 byte   reserved (0)
//!        6   4 bytes  header length, big endian
//!       10   4 bytes  JPEG length, big endian
//!       14   header   JSON (FrameHeader)
//!        …   JPEG     starts with FF D8, ends with FF D9
//! ```
//! Decoding checks every length before it slices, so a bad or truncated message is
//! an error with a reason (a metric label), never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::regions::{Region, MAX_REGIONS};
use crate::clock::Stamp;

/// The format version this build writes. Version 2 added the camera frame's size and
/// the crops (`source_width`, `source_height`, `regions`); a version 1 message is still
/// read (it has neither: its JPEG is the whole frame, at the camera's size as far as
/// anyone can tell).
pub const VERSION: u8 = 2;
/// The oldest version read.
pub const MIN_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"EDGF";
const PREFIX_LEN: usize = 14;
/// A header longer than this is refused before parsing (boxes and stamps are few).
pub const MAX_HEADER_LEN: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameHeader {
    /// Format version, repeated in the header for consumers that log it.
    pub version: u8,
    pub device: String,
    pub camera: String,
    /// The motion event this frame belongs to.
    pub event_id: String,
    /// Per-camera frame sequence number; with `camera` it names the frame.
    pub seq: u64,
    /// Capture time, unix nanoseconds.
    pub captured: u64,
    /// Size of the whole frame in the JPEG (at its top-left corner): the camera frame
    /// scaled to `detect_width`.
    pub width: u32,
    pub height: u32,
    /// Size of the camera frame, the pixels detections are given in (0 in version 1:
    /// then `width` x `height`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_width: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_height: u32,
    /// Crops of the camera frame at its full resolution, below the whole frame in the
    /// JPEG (`escalation.regions = "motion"`); the worker detects on these instead of
    /// the whole frame. Empty: detect on the whole frame.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    /// Motion boxes, normalised `[x, y, w, h]` in 0..=1.
    #[serde(default)]
    pub boxes: Vec<[f32; 4]>,
    #[serde(default)]
    pub stamps: Vec<Stamp>,
    /// The worker was started for this frame (its latency includes a cold start).
    #[serde(default)]
    pub cold_start: bool,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl FrameHeader {
    /// The camera frame's size: what detections are given in.
    pub fn source_size(&self) -> (u32, u32) {
        if self.source_width == 0 || self.source_height == 0 {
            (self.width, self.height)
        } else {
            (self.source_width, self.source_height)
        }
    }

    /// Records that `stage` happened now.
    pub fn stamp(&mut self, stage: &str) {
        self.stamps.push(Stamp::now(stage));
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FrameMessage {
    pub header: FrameHeader,
    pub jpeg: Bytes,
}

/// Why a message was refused. The transport counts each as a
/// `telemetry::metrics::RejectReason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("bad magic: not an edge-agent frame message")]
    BadMagic,
    #[error("unsupported format version {0} (this build reads {MIN_VERSION} to {VERSION})")]
    UnsupportedVersion(u8),
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    #[error("invalid header: {0}")]
    HeaderInvalid(String),
    #[error("JPEG payload of {size} bytes exceeds the limit of {max}")]
    Oversized { size: usize, max: usize },
    #[error("payload is not a JPEG: {0}")]
    NotJpeg(&'static str),
    #[error("{0} unexpected bytes after the JPEG payload")]
    TrailingBytes(usize),
}

impl MessageError {
    /// The variant's name, for the table tests.
    #[cfg(test)]
    fn reason(&self) -> &'static str {
        match self {
            MessageError::BadMagic => "bad_magic",
            MessageError::UnsupportedVersion(_) => "unsupported_version",
            MessageError::Truncated { .. } => "truncated",
            MessageError::HeaderInvalid(_) => "header_invalid",
            MessageError::Oversized { .. } => "oversized",
            MessageError::NotJpeg(_) => "not_jpeg",
            MessageError::TrailingBytes(_) => "trailing_bytes",
        }
    }
}

/// Encodes a frame message. The header is small JSON; the JPEG is copied once.
pub fn encode(msg: &FrameMessage) -> Bytes {
    let header = serde_json::to_vec(&msg.header).expect("a FrameHeader always serialises");
    let mut out = BytesMut::with_capacity(PREFIX_LEN + header.len() + msg.jpeg.len());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(0);
    out.put_u32(header.len() as u32);
    out.put_u32(msg.jpeg.len() as u32);
    out.put_slice(&header);
    out.put_slice(&msg.jpeg);
    out.freeze()
}

/// Decodes and checks a frame message; `max_payload` caps the JPEG size.
pub fn decode(data: &[u8], max_payload: usize) -> Result<FrameMessage, MessageError> {
    decode_bytes(Bytes::copy_from_slice(data), max_payload)
}

/// Like [`decode`], without copying the JPEG out of an owned buffer.
pub fn decode_bytes(data: Bytes, max_payload: usize) -> Result<FrameMessage, MessageError> {
    if data.len() < 4 {
        // Too short to tell; a wrong start is still a wrong start.
        if !MAGIC.starts_with(&data) {
            return Err(MessageError::BadMagic);
        }
        return Err(MessageError::Truncated {
            need: PREFIX_LEN,
            got: data.len(),
        });
    }
    if &data[..4] != MAGIC {
        return Err(MessageError::BadMagic);
    }
    if data.len() < PREFIX_LEN {
        return Err(MessageError::Truncated {
            need: PREFIX_LEN,
            got: data.len(),
        });
    }
    if !(MIN_VERSION..=VERSION).contains(&data[4]) {
        return Err(MessageError::UnsupportedVersion(data[4]));
    }
    let header_len = u32::from_be_bytes([data[6], data[7], data[8], data[9]]) as usize;
    let jpeg_len = u32::from_be_bytes([data[10], data[11], data[12], data[13]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(MessageError::HeaderInvalid(format!(
            "header length {header_len} exceeds {MAX_HEADER_LEN}"
        )));
    }
    if jpeg_len > max_payload {
        return Err(MessageError::Oversized {
            size: jpeg_len,
            max: max_payload,
        });
    }
    let need = PREFIX_LEN + header_len + jpeg_len;
    if data.len() < need {
        return Err(MessageError::Truncated {
            need,
            got: data.len(),
        });
    }
    if data.len() > need {
        return Err(MessageError::TrailingBytes(data.len() - need));
    }
    let header: FrameHeader = serde_json::from_slice(&data[PREFIX_LEN..PREFIX_LEN + header_len])
        .map_err(|e| MessageError::HeaderInvalid(e.to_string()))?;
    check_header(&header, data[4])?;
    let jpeg = data.slice(PREFIX_LEN + header_len..need);
    if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] {
        return Err(MessageError::NotJpeg("no start-of-image marker"));
    }
    if jpeg[jpeg.len() - 2..] != [0xFF, 0xD9] {
        return Err(MessageError::NotJpeg("no end-of-image marker"));
    }
    Ok(FrameMessage { header, jpeg })
}

fn check_header(h: &FrameHeader, framing: u8) -> Result<(), MessageError> {
    let bad = |m: String| Err(MessageError::HeaderInvalid(m));
    if h.version != framing {
        return bad(format!(
            "header version {} differs from framing version {framing}",
            h.version
        ));
    }
    if framing < 2 && (h.source_width != 0 || h.source_height != 0 || !h.regions.is_empty()) {
        return bad("source size and regions need version 2".into());
    }
    for (name, v) in [("device", &h.device), ("camera", &h.camera)] {
        if crate::values::Ident::new(v).is_err() {
            return bad(format!("{name} {v:?} is not a valid id"));
        }
    }
    if h.width == 0 || h.height == 0 || h.width > 16384 || h.height > 16384 {
        return bad(format!("frame size {}x{} out of range", h.width, h.height));
    }
    let (sw, sh) = h.source_size();
    if sw > 16384 || sh > 16384 || (h.source_width == 0) != (h.source_height == 0) {
        return bad(format!(
            "camera frame size {}x{} out of range",
            h.source_width, h.source_height
        ));
    }
    if h.regions.len() > MAX_REGIONS {
        return bad(format!(
            "{} regions, at most {MAX_REGIONS}",
            h.regions.len()
        ));
    }
    for r in &h.regions {
        let payload = r.in_payload();
        if !r.frame.within(sw, sh) || !payload.within(16384, 16384) {
            return bad(format!(
                "region {:?} at {:?} is not inside the {sw}x{sh} camera frame",
                r.frame, r.at
            ));
        }
    }
    for b in &h.boxes {
        let ok = b.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v));
        if !ok {
            return bad(format!("motion box {b:?} is not normalised"));
        }
    }
    if h.stamps.len() > 64 {
        return bad(format!("{} stamps, at most 64", h.stamps.len()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64, jpeg_len: usize) -> FrameMessage {
        let mut jpeg = vec![0x55u8; jpeg_len.max(4)];
        jpeg[0] = 0xFF;
        jpeg[1] = 0xD8;
        let n = jpeg.len();
        jpeg[n - 2] = 0xFF;
        jpeg[n - 1] = 0xD9;
        FrameMessage {
            header: FrameHeader {
                version: VERSION,
                device: "dev-1".into(),
                camera: "cam-1".into(),
                event_id: "cam-7".into(),
                seq,
                captured: 1_700_000_000_000_000_000,
                width: 640,
                height: 360,
                source_width: 1920,
                source_height: 1080,
                regions: vec![Region {
                    frame: crate::wire::regions::Rect {
                        x: 100,
                        y: 200,
                        w: 416,
                        h: 416,
                    },
                    at: [0, 368],
                }],
                boxes: vec![[0.1, 0.2, 0.3, 0.4]],
                stamps: vec![Stamp {
                    stage: "motion".into(),
                    at_unix_ns: 1_700_000_000_100_000_000,
                }],
                cold_start: false,
            },
            jpeg: Bytes::from(jpeg),
        }
    }

    #[test]
    fn the_header_follows_its_schema() {
        let msg = sample(3, 100);
        let header: serde_json::Value = serde_json::to_value(&msg.header).unwrap();
        crate::wire::schema::check("frame-header.v2.json", &header);
    }

    #[test]
    fn a_frame_survives_encode_and_decode() {
        let msg = sample(3, 1000);
        let back = decode(&encode(&msg), 4096).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn a_version_1_message_is_still_read_as_the_whole_frame_at_its_own_size() {
        let mut msg = sample(3, 100);
        msg.header.version = 1;
        msg.header.source_width = 0;
        msg.header.source_height = 0;
        msg.header.regions.clear();
        let mut data = encode(&msg).to_vec();
        data[4] = 1;
        let json = String::from_utf8_lossy(&data[PREFIX_LEN..]).to_string();
        assert!(!json.contains("source_width") && !json.contains("regions"));
        let back = decode(&data, 4096).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.header.source_size(), (640, 360));
    }

    #[test]
    fn every_kind_of_bad_message_is_refused_with_its_reason() {
        let good = encode(&sample(1, 100)).to_vec();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let header_len = u32::from_be_bytes([good[6], good[7], good[8], good[9]]) as usize;
        let reheader = |h: &str| {
            let mut m = sample(1, 100);
            let mut v = Vec::new();
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&[VERSION, 0]);
            v.extend_from_slice(&(h.len() as u32).to_be_bytes());
            v.extend_from_slice(&(m.jpeg.len() as u32).to_be_bytes());
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&std::mem::take(&mut m.jpeg));
            v
        };
        let valid_json = String::from_utf8(good[14..14 + header_len].to_vec()).unwrap();
        let rows: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "truncated"),
            ("garbage", b"hello world, not a frame".to_vec(), "bad_magic"),
            ("short garbage", b"xy".to_vec(), "bad_magic"),
            ("magic only", MAGIC.to_vec(), "truncated"),
            ("cut in prefix", good[..10].to_vec(), "truncated"),
            ("cut in header", good[..20].to_vec(), "truncated"),
            ("cut in jpeg", good[..good.len() - 1].to_vec(), "truncated"),
            ("version 9", with(&|v| v[4] = 9), "unsupported_version"),
            ("version 0", with(&|v| v[4] = 0), "unsupported_version"),
            (
                "version 1 framing, version 2 header",
                with(&|v| v[4] = 1),
                "header_invalid",
            ),
            (
                "region outside the camera frame",
                reheader(&valid_json.replace("\"x\":100", "\"x\":1600")),
                "header_invalid",
            ),
            (
                "camera width without height",
                reheader(&valid_json.replace(",\"source_height\":1080", "")),
                "header_invalid",
            ),
            (
                "huge header length",
                with(&|v| v[6..10].copy_from_slice(&u32::MAX.to_be_bytes())),
                "header_invalid",
            ),
            (
                "huge jpeg length",
                with(&|v| v[10..14].copy_from_slice(&u32::MAX.to_be_bytes())),
                "oversized",
            ),
            ("trailing bytes", with(&|v| v.push(0)), "trailing_bytes"),
            ("not json", reheader("{nope"), "header_invalid"),
            (
                "unknown field",
                reheader(&valid_json.replacen('{', "{\"x\":1,", 1)),
                "header_invalid",
            ),
            (
                "bad camera id",
                reheader(&valid_json.replace("cam-1", "cam/1")),
                "header_invalid",
            ),
            (
                "box outside the frame",
                reheader(&valid_json.replace("0.4", "1.5")),
                "header_invalid",
            ),
            (
                "zero width",
                reheader(&valid_json.replace("\"width\":640", "\"width\":0")),
                "header_invalid",
            ),
            (
                "no SOI",
                with(&|v| {
                    let i = 14 + header_len;
                    v[i] = 0
                }),
                "not_jpeg",
            ),
            (
                "no EOI",
                with(&|v| {
                    let n = v.len();
                    v[n - 1] = 0
                }),
                "not_jpeg",
            ),
        ];
        for (name, data, want) in rows {
            let got = decode(&data, 4096).expect_err(name);
            assert_eq!(got.reason(), want, "{name}: {got}");
        }
        // The size cap applies to a well-formed message too.
        let big = encode(&sample(1, 5000));
        assert_eq!(decode(&big, 4096).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn every_prefix_of_a_message_is_an_error_not_a_panic() {
        let good = encode(&sample(2, 300));
        for n in 0..good.len() {
            assert!(decode(&good[..n], 4096).is_err(), "prefix {n}");
        }
    }
}

/// Bounded fuzzing with a seeded generator (reproducible, part of `cargo test`): the
/// decoder meets random bytes and mutations of valid messages; it never panics, and
/// every rejection has a reason.
#[cfg(test)]
pub(crate) mod fuzz {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::tests::sample;
    use super::*;

    const REASONS: [&str; 7] = [
        "bad_magic",
        "unsupported_version",
        "truncated",
        "header_invalid",
        "oversized",
        "not_jpeg",
        "trailing_bytes",
    ];

    /// One random change: flip, overwrite, insert, delete, truncate, or a length field
    /// set to an extreme.
    pub(crate) fn mutate(rng: &mut StdRng, data: &mut Vec<u8>) {
        let pos = |rng: &mut StdRng, len: usize| rng.random_range(0..len.max(1));
        match rng.random_range(0..7) {
            0 if !data.is_empty() => {
                let i = pos(rng, data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = pos(rng, data.len());
                data[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=data.len());
                data.insert(i, rng.random());
            }
            3 if !data.is_empty() => {
                let i = pos(rng, data.len());
                data.remove(i);
            }
            4 => {
                let n = rng.random_range(0..=data.len());
                data.truncate(n);
            }
            5 if data.len() >= PREFIX_LEN => {
                // The header or JPEG length field.
                let at = if rng.random() { 6 } else { 10 };
                let v: u32 = match rng.random_range(0..3) {
                    0 => u32::MAX,
                    1 => 0,
                    _ => rng.random(),
                };
                data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                // Garbage inside the JSON header, where serde meets it.
                if data.len() > PREFIX_LEN + 2 {
                    let i = rng.random_range(PREFIX_LEN..data.len());
                    const JUNK: &[u8] = b"{}[]\",:\\0-e9\xff";
                    data[i] = JUNK[rng.random_range(0..JUNK.len())];
                }
            }
        }
    }

    fn check(data: &[u8]) {
        match decode(data, 64 * 1024) {
            Ok(m) => {
                // Whatever decodes re-encodes to the same bytes' meaning.
                assert_eq!(decode(&encode(&m), 64 * 1024).unwrap(), m);
            }
            Err(e) => assert!(REASONS.contains(&e.reason()), "{e}"),
        }
    }

    #[test]
    fn random_bytes_and_mutated_messages_never_panic_and_every_rejection_has_a_reason() {
        let mut rng = StdRng::seed_from_u64(0x5eed_f4a3);
        for _ in 0..3000 {
            let len = rng.random_range(0..200);
            let mut data = vec![0u8; len];
            rng.fill(&mut data[..]);
            if rng.random_bool(0.3) && len >= 4 {
                data[..4].copy_from_slice(MAGIC);
            }
            check(&data);
        }
        let valid = encode(&sample(7, 300)).to_vec();
        let mut rejected = 0;
        for _ in 0..5000 {
            let mut data = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate(&mut rng, &mut data);
            }
            check(&data);
            rejected += usize::from(decode(&data, 64 * 1024).is_err());
        }
        // The mutations reach past the prefix checks (most, not all, are rejected).
        assert!(
            rejected > 2500 && rejected < 5000,
            "{rejected} of 5000 rejected"
        );
    }
}
