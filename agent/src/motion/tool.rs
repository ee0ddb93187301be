//! Building blocks of the operator's tuning tool `edge-agent motion SOURCE`: frames
//! from a replay go through the same detector and event state machine as in the agent;
//! each ended event becomes one JSON line (with the analysis size its boxes are in),
//! optionally one JSON line per analysed frame (for scoring against ground truth, see
//! `scripts/motion_score.py`), and with a debug directory annotated frames are written
//! as PNG (masked area tinted blue, changed pixels red, boxes green, a yellow frame
//! around global changes) so a person can see why something did or did not trigger:
//! a few chosen ones by default, or every frame of a range. Reading the source is left
//! to the caller (ingest).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{
    Detector, EventTracker, FrameMotion, MotionBox, MotionConfig, MotionError, MotionEvent,
    MotionTransition,
};

/// What a replay saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames: u64,
    pub events: u64,
    pub global_changes: u64,
    pub debug_frames: u32,
}

/// What a replay writes besides the event lines.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Annotated PNG frames go here (created if missing).
    pub debug_dir: Option<PathBuf>,
    /// With `debug_dir`: every frame whose index lies in this range, instead of a few
    /// chosen ones.
    pub debug_frames: Option<Range<u64>>,
    /// One JSON line per analysed frame, besides the event lines.
    pub frame_lines: bool,
    /// The analysed grey frames, raw (GRAY8, frame after frame, no header), so that
    /// other detectors can be run on exactly the same pixels.
    pub grey_out: Option<PathBuf>,
}

/// One analysed frame as `--frames` prints it.
#[derive(serde::Serialize)]
struct FrameLine<'a> {
    frame: u64,
    pts_ms: Option<u64>,
    width: u32,
    height: u32,
    boxes: &'a [MotionBox],
    global_change: bool,
    event: Option<&'a str>,
    /// Camera shake compensated on this frame (see `FrameMotion::shift`).
    shift: (i32, i32),
}

/// An event line: the event and the analysis size its boxes are in.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a MotionEvent,
    width: u32,
    height: u32,
}

/// Runs frames through detector and tracker and writes ended events as JSON lines.
pub struct Replay<W: Write> {
    cfg: MotionConfig,
    fps: u32,
    detector: Option<Detector>,
    tracker: EventTracker,
    out: W,
    frame_lines: bool,
    grey_out: Option<(PathBuf, BufWriter<File>)>,
    debug: Option<DebugFrames>,
    summary: ReplaySummary,
}

impl<W: Write> Replay<W> {
    /// A replay of frames analysed at `fps` a second (the camera's `analysis_fps`).
    pub fn new(
        cfg: &MotionConfig,
        fps: u32,
        camera: &str,
        out: W,
        opts: &ReplayOptions,
    ) -> Result<Self, MotionError> {
        let debug = match &opts.debug_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| MotionError::DebugFrame {
                    path: dir.to_path_buf(),
                    source,
                })?;
                Some(DebugFrames::new(
                    dir,
                    camera,
                    cfg.start_frames.as_usize() + 1,
                    opts.debug_frames.clone(),
                ))
            }
            None => None,
        };
        let grey_out = match &opts.grey_out {
            Some(path) => {
                let f = File::create(path).map_err(|source| MotionError::GreyOut {
                    path: path.clone(),
                    source,
                })?;
                Some((path.clone(), BufWriter::new(f)))
            }
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            fps,
            detector: None,
            tracker: EventTracker::new(cfg, camera),
            out,
            frame_lines: opts.frame_lines,
            grey_out,
            debug,
            summary: ReplaySummary::default(),
        })
    }

    /// Frames from now on arrive `fps` a second (the stream's rate turned out lower than
    /// the setting, or changed): a change starts a new detector.
    pub fn set_fps(&mut self, fps: u32) {
        if fps != self.fps {
            self.fps = fps;
            self.detector = None;
        }
    }

    /// Feeds one grey frame captured at `at`; `index` is its position among the
    /// decoded frames of the source and `pts` its stream time, when known. A change of
    /// size starts a new detector.
    pub fn frame(
        &mut self,
        index: u64,
        pts: Option<Duration>,
        at: SystemTime,
        width: u32,
        height: u32,
        grey: &[u8],
    ) -> Result<Option<MotionTransition>, MotionError> {
        let fresh =
            !matches!(&self.detector, Some(d) if d.width() == width && d.height() == height);
        if fresh {
            self.detector = Some(Detector::new(&self.cfg, width, height, self.fps));
        }
        let Some(det) = self.detector.as_mut() else {
            return Ok(None);
        };
        det.process(grey)?;
        let det = &*det;
        let m = det.last();
        let transition = self.tracker.update(at, m);
        self.summary.frames += 1;
        self.summary.global_changes += u64::from(m.global_change);
        if let Some((path, f)) = &mut self.grey_out {
            f.write_all(grey).map_err(|source| MotionError::GreyOut {
                path: path.clone(),
                source,
            })?;
        }
        if let Some(dbg) = &mut self.debug {
            dbg.frame(index, grey, det, m, transition.as_ref())?;
            self.summary.debug_frames = dbg.written;
        }
        if self.frame_lines {
            let line = FrameLine {
                frame: index,
                pts_ms: pts.map(|p| p.as_millis() as u64),
                width,
                height,
                boxes: &m.boxes,
                global_change: m.global_change,
                event: self.tracker.current().map(|e| e.id.as_str()),
                shift: m.shift,
            };
            write_json(&mut self.out, &line)?;
        }
        if let Some(MotionTransition::Ended(e)) = &transition {
            write_event(&mut self.out, e, width, height)?;
            self.summary.events += 1;
        }
        Ok(transition)
    }

    /// Ends the open event, flushes the output and returns what was seen.
    pub fn finish(mut self) -> Result<ReplaySummary, MotionError> {
        if let Some(MotionTransition::Ended(e)) = self.tracker.finish() {
            let (w, h) = self
                .detector
                .as_ref()
                .map(|d| (d.width(), d.height()))
                .unwrap_or_default();
            write_event(&mut self.out, &e, w, h)?;
            self.summary.events += 1;
        }
        if let Some((path, f)) = &mut self.grey_out {
            f.flush().map_err(|source| MotionError::GreyOut {
                path: path.clone(),
                source,
            })?;
        }
        self.out.flush().map_err(MotionError::Output)?;
        Ok(self.summary)
    }
}

