//! One clip file: the camera's own encoded access units, re-timed to start at zero,
//! muxed into a fragmented MP4 without decoding or re-encoding.
//!
//! ```text
//! appsrc (the camera's parsed H.264/H.265) ─ h26xparse ─ mp4mux fragment-duration=1000 ─ filesink
//! ```
//! Crash safety: a fragmented MP4 writes its header first and then self-contained
//! fragments of about a second, so a file cut off by a kill or a power cut plays up to
//! its last whole fragment. No fsync per fragment: a power cut may lose what the page
//! cache held (seconds), never the file's playability.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

use super::ClipError;
use crate::ingest::EncodedUnit;

/// A clip being written.
pub(crate) struct ClipFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    /// Stream time of the first unit (the clip's zero).
    first: Duration,
    /// Stream time of the latest unit.
    pub(crate) last: Duration,
    /// Wall time of the first unit (now less the pre-roll it began with).
    pub(crate) start: SystemTime,
    frame: Duration,
}

impl ClipFile {
    /// Opens `dir/name` for a stream with `caps`, its first unit at `first` (a key
    /// frame), `behind` stream time before now.
    pub(crate) fn open(
        dir: &Path,
        name: String,
        caps: &gst::Caps,
        first: Duration,
        behind: Duration,
    ) -> Result<Self, ClipError> {
        let path = dir.join(&name);
        let err = |e: &dyn std::fmt::Display| ClipError::Mux {
            file: path.display().to_string(),
            message: e.to_string(),
        };
        gst::init().map_err(|e| err(&e))?;
        let parser = match caps.structure(0).map(|s| s.name().as_str()) {
            Some("video/x-h264") => "h264parse",
            Some("video/x-h265") => "h265parse",
            other => {
                return Err(err(&format!(
                    "unsupported stream {}",
                    other.unwrap_or("without caps")
                )))
            }
        };
        let pipeline = gst::Pipeline::with_name(&format!("clip-{name}"));
        let src = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(false)
            .block(true)
            .max_bytes(8 << 20)
            .build();
        let parse = make(parser).map_err(|e| err(&e))?;
        let mux = make("mp4mux").map_err(|e| err(&e))?;
        // Fragments of a second: a cut-off file loses at most the fragment in progress.
        mux.set_property("fragment-duration", 1000u32);
        let sink = make("filesink").map_err(|e| err(&e))?;
        sink.set_property("location", path.to_string_lossy().to_string());
        sink.set_property("sync", false);
        sink.set_property("async", false);
        // Every fragment reaches the kernel as it is made: filesink's default 64 KiB
        // buffer would hold seconds of a small stream in the process, lost at a kill
        // (found by the SIGKILL test: a killed clip had no playable fragment).
        sink.set_property_from_str("buffer-mode", "unbuffered");
        pipeline
            .add_many([src.upcast_ref(), &parse, &mux, &sink])
            .map_err(|e| err(&e))?;
        gst::Element::link_many([src.upcast_ref(), &parse, &mux, &sink]).map_err(|e| err(&e))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| err(&e))?;
        Ok(Self {
            name,
            path,
            pipeline,
            src,
            first,
            last: first,
            start: SystemTime::now()
                .checked_sub(behind)
                .unwrap_or(SystemTime::now()),
            frame: Duration::ZERO,
        })
    }

    /// Stream time written so far (first unit to the end of the latest).
    pub(crate) fn duration(&self) -> Duration {
        self.last.saturating_sub(self.first) + self.frame
    }

    pub(crate) fn push(&mut self, unit: &EncodedUnit) -> Result<(), ClipError> {
        if unit.ts > self.last {
            self.frame = unit.ts - self.last;
        }
        self.last = self.last.max(unit.ts);
        let base = gst::ClockTime::from_nseconds(self.first.as_nanos() as u64);
        // A new buffer sharing the camera's memory: only the timestamps differ.
        let mut buf = unit.item.copy();
        {
            let b = buf.make_mut();
            let pts = b.pts().map(|t| t.saturating_sub(base));
            let dts = b.dts().map(|t| t.saturating_sub(base));
            b.set_pts(pts);
            b.set_dts(dts);
        }
        self.src.push_buffer(buf).map(|_| ()).map_err(|e| {
            self.bus_error().unwrap_or(ClipError::Mux {
                file: self.path.display().to_string(),
                message: format!("appsrc refused a buffer: {e:?}"),
            })
        })
    }

    /// Ends the file: end of stream through the muxer (it completes the last
    /// fragment), waited for up to `within`.
    pub(crate) fn finish(self, within: Duration) -> Result<(), ClipError> {
        let _ = self.src.end_of_stream();
        let mut result = Ok(());
        if let Some(bus) = self.pipeline.bus() {
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(within.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
            result = match msg.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Eos(_)) => Ok(()),
                Some(gst::MessageView::Error(e)) => Err(ClipError::Mux {
                    file: self.path.display().to_string(),
                    message: e.error().to_string(),
                }),
                _ => Err(ClipError::Mux {
                    file: self.path.display().to_string(),
                    message: format!("not finished within {within:?}"),
                }),
            };
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }

    fn bus_error(&self) -> Option<ClipError> {
        let bus = self.pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(ClipError::Mux {
                file: self.path.display().to_string(),
                message: e.error().to_string(),
            }),
            _ => None,
        }
    }
}

impl Drop for ClipFile {
    fn drop(&mut self) {
        // Always NULL before dropping a pipeline, or its threads leak.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element {factory:?} is not installed"))
}
