//! The synthetic scene behind `demo://` cameras and the test RTSP server: a still,
//! textured background and a red square that moves during known frame ranges.
//!
//! `videotestsrc` paces the frames (live or as fast as possible) and numbers them in the
//! buffer offset; a pad probe paints the scene into each buffer, so frame `n` always
//! shows the same picture and tests know exactly when there is motion.

// `moves` is a list of frame windows; the defaults happen to hold one.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_video as gst_video;

use gst::prelude::*;
use gst_video::prelude::*;

/// What the scene looks like and when its object moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The scene repeats every `period` frames.
    pub period: u64,
    /// Frame ranges within a period during which the object moves (right, then back).
    /// Outside them it rests at its start position.
    pub moves: Vec<Range<u64>>,
    /// Objects painted instead of the default red square, in this order (later ones
    /// over earlier ones); empty: the default square, with `moves`.
    pub objects: Vec<SceneObject>,
}

/// A square that moves right by `travel` pixels and back during each of its `moves`
/// windows (frame ranges within the scene's period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SceneObject {
    /// Top-left corner at rest.
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub travel: u32,
    pub moves: Vec<Range<u64>>,
    /// Limited-range BT.601 YUV ([`OBJECT_YUV`]: red, found as `fire` by the test model).
    pub yuv: [u8; 3],
}

/// A dark grey, which the test model's colour classes do not find.
pub const DARK_YUV: [u8; 3] = [40, 128, 128];

impl Default for Scene {
    /// 640x360 at 30 fps, 5 s period, moving during frames 45..105 of each period.
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 30,
            period: 150,
            moves: vec![45..105],
            objects: Vec::new(),
        }
    }
}

/// The object's colour in limited-range BT.601 YUV: a saturated red.
pub const OBJECT_YUV: [u8; 3] = [81, 90, 240];

impl Scene {
    /// The default scene at another size and rate.
    pub fn sized(width: u32, height: u32, fps: u32) -> Self {
        let d = Self::default();
        Self {
            width,
            height,
            fps,
            period: fps as u64 * 5,
            moves: vec![fps as u64 * 3 / 2..fps as u64 * 7 / 2],
            objects: Vec::new(),
        }
        .or(d)
    }

    /// The scene a `demo://` URL asks for: `demo://anything?width=1280&height=720&fps=30`
    /// (each optional; unknown or invalid values keep the defaults).
    pub fn from_demo_url(url: &str) -> Self {
        let d = Self::default();
        let (mut w, mut h, mut fps) = (d.width, d.height, d.fps);
        if let Ok(u) = url::Url::parse(url) {
            for (k, v) in u.query_pairs() {
                let Ok(n) = v.parse::<u32>() else { continue };
                match k.as_ref() {
                    "width" if (16..=7680).contains(&n) => w = n & !1,
                    "height" if (16..=4320).contains(&n) => h = n & !1,
                    "fps" if (1..=120).contains(&n) => fps = n,
                    _ => {}
                }
            }
        }
        Self::sized(w, h, fps)
    }

    fn or(self, fallback: Self) -> Self {
        if self.width < 16 || self.height < 16 || self.fps == 0 {
            fallback
        } else {
            self
        }
    }

    /// Edge length of the square object.
    pub fn object_size(&self) -> u32 {
        (self.height / 6).max(4) & !1
    }

    /// The objects painted: `objects`, or the default red square.
    pub fn painted(&self) -> Vec<SceneObject> {
        if !self.objects.is_empty() {
            return self.objects.clone();
        }
        let size = self.object_size();
        let x0 = self.width / 8;
        let x1 = (self.width * 5 / 8).min(self.width.saturating_sub(size));
        vec![SceneObject {
            x: x0,
            y: (self.height - size) / 2,
            size,
            travel: x1.saturating_sub(x0),
            moves: self.moves.clone(),
            yuv: OBJECT_YUV,
        }]
    }

    /// Top-left corner of the (first) object in frame `n`.
    pub fn object_at(&self, n: u64) -> (u32, u32) {
        self.painted()[0].at(n, self.period)
    }

    /// Whether frame `n` differs from frame `n - 1` (the object moved).
    pub fn moving_at(&self, n: u64) -> bool {
        n > 0
            && self
                .painted()
                .iter()
                .any(|o| o.at(n, self.period) != o.at(n - 1, self.period))
    }