fn write_event(
    out: &mut impl Write,
    event: &MotionEvent,
    width: u32,
    height: u32,
) -> Result<(), MotionError> {
    write_json(
        out,
        &EventLine {
            event,
            width,
            height,
        },
    )
}

fn write_json(out: &mut impl Write, v: &impl serde::Serialize) -> Result<(), MotionError> {
    let line = serde_json::to_string(v).map_err(|e| MotionError::Output(e.into()))?;
    writeln!(out, "{line}").map_err(MotionError::Output)
}

/// An owned grey frame: capture time, width, height, pixels (rows without padding).
pub type ReplayFrame = (SystemTime, u32, u32, Vec<u8>);

/// Replays owned frames (indexed from 0, no stream time) analysed at `fps` a second;
/// see [`Replay`].
pub fn replay<W, I>(
    cfg: &MotionConfig,
    fps: u32,
    camera: &str,
    frames: I,
    out: W,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, MotionError>
where
    W: Write,
    I: IntoIterator<Item = ReplayFrame>,
{
    let mut r = Replay::new(cfg, fps, camera, out, opts)?;
    for (i, (at, w, h, grey)) in frames.into_iter().enumerate() {
        r.frame(i as u64, None, at, w, h, &grey)?;
    }
    r.finish()
}

/// Most PNGs one replay writes.
const MAX_DEBUG_FRAMES: u32 = 60;
/// Frames written after an event start.
const AFTER_START: u32 = 2;

/// Chooses and writes debug frames: the frames leading to each event start, two after
/// it, the first frame after the background was seeded and after each event end
/// (quiet frames), and global changes.
struct DebugFrames {
    dir: PathBuf,
    camera: String,
    /// Recent annotated frames not yet written: (index, width, height, RGB).
    ring: VecDeque<(u64, u32, u32, Vec<u8>)>,
    ring_len: usize,
    after_start: u32,
    want_quiet: bool,
    written: u32,
    /// Every frame of this range (by index), and no chosen ones.
    range: Option<Range<u64>>,
}

impl DebugFrames {
    fn new(dir: &Path, camera: &str, ring_len: usize, range: Option<Range<u64>>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            camera: camera.to_string(),
            ring: VecDeque::new(),
            ring_len,
            after_start: 0,
            want_quiet: false,
            written: 0,
            range,
        }
    }

    fn frame(
        &mut self,
        index: u64,
        grey: &[u8],
        det: &Detector,
        m: &FrameMotion,
        t: Option<&MotionTransition>,
    ) -> Result<(), MotionError> {
        if let Some(range) = &self.range {
            if !range.contains(&index) {
                return Ok(());
            }
            let mut rgb = Vec::new();
            annotate(&mut rgb, grey, det, m);
            let tag = match t {
                Some(MotionTransition::Started(_)) => "start",
                Some(MotionTransition::Ended(_)) => "end",
                _ if m.global_change => "global",
                _ if m.has_motion() => "motion",
                _ => "quiet",
            };
            return self.write(index, tag, det.width(), det.height(), &rgb);
        }
        if self.written >= MAX_DEBUG_FRAMES {
            return Ok(());
        }
        let (w, h) = (det.width(), det.height());
        // Reuse the buffer of the frame that falls out of the ring.
        let mut rgb = if self.ring.len() >= self.ring_len {
            self.ring.pop_front().map(|f| f.3).unwrap_or_default()
        } else {
            Vec::new()
        };
        annotate(&mut rgb, grey, det, m);
        let quiet = !m.has_motion() && !m.global_change;
        let tag = match t {
            Some(MotionTransition::Started(_)) => Some("start"),
            Some(MotionTransition::Ended(_)) => Some("end"),
            _ if m.global_change => Some("global"),
            _ if self.after_start > 0 => Some("after-start"),
            _ if self.want_quiet && quiet && !m.reseeded => Some("quiet"),
            _ => None,
        };
        if m.reseeded {
            // The next quiet frame shows the settled background.
            self.want_quiet = true;
        }
        match tag {
            Some("start") => {
                for (i, fw, fh, img) in std::mem::take(&mut self.ring) {
                    self.write(i, "before-start", fw, fh, &img)?;
                }
                self.write(index, "start", w, h, &rgb)?;
                self.after_start = AFTER_START;
            }
            Some(tag) => {
                self.write(index, tag, w, h, &rgb)?;
                match tag {
                    "after-start" => self.after_start -= 1,
                    "quiet" => self.want_quiet = false,
                    "end" => self.want_quiet = true,
                    _ => {}
                }
            }
            None => self.ring.push_back((index, w, h, rgb)),
        }
        Ok(())
    }

    fn write(
        &mut self,
        index: u64,
        tag: &str,
        w: u32,
        h: u32,
        rgb: &[u8],
    ) -> Result<(), MotionError> {
        if self.range.is_none() && self.written >= MAX_DEBUG_FRAMES {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("{}-{index:06}-{tag}.png", self.camera));
        write_png(&path, w, h, rgb).map_err(|source| MotionError::DebugFrame { path, source })?;
        self.written += 1;
        Ok(())
    }
}

