//! Ingest's part of a camera's configuration ([`SourceConfig`]) and the value types of
//! its keys (decoder, RTSP transport, idle decode, backoff, frame limit).

use serde::{Deserialize, Serialize};

use crate::values::{CameraSchemes, Dur, Ident, IntIn, SecretUrl};

/// What ingest needs of a camera: where its stream comes from and how it is decoded,
/// supervised and sampled. Made from the camera's configuration
/// (`camera::CameraConfig::source`), which holds the rest (motion, escalation, zones).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    pub id: Ident,
    pub url: SecretUrl<CameraSchemes>,
    pub decode: Decode,
    /// RTSP lower transport.
    pub protocol: RtspProtocol,
    /// rtspsrc jitter buffer.
    pub latency: Dur,
    /// Width of the grey analysis frame (height keeps the aspect ratio).
    pub analysis_width: IntIn<32, 1920>,
    /// Analysis frames per second delivered to motion (at most the source's rate).
    pub analysis_fps: IntIn<1, 60>,
    /// Width of the colour frames kept for escalation (0 keeps the source size).
    pub detect_width: IntIn<0, 7680>,
    /// How many colour frames to keep so an escalation can take the one that triggered it.
    pub ring_frames: IntIn<1, 64>,
    /// No frame for this long means the stream is stalled: restart it.
    pub stall_timeout: Dur,
    pub backoff: BackoffConfig,
    /// The largest frame the camera may send.
    pub frame_limit: FrameLimit,
    /// What to decode while the camera shows no motion.
    pub idle_decode: IdleDecode,
}

/// Idle decode trades detection delay for CPU: with `keyframes`, only key frames reach
/// the decoder while the camera is idle, so motion is seen at the next key frame at the
/// latest and full decoding resumes at the key frame after that (a delay of up to two
/// key-frame intervals); the decoder then costs a fraction of a full decode.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdleDecode {
    /// Every frame, always.
    #[default]
    Full,
    /// Key frames only while idle.
    Keyframes,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// Jetson hardware decoder when present, software otherwise.
    #[default]
    Auto,
    Software,
    Nvidia,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RtspProtocol {
    #[default]
    Tcp,
    Udp,
}

/// Bounds on a camera's frame size; the defaults take 4K (3840x2160, 4096x2160) either
/// way up.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrameLimit {
    #[serde(default = "default_max_side")]
    pub width: IntIn<16, 16384>,
    #[serde(default = "default_max_side")]
    pub height: IntIn<16, 16384>,
    /// Longest side over shortest side, at most.
    #[serde(default = "default_max_aspect")]
    pub aspect: IntIn<1, 64>,
}

impl Default for FrameLimit {
    fn default() -> Self {
        Self {
            width: default_max_side(),
            height: default_max_side(),
            aspect: default_max_aspect(),
        }
    }
}

impl FrameLimit {
    /// Whether a `width`x`height` frame is within the limit, or why not.
    pub fn check(&self, width: u32, height: u32) -> Result<(), String> {
        let (w, h) = (width as u64, height as u64);
        let (long, short) = (w.max(h), w.min(h));
        if w > self.width.get() as u64 || h > self.height.get() as u64 {
            Err(format!(
                "frame size {width}x{height} is larger than frame_limit {}x{}",
                self.width.get(),
                self.height.get()
            ))
        } else if short == 0 || long > short * self.aspect.get() as u64 {
            Err(format!(
                "frame size {width}x{height} is more elongated than frame_limit.aspect = {}",
                self.aspect.get()
            ))
        } else {
            Ok(())
        }
    }
}

fn default_max_side() -> IntIn<16, 16384> {
    IntIn::lit(4096)
}
fn default_max_aspect() -> IntIn<1, 64> {
    IntIn::lit(4)
}

/// Restart backoff: exponential from `min` to `max`, with jitter.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_backoff_min")]
    pub min: Dur,
    #[serde(default = "default_backoff_max")]
    pub max: Dur,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: default_backoff_min(),
            max: default_backoff_max(),
        }
    }
}

fn default_backoff_min() -> Dur {
    Dur::ms(500)
}
fn default_backoff_max() -> Dur {
    Dur::secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_beyond_the_limit_are_refused_with_the_reason() {
        let l = FrameLimit::default();
        type Row = ((u32, u32), Result<(), &'static str>);
        let rows: [Row; 7] = [
            ((3840, 2160), Ok(())),
            ((2160, 3840), Ok(())),
            ((4096, 2160), Ok(())),
            ((640, 360), Ok(())),
            (
                (16, 16384),
                Err("frame size 16x16384 is larger than frame_limit 4096x4096"),
            ),
            (
                (4096, 1000),
                Err("frame size 4096x1000 is more elongated than frame_limit.aspect = 4"),
            ),
            (
                (8192, 4320),
                Err("frame size 8192x4320 is larger than frame_limit 4096x4096"),
            ),
        ];
        for ((w, h), want) in rows {
            assert_eq!(l.check(w, h), want.map_err(str::to_string), "{w}x{h}");
        }
    }
}