    /// Raw caps of the scene: I420 at its size and rate.
    pub fn caps(&self) -> gst::Caps {
        gst_video::VideoCapsBuilder::new()
            .format(gst_video::VideoFormat::I420)
            .width(self.width as i32)
            .height(self.height as i32)
            .framerate(gst::Fraction::new(self.fps as i32, 1))
            .build()
    }

    /// A `gst-launch` fragment producing the scene's frames; call [`Scene::paint_on`] on
    /// the element named `name` once the pipeline exists.
    pub fn launch_fragment(&self, name: &str, live: bool) -> String {
        format!(
            "videotestsrc name={name} is-live={live} pattern=black ! \
             video/x-raw,format=I420,width={},height={},framerate={}/1",
            self.width, self.height, self.fps
        )
    }

    /// A source bin with one `src` pad producing the scene; `frames` limits its length
    /// (then EOS), `live` paces it with the clock.
    pub fn source(
        &self,
        live: bool,
        frames: Option<u64>,
    ) -> Result<gst::Element, gst::glib::BoolError> {
        let src = gst::ElementFactory::make("videotestsrc")
            .property("is-live", live)
            .property_from_str("pattern", "black")
            .build()?;
        if let Some(n) = frames {
            src.set_property("num-buffers", n.min(i32::MAX as u64) as i32);
        }
        let filter = gst::ElementFactory::make("capsfilter")
            .property("caps", self.caps())
            .build()?;
        let bin = gst::Bin::new();
        bin.add_many([&src, &filter])?;
        src.link(&filter)?;
        let pad = filter
            .static_pad("src")
            .ok_or_else(|| gst::glib::bool_error!("capsfilter has no src pad"))?;
        let ghost = gst::GhostPad::with_target(&pad)?;
        ghost.set_active(true)?;
        bin.add_pad(&ghost)?;
        self.paint_on(&src);
        Ok(bin.upcast())
    }

