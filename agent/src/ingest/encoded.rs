//! The tap on a camera's encoded stream: a buffer probe on the H.264/H.265 parser's
//! source pad (after depayload and parse, before the decoder and before the idle-decode
//! key-frame gate) that keeps buffer references in the pre-roll ring and, while a clip
//! is being written, hands them to its writer through a bounded channel. No extra
//! element, no copy of the data: a `gst::Buffer` is a reference.
//!
//! Policy when the writer's channel is full: drop the unit and count it, then skip to
//! the next key frame, so the clip never holds a delta frame whose reference is gone.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;

use gst::prelude::*;

use super::preroll::{PreRoll, Unit};
use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics};

/// One access unit of the camera's encoded stream.
pub type EncodedUnit = Unit<gst::Buffer>;

/// What a clip writer gets when it starts: the stream's caps, the pre-roll (starting at
/// a key frame) and, without a gap after it, the live stream.
pub struct EncodedFeed {
    pub caps: gst::Caps,
    pub preroll: Vec<EncodedUnit>,
    pub live: Receiver<EncodedUnit>,
}

/// A camera's encoded-stream state, shared by the probe and the camera's handle.
pub(crate) struct EncodedTap {
    camera: Arc<str>,
    ring: PreRoll<gst::Buffer>,
    caps: Option<gst::Caps>,
    live: Option<SyncSender<EncodedUnit>>,
    /// A unit was dropped on the way to the writer: skip to the next key frame.
    broken: bool,
}

impl EncodedTap {
    pub(crate) fn new(camera: Arc<str>) -> Self {
        Self {
            camera,
            ring: PreRoll::new(Duration::ZERO, 0),
            caps: None,
            live: None,
            broken: false,
        }
    }

    pub(crate) fn set_limits(&mut self, keep: Duration, cap_bytes: usize) {
        self.ring.set_limits(keep, cap_bytes);
        self.report_bytes();
    }

    fn report_bytes(&self) {
        metrics()
            .preroll_bytes
            .get_or_create(&metrics::camera(&self.camera))
            .set(self.ring.bytes() as i64);
    }

    /// (units, bytes, stream time covered) of the ring.
    pub(crate) fn ring_size(&self) -> (usize, usize, Duration) {
        (self.ring.len(), self.ring.bytes(), self.ring.span())
    }

    /// Starts a feed: the ring now, then every unit from the next one on. Replaces a
    /// previous feed (one writer per camera). `None` before the stream's caps are known.
    pub(crate) fn subscribe(&mut self, bound: usize) -> Option<EncodedFeed> {
        let caps = self.caps.clone()?;
        let (tx, rx) = sync_channel(bound.max(1));
        self.live = Some(tx);
        // Without a ring the live stream must still begin at a key frame.
        self.broken = self.ring.is_empty();
        Some(EncodedFeed {
            caps,
            preroll: self.ring.snapshot(),
            live: rx,
        })
    }

    pub(crate) fn unsubscribe(&mut self) {
        self.live = None;
    }

    fn wanted(&self) -> bool {
        self.ring.enabled() || self.live.is_some()
    }

    fn push(&mut self, unit: EncodedUnit) {
        let key = unit.key;
        if self.ring.enabled() {
            let pushed = self.ring.push(unit.clone());
            // At key frames only: a gauge update per access unit is not worth its cost.
            if key {
                self.report_bytes();
            }
            if pushed.capped > 0 {
                metrics()
                    .dropped
                    .get_or_create(&metrics::drop_reason(
                        &self.camera,
                        metrics::DropReason::PrerollCap,
                    ))
                    .inc_by(pushed.capped as u64);
                if metrics::should_log(
                    &format!("preroll-cap-{}", self.camera),
                    Duration::from_secs(60),
                ) {
                    tracing::warn!(camera = %self.camera, "Pre-roll ring over its byte cap: oldest key-frame groups dropped.");
                }
            }
        }
        let Some(tx) = &self.live else { return };
        if self.broken && !key {
            return;
        }
        match tx.try_send(unit) {
            Ok(()) => self.broken = false,
            Err(TrySendError::Full(_)) => {
                self.broken = true;
                metrics()
                    .dropped
                    .get_or_create(&metrics::drop_reason(
                        &self.camera,
                        metrics::DropReason::ClipQueueFull,
                    ))
                    .inc();
                if metrics::should_log(
                    &format!("clip-queue-full-{}", self.camera),
                    Duration::from_secs(10),
                ) {
                    tracing::warn!(camera = %self.camera, "Clip writer behind: encoded frames dropped up to the next key frame.");
                }
            }
            Err(TrySendError::Disconnected(_)) => self.live = None,
        }
    }
}

/// Taps every H.264/H.265 parser of `pipeline` as it is added. Must be installed before
/// the key-frame gate: pad probes run in the order they are added, and the gate drops
/// delta frames that the clip still needs.
pub(crate) fn install(pipeline: &gst::Pipeline, tap: Arc<Mutex<EncodedTap>>) {
    on_parser_src(pipeline, move |pad| {
        let tap_caps = tap.clone();
        let tap = tap.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buf) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let mut t = lock(&tap);
            if !t.wanted() {
                return gst::PadProbeReturn::Ok;
            }
            let Some(ts) = buf.dts().or(buf.pts()) else {
                return gst::PadProbeReturn::Ok;
            };
            let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let unit = Unit {
                ts: Duration::from_nanos(ts.nseconds()),
                key,
                bytes: buf.size(),
                item: buf.to_owned(),
            };
            t.push(unit);
            gst::PadProbeReturn::Ok
        });
        // The stream's caps, again whenever they change (a camera's new resolution).
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    lock(&tap_caps).caps = Some(c.caps_owned());
                }
            }
            gst::PadProbeReturn::Ok
        });
    });
}

/// Calls `f` with the source pad of every H.264/H.265 parser added anywhere in
/// `pipeline` (also inside rtspsrc's or decodebin's bins): where the encoded stream is
/// whole access units with key frames flagged, before any decoder.
pub(crate) fn on_parser_src(
    pipeline: &gst::Pipeline,
    f: impl Fn(&gst::Pad) + Send + Sync + 'static,
) {
    pipeline.connect_deep_element_added(move |_, _, element| {
        let parser = element
            .factory()
            .is_some_and(|f| matches!(f.name().as_str(), "h264parse" | "h265parse"));
        if let Some(pad) = parser.then(|| element.static_pad("src")).flatten() {
            f(&pad);
        }
    });
}
