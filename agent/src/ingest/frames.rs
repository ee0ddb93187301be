//! Frame products of a camera and the plain-data work on them: the grey frame for
//! motion (the luma plane, box-downscaled here), the analysis-rate sampler, and the
//! small ring of decoded frames that colour frames are made from on demand.
//! Nothing here talks to a pipeline; the GStreamer part only maps buffers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A small grey frame for the motion stage.
#[derive(Clone, Debug)]
pub struct GreyFrame {
    pub camera: Arc<str>,
    /// Decoded-frame sequence number of this camera, increasing across restarts. Frames
    /// sampled out by the analysis rate leave gaps.
    pub seq: u64,
    /// Wall-clock time the decoded frame reached the agent: the start of the latency chain.
    pub captured: SystemTime,
    /// Stream time of the frame (position in a file for replays), when the source has one.
    pub pts: Option<Duration>,
    pub width: u32,
    pub height: u32,
    /// Analysis frames a second of this stream: `analysis_fps`, or the source's frame
    /// rate where that is known and lower (a 10 fps camera gives 10 at any higher
    /// setting). The motion detector turns its times into frames at this rate.
    pub fps: u32,
    /// Tightly packed `width * height` luma.
    pub data: Vec<u8>,
}

/// A colour frame at detection size, made on demand from a kept decoded frame, with
/// crops of it at full resolution when asked for.
#[derive(Clone, Debug)]
pub struct ColourFrame {
    pub camera: Arc<str>,
    pub seq: u64,
    pub captured: SystemTime,
    pub width: u32,
    pub height: u32,
    /// Packed RGB24, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// The decoded (camera) frame's size.
    pub source_width: u32,
    pub source_height: u32,
    pub crops: Vec<Crop>,
}

/// A part of the camera frame at its full resolution.
#[derive(Clone, Debug)]
pub struct Crop {
    /// Where, in camera pixels.
    pub frame: crate::wire::regions::Rect,
    /// Packed RGB24, `frame.w * frame.h * 3` bytes.
    pub rgb: Vec<u8>,
}

/// The size of a frame scaled to `width`, keeping the aspect ratio (at least 1x1).
/// `width == 0` keeps the source size.
pub fn scaled_size(src_w: u32, src_h: u32, width: u32) -> (u32, u32) {
    if width == 0 || src_w == 0 {
        return (src_w, src_h);
    }
    let h = ((src_h as u64 * width as u64 + src_w as u64 / 2) / src_w as u64).max(1);
    (width, h as u32)
}

/// Box-filter downscale of one 8-bit plane (`stride` bytes per row) to `dst_w x dst_h`,
/// tightly packed. Every source pixel counts once, so a moving object is not aliased
/// away; upscaling degenerates to nearest-neighbour.
pub fn downscale_plane(
    src: &[u8],
    stride: usize,
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
) -> Vec<u8> {
    let (sw, sh, dw, dh) = (
        src_w as usize,
        src_h as usize,
        dst_w as usize,
        dst_h as usize,
    );
    let mut out = vec![0u8; dw * dh];
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 || src.len() < stride * (sh - 1) + sw {
        return out;
    }
    // Column spans are the same for every row: compute them once.
    let spans: Vec<(usize, usize)> = (0..dw)
        .map(|x| {
            let a = x * sw / dw;
            let b = ((x + 1) * sw / dw).max(a + 1).min(sw);
            (a, b)
        })
        .collect();
    let mut col_sums = vec![0u32; sw];
    for (y, out_row) in out.chunks_exact_mut(dw).enumerate() {
        let y0 = y * sh / dh;
        let y1 = ((y + 1) * sh / dh).max(y0 + 1).min(sh);
        col_sums.iter_mut().for_each(|s| *s = 0);
        for row in src.chunks(stride).skip(y0).take(y1 - y0) {
            for (s, &p) in col_sums.iter_mut().zip(&row[..sw]) {
                *s += p as u32;
            }
        }
        let rows = (y1 - y0) as u32;
        for (o, &(a, b)) in out_row.iter_mut().zip(&spans) {
            let sum: u32 = col_sums[a..b].iter().sum();
            let n = rows * (b - a) as u32;
            *o = ((sum + n / 2) / n) as u8;
        }
    }
    out
}

/// Picks frames at the analysis rate from their stream times: a frame is taken when it
/// is due (within a small tolerance for rounding), and the next one is due one interval
/// later, so the long-run rate is exact whatever the source rate.
#[derive(Debug, Clone)]
pub struct Sampler {
    interval: Duration,
    next: Option<Duration>,
}

/// Source timestamps are rounded to nanoseconds; a frame this close to due counts as due.
const SAMPLE_TOLERANCE: Duration = Duration::from_millis(5);

impl Sampler {
    /// `fps == 0` takes every frame.
    pub fn new(fps: u32) -> Self {
        let interval = if fps == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(1_000_000_000 / fps as u64)
        };
        Self {
            interval,
            next: None,
        }
    }

    /// Whether the frame at stream time `t` goes to motion.
    pub fn take(&mut self, t: Duration) -> bool {
        match self.next {
            Some(next) if t + SAMPLE_TOLERANCE < next => {
                // A jump backwards (new segment, wrapped clock) restarts the schedule.
                if next > t + self.interval * 2 {
                    self.next = Some(t + self.interval);
                    return true;
                }
                false
            }
            Some(next) => {
                let mut due = next + self.interval;
                if due <= t {
                    // Fell behind (gap in the stream): restart the schedule from here.
                    due = t + self.interval;
                }
                self.next = Some(due);
                true
            }
            None => {
                self.next = Some(t + self.interval);
                true
            }
        }
    }
}