    /// Paints the scene into every buffer leaving `videotestsrc`'s src pad.
    pub fn paint_on(&self, videotestsrc: &gst::Element) {
        let Some(pad) = videotestsrc.static_pad("src") else {
            return;
        };
        let painter = Arc::new(Painter::new(self.clone()));
        pad.add_probe(gst::PadProbeType::BUFFER, move |_pad, info| {
            if let Some(gst::PadProbeData::Buffer(ref mut buffer)) = info.data {
                let n = buffer.offset();
                painter.paint(buffer.make_mut(), n);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Y, U and V planes of the background, tightly packed.
    fn background(&self) -> [Vec<u8>; 3] {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y = (0..h)
            .flat_map(|r| {
                (0..w).map(move |c| {
                    // 16x16 blocks of hashed brightness: texture that compresses well.
                    let mut v = ((r / 16) as u32).wrapping_mul(73_856_093)
                        ^ ((c / 16) as u32).wrapping_mul(19_349_663);
                    v ^= v >> 13;
                    v = v.wrapping_mul(0x5bd1_e995);
                    v ^= v >> 15;
                    (60 + v % 130) as u8
                })
            })
            .collect();
        let u = (0..ch)
            .flat_map(|_| (0..cw).map(move |c| (100 + c * 56 / cw.max(1)) as u8))
            .collect();
        let v = (0..ch)
            .flat_map(|r| (0..cw).map(move |_| (100 + r * 56 / ch.max(1)) as u8))
            .collect();
        [y, u, v]
    }
}

impl SceneObject {
    /// Top-left corner in frame `n` of a scene repeating every `period` frames (even
    /// coordinates: the chroma planes are half size).
    pub fn at(&self, n: u64, period: u64) -> (u32, u32) {
        let f = n % period.max(1);
        let x = match self.moves.iter().find(|r| r.contains(&f)) {
            Some(r) => {
                let len = (r.end - r.start).max(1) as f64;
                let p = (f - r.start) as f64 / len;
                let tri = 1.0 - (2.0 * p - 1.0).abs();
                self.x + (self.travel as f64 * tri).round() as u32
            }
            None => self.x,
        };
        (x & !1, self.y & !1)
    }
}

struct Painter {
    scene: Scene,
    objects: Vec<SceneObject>,
    info: Option<gst_video::VideoInfo>,
    planes: [Vec<u8>; 3],
}

impl Painter {
    fn new(scene: Scene) -> Self {
        let info = gst_video::VideoInfo::from_caps(&scene.caps()).ok();
        let planes = scene.background();
        Self {
            objects: scene.painted(),
            scene,
            info,
            planes,
        }
    }

    fn paint(&self, buffer: &mut gst::BufferRef, n: u64) {
        let Some(info) = &self.info else { return };
        let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info) else {
            return;
        };
        let objects: Vec<((u32, u32), &SceneObject)> = self
            .objects
            .iter()
            .map(|o| (o.at(n, self.scene.period), o))
            .collect();
        for p in 0..3u32 {
            let (pw, ph, shift) = if p == 0 {
                (self.scene.width as usize, self.scene.height as usize, 0)
            } else {
                (
                    self.scene.width.div_ceil(2) as usize,
                    self.scene.height.div_ceil(2) as usize,
                    1,
                )
            };
            let stride = frame.plane_stride()[p as usize] as usize;
            let Ok(dst) = frame.plane_data_mut(p) else {
                return;
            };
            let bg = &self.planes[p as usize];
            for (row, src) in bg.chunks_exact(pw).take(ph).enumerate() {
                let Some(d) = dst.get_mut(row * stride..row * stride + pw) else {
                    return;
                };
                d.copy_from_slice(src);
                for ((ox, oy), o) in &objects {
                    let (x0, y0) = ((ox >> shift) as usize, (oy >> shift) as usize);
                    let s = (o.size >> shift).max(1) as usize;
                    if (y0..y0 + s).contains(&row) {
                        let end = (x0 + s).min(pw);
                        d[x0.min(end)..end].fill(o.yuv[p as usize]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_moves_only_inside_the_move_ranges_and_returns_home() {
        let s = Scene::default();
        let moving: Vec<u64> = (0..300).filter(|&n| s.moving_at(n)).collect();
        assert!(!moving.is_empty());
        assert!(
            moving.iter().all(|&n| (46..=105).contains(&(n % 150))),
            "{moving:?}"
        );
        assert_eq!(s.object_at(0), s.object_at(44));
        assert_eq!(s.object_at(0), s.object_at(120));
        assert_ne!(s.object_at(0), s.object_at(75));
        let (x, y) = s.object_at(75);
        assert!(x + s.object_size() <= s.width && y + s.object_size() <= s.height);
    }

    #[test]
    fn listed_objects_replace_the_default_square_and_each_moves_in_its_own_windows() {
        let o = |y, moves: Vec<Range<u64>>| SceneObject {
            x: 10,
            y,
            size: 8,
            travel: 100,
            moves,
            yuv: OBJECT_YUV,
        };
        let s = Scene {
            objects: vec![o(20, vec![10..20]), o(60, vec![30..40])],
            ..Scene::default()
        };
        let painted = s.painted();
        assert_eq!(painted.len(), 2);
        assert_eq!(painted[0].at(15, s.period), (110, 20), "first at its peak");
        assert_eq!(painted[1].at(15, s.period), (10, 60), "second at rest");
        assert_eq!(painted[1].at(35, s.period), (110, 60));
        let moving: Vec<u64> = (0..50).filter(|&n| s.moving_at(n)).collect();
        assert!(moving
            .iter()
            .all(|n| (11..=20).contains(n) || (31..=40).contains(n)));
        assert!(moving.contains(&12) && moving.contains(&33), "{moving:?}");
        // Without objects, the default square is the one painted.
        assert_eq!(
            Scene::default().painted()[0].size,
            Scene::default().object_size()
        );
    }

    #[test]
    fn demo_urls_choose_size_and_rate_and_ignore_nonsense() {
        let rows = [
            ("demo://x", (640, 360, 30)),
            ("demo://x?width=1280&height=720&fps=25", (1280, 720, 25)),
            ("demo://x?width=3&fps=abc&colour=red", (640, 360, 30)),
            ("demo://x?fps=10", (640, 360, 10)),
        ];
        for (url, (w, h, fps)) in rows {
            let s = Scene::from_demo_url(url);
            assert_eq!((s.width, s.height, s.fps), (w, h, fps), "{url}");
        }
    }

    #[test]
    fn sized_scenes_keep_the_same_timing_in_seconds() {
        let s = Scene::sized(1280, 720, 30);
        assert_eq!((s.period, s.moves.clone()), (150, vec![45..105]));
        assert_eq!(Scene::sized(0, 0, 0), Scene::default());
    }
}