/// Draws the grey frame with the mask tinted blue, changed pixels red, boxes green and,
/// on a global change, a yellow border.
pub fn annotate(rgb: &mut Vec<u8>, grey: &[u8], det: &Detector, m: &FrameMotion) {
    let (wu, hu) = (det.width() as usize, det.height() as usize);
    let (active, changed, boxes, global) = (det.active(), det.changed(), &m.boxes, m.global_change);
    rgb.clear();
    rgb.reserve(wu * hu * 3);
    for ((&g, &a), &c) in grey.iter().zip(active).zip(changed) {
        let px = if c != 0 {
            [255, g / 3, g / 3]
        } else if a == 0 {
            [g / 2, g / 2, (g / 2).saturating_add(100)]
        } else {
            [g, g, g]
        };
        rgb.extend_from_slice(&px);
    }
    rgb.resize(wu * hu * 3, 0);
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < wu && y < hu {
            let i = (y * wu + x) * 3;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    for b in boxes {
        let (x0, y0) = (b.x as usize, b.y as usize);
        let (x1, y1) = (x0 + b.w.max(1) as usize - 1, y0 + b.h.max(1) as usize - 1);
        for x in x0..=x1 {
            put(x, y0, [0, 255, 0]);
            put(x, y1, [0, 255, 0]);
        }
        for y in y0..=y1 {
            put(x0, y, [0, 255, 0]);
            put(x1, y, [0, 255, 0]);
        }
    }
    if global {
        for x in 0..wu {
            for y in [0, 1, hu.saturating_sub(2), hu.saturating_sub(1)] {
                put(x, y, [255, 255, 0]);
            }
        }
        for y in 0..hu {
            for x in [0, 1, wu.saturating_sub(2), wu.saturating_sub(1)] {
                put(x, y, [255, 255, 0]);
            }
        }
    }
}

fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> std::io::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(rgb)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The flat frames' light step is a global change only when the exposure is not
    /// followed.
    /// Without the warm-up too: the square moves from frame 3.
    fn light_step_is_global() -> MotionConfig {
        MotionConfig {
            follow_exposure: false,
            warmup_frames: Some(crate::values::IntIn::lit(0)),
            ..MotionConfig::default()
        }
    }

    /// 64x48 frames: a square moving in frames 3..10, a light step at frame 28.
    fn frames() -> Vec<ReplayFrame> {
        let (w, h) = (64usize, 48usize);
        (0..40)
            .map(|i| {
                let level = if i >= 28 { 160 } else { 100 };
                let mut f = vec![level; w * h];
                if (3..10).contains(&i) {
                    let x0 = 4 + 4 * (i - 3);
                    for y in 10..22 {
                        f[y * w + x0..y * w + x0 + 12].fill(220);
                    }
                }
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(200 * i as u64);
                (at, w as u32, h as u32, f)
            })
            .collect()
    }

    #[test]
    fn a_replay_prints_one_json_line_per_event_and_writes_annotated_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let summary = replay(
            &light_step_is_global(),
            5,
            "yard",
            frames(),
            &mut out,
            &ReplayOptions {
                debug_dir: Some(dir.path().to_path_buf()),
                ..ReplayOptions::default()
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let e = &lines[0];
        assert_eq!(e["camera"], "yard");
        assert_eq!(e["start"], "1970-01-01T00:00:00.600Z");
        assert_eq!(e["end"], "1970-01-01T00:00:01.800Z");
        assert!(e["id"].as_str().unwrap().starts_with("yard-600-"));
        assert!(!e["boxes"].as_array().unwrap().is_empty());
        assert_eq!(summary.events, 1);
        assert_eq!(summary.frames, 40);
        assert_eq!(summary.global_changes, 1);

        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for want in [
            "yard-000001-quiet.png",
            "yard-000003-before-start.png",
            "yard-000004-start.png",
            "yard-000005-after-start.png",
            "yard-000024-end.png",
            "yard-000028-global.png",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert_eq!(names.len() as u32, summary.debug_frames);
        // The start frame is a real PNG of the frame size, with red changed pixels and
        // a green box drawn on it.
        let file = File::open(dir.path().join("yard-000004-start.png")).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (64, 48));
        let px: Vec<&[u8]> = buf.chunks_exact(3).collect();
        assert!(px.contains(&&[0u8, 255, 0][..]));
        assert!(px.iter().any(|p| p[0] == 255 && p[1] < 100));
    }

    #[test]
    fn frame_lines_carry_the_size_and_the_open_event_and_a_debug_range_writes_every_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let opts = ReplayOptions {
            debug_dir: Some(dir.path().to_path_buf()),
            debug_frames: Some(2..6),
            frame_lines: true,
            grey_out: Some(dir.path().join("grey.raw")),
        };
        let summary = replay(
            &light_step_is_global(),
            5,
            "yard",
            frames(),
            &mut out,
            &opts,
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (events, per_frame): (Vec<_>, Vec<_>) =
            lines.iter().partition(|l| l.get("camera").is_some());
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0]["width"].as_u64(), events[0]["height"].as_u64()),
            (Some(64), Some(48))
        );
        let id = events[0]["id"].as_str().unwrap();
        assert_eq!(per_frame.len(), 40);
        for (i, f) in per_frame.iter().enumerate() {
            assert_eq!(f["frame"], i as u64);
            assert_eq!(
                (f["width"].as_u64(), f["height"].as_u64()),
                (Some(64), Some(48))
            );
            assert!(f["pts_ms"].is_null());
            // The event is open from its start (frame 4, the second motion frame)
            // until the quiet period after frame 9 ran out (frame 24).
            let want = if (4..24).contains(&i) {
                serde_json::json!(id)
            } else {
                serde_json::Value::Null
            };
            assert_eq!(f["event"], want, "frame {i}");
            assert_eq!(f["global_change"], i == 28, "frame {i}");
            let boxes = f["boxes"].as_array().unwrap();
            assert_eq!(
                !boxes.is_empty(),
                (3..10).contains(&i),
                "frame {i}: {boxes:?}"
            );
        }
        // The event line comes right after the frame that ended it.
        let end_at = lines
            .iter()
            .position(|l| l.get("camera").is_some())
            .unwrap();
        assert_eq!(lines[end_at - 1]["frame"], 24);

        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".png"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "yard-000002-quiet.png",
                "yard-000003-motion.png",
                "yard-000004-start.png",
                "yard-000005-motion.png"
            ]
        );
        assert_eq!(summary.debug_frames, 4);
        let raw = std::fs::read(dir.path().join("grey.raw")).unwrap();
        assert_eq!(raw.len(), 40 * 64 * 48);
        assert_eq!(&raw[3 * 64 * 48..4 * 64 * 48], &frames()[3].3[..]);
    }
}