/// A kept decoded frame: a reference to the decoder's buffer, converted only on demand.
#[derive(Clone, Debug)]
pub struct Kept<T> {
    pub seq: u64,
    pub captured: SystemTime,
    pub frame: T,
}

/// The newest `cap` kept frames, oldest first.
#[derive(Debug)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<Kept<T>>,
}

impl<T: Clone> Ring<T> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            items: VecDeque::with_capacity(cap),
        }
    }

    pub fn push(&mut self, item: Kept<T>) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// The frame with `seq`, or the nearest newer one kept; `None` when every kept frame
    /// is older than `seq`.
    pub fn at_or_after(&self, seq: u64) -> Option<Kept<T>> {
        self.items.iter().find(|k| k.seq >= seq).cloned()
    }

    pub fn latest(&self) -> Option<Kept<T>> {
        self.items.back().cloned()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_size_keeps_the_aspect_ratio_and_zero_keeps_the_source() {
        let rows = [
            ((1280, 720, 320), (320, 180)),
            ((640, 272, 320), (320, 136)),
            ((1920, 1080, 0), (1920, 1080)),
            ((641, 1, 32), (32, 1)),
            ((100, 3, 10), (10, 1)),
        ];
        for ((w, h, t), want) in rows {
            assert_eq!(scaled_size(w, h, t), want, "{w}x{h} to width {t}");
        }
    }

    #[test]
    fn downscale_averages_each_box_and_honours_the_stride() {
        // 4x2 plane with stride 6 (2 padding bytes that must be ignored).
        let src = [10, 20, 30, 40, 255, 255, 50, 60, 70, 80, 255, 255];
        assert_eq!(downscale_plane(&src, 6, 4, 2, 2, 1), vec![35, 55]);
        assert_eq!(downscale_plane(&src, 6, 4, 2, 1, 1), vec![45]);
        assert_eq!(
            downscale_plane(&src, 6, 4, 2, 4, 2),
            vec![10, 20, 30, 40, 50, 60, 70, 80]
        );
        // Non-integer ratio: 3 -> 2 columns covers [0,1) and [1,3).
        assert_eq!(downscale_plane(&[0, 90, 30], 3, 3, 1, 2, 1), vec![0, 60]);
        // Upscale is nearest-neighbour, never out of bounds.
        assert_eq!(
            downscale_plane(&[7, 9], 2, 2, 1, 4, 2),
            vec![7, 7, 9, 9, 7, 7, 9, 9]
        );
    }

    #[test]
    fn downscale_of_a_short_buffer_gives_black_instead_of_panicking() {
        assert_eq!(downscale_plane(&[1, 2, 3], 4, 4, 2, 2, 1), vec![0, 0]);
    }

    fn taken(fps_src: f64, fps_out: u32, seconds: f64) -> usize {
        let mut s = Sampler::new(fps_out);
        let n = (fps_src * seconds) as usize;
        (0..n)
            .filter(|&i| s.take(Duration::from_nanos((i as f64 * 1e9 / fps_src) as u64)))
            .count()
    }

    #[test]
    fn sampler_keeps_the_analysis_rate_for_common_source_rates() {
        for (src, out, want) in [
            (30.0, 5, 50),
            (25.0, 5, 50),
            (29.97, 5, 50),
            (15.0, 5, 50),
            (7.0, 5, 50),
            (30.0, 30, 300),
            (10.0, 15, 100),
        ] {
            let got = taken(src, out, 10.0);
            assert!(
                (got as i64 - want as i64).abs() <= 1,
                "{src} fps to {out}: {got} frames in 10 s, want {want}"
            );
        }
    }

    #[test]
    fn sampler_restarts_its_schedule_after_a_gap_or_a_jump_back() {
        let mut s = Sampler::new(5);
        assert!(s.take(Duration::from_millis(0)));
        assert!(!s.take(Duration::from_millis(100)));
        assert!(s.take(Duration::from_secs(10)));
        assert!(!s.take(Duration::from_millis(10_100)));
        assert!(s.take(Duration::from_millis(10_200)));
        // Back to zero (a new segment): taken at once.
        assert!(s.take(Duration::from_millis(0)));
        assert!(!s.take(Duration::from_millis(100)));
    }

    #[test]
    fn sampler_with_zero_rate_takes_every_frame() {
        let mut s = Sampler::new(0);
        assert!((0..10).all(|i| s.take(Duration::from_millis(i))));
    }

    #[test]
    fn ring_keeps_the_newest_and_finds_the_frame_or_the_next_newer() {
        let mut r = Ring::new(3);
        for seq in [2u64, 5, 9, 12] {
            r.push(Kept {
                seq,
                captured: SystemTime::UNIX_EPOCH,
                frame: seq * 10,
            });
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.at_or_after(0).map(|k| k.frame), Some(50), "oldest kept");
        assert_eq!(r.at_or_after(9).map(|k| k.frame), Some(90), "exact");
        assert_eq!(r.at_or_after(10).map(|k| k.frame), Some(120), "next newer");
        assert!(r.at_or_after(13).is_none(), "newer than all kept");
        assert_eq!(r.latest().map(|k| k.seq), Some(12));
    }
}
