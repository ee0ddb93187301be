//! A camera's configuration (`[[cameras]]`): where its stream comes from (ingest's part,
//! [`CameraConfig::source`]), its motion and escalation settings, and its zones and
//! object rules (results' part).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::escalate::EscalationConfig;
use crate::ingest::{BackoffConfig, Decode, FrameLimit, IdleDecode, RtspProtocol, SourceConfig};
use crate::motion::MotionConfig;
use crate::results::config::{CameraClips, ClassTracks};
use crate::results::zones::ZoneConfig;
use crate::values::{CameraSchemes, Dur, Ident, IntIn, SecretUrl};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: Ident,
    pub url: SecretUrl<CameraSchemes>,
    /// A file holding the camera password, put into `url` at load. Relative paths are
    /// looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential`) first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub decode: Decode,
    /// RTSP lower transport.
    #[serde(default)]
    pub protocol: RtspProtocol,
    /// rtspsrc jitter buffer.
    #[serde(default = "default_latency")]
    pub latency: Dur,
    /// Width of the grey analysis frame (height keeps the aspect ratio).
    #[serde(default = "default_analysis_width")]
    pub analysis_width: IntIn<32, 1920>,
    /// Analysis frames per second delivered to motion (at most the source's rate).
    #[serde(default = "default_analysis_fps")]
    pub analysis_fps: IntIn<1, 60>,
    /// Width of the colour frames kept for escalation (0 keeps the source size).
    #[serde(default = "default_detect_width")]
    pub detect_width: IntIn<0, 7680>,
    /// How many colour frames to keep so an escalation can take the one that triggered it.
    #[serde(default = "default_ring")]
    pub ring_frames: IntIn<1, 64>,
    /// No frame for this long means the stream is stalled: restart it.
    #[serde(default = "default_stall")]
    pub stall_timeout: Dur,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// The largest frame the camera may send: beyond it the camera fails with a clear
    /// error instead of filling memory (a 16x16384 stream is a 105 MB grey frame).
    #[serde(default)]
    pub frame_limit: FrameLimit,
    #[serde(default)]
    pub motion: MotionConfig,
    #[serde(default)]
    pub escalation: EscalationConfig,
    /// What to decode while the camera shows no motion (no motion boxes for the motion
    /// quiet period, no event open).
    #[serde(default)]
    pub idle_decode: IdleDecode,
    /// Named zones of the view (`[cameras.zones.NAME]`): polygons objects stand in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, ZoneConfig>,
    /// Object rules per class on this camera (`[cameras.objects.NAME]`): filters,
    /// `required_zones`, and the track settings of `[events.tracks.classes.NAME]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, ClassTracks>,
    /// `[cameras.clips]`: `enabled = false` keeps this camera out of `events.clips`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub clips: CameraClips,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl From<CameraConfig> for SourceConfig {
    fn from(c: CameraConfig) -> SourceConfig {
        c.source()
    }
}

impl CameraConfig {
    /// Ingest's part.
    pub fn source(&self) -> SourceConfig {
        SourceConfig {
            id: self.id.clone(),
            url: self.url.clone(),
            decode: self.decode,
            protocol: self.protocol,
            latency: self.latency,
            analysis_width: self.analysis_width,
            analysis_fps: self.analysis_fps,
            detect_width: self.detect_width,
            ring_frames: self.ring_frames,
            stall_timeout: self.stall_timeout,
            backoff: self.backoff,
            frame_limit: self.frame_limit,
            idle_decode: self.idle_decode,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_latency() -> Dur {
    Dur::ms(200)
}
fn default_analysis_width() -> IntIn<32, 1920> {
    IntIn::lit(320)
}
/// 15 fps: the event confirmation (`motion.start_frames` = 2 frames) takes 67 ms from
/// the first frame, against 200 ms at 5 fps, and the motion start is seen within 67 ms
/// instead of 200. BENCHMARKS.md: CPU per 720p30 camera is the same at 5, 10 and 15 fps
/// ("Analysis rate", decoding dominates), and gating on the real and synthetic clips
/// meets its goal at 15 fps on every clip ("Motion gating"). A source slower than this
/// gives its own rate.
fn default_analysis_fps() -> IntIn<1, 60> {
    IntIn::lit(15)
}
fn default_detect_width() -> IntIn<0, 7680> {
    IntIn::lit(640)
}
fn default_ring() -> IntIn<1, 64> {
    IntIn::lit(4)
}
fn default_stall() -> Dur {
    Dur::secs(10)
}
