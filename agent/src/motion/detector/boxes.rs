//! The detector's output: boxes in analysis pixels or in fractions of the frame, and
//! what one frame showed. Plain data, shared with the event tracker and the tool.

use serde::{Deserialize, Serialize};

/// A box in analysis-frame pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MotionBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A box in fractions of the frame (0..=1), for consumers working at another size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl MotionBox {
    pub fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    /// The smallest box holding both (an empty box is the identity).
    pub fn union(&self, o: &MotionBox) -> MotionBox {
        if self.area() == 0 {
            return *o;
        }
        if o.area() == 0 {
            return *self;
        }
        let (x0, y0) = (self.x.min(o.x), self.y.min(o.y));
        let x1 = (self.x + self.w).max(o.x + o.w);
        let y1 = (self.y + self.h).max(o.y + o.h);
        MotionBox {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }

    /// Intersection over union (0 when either is empty).
    pub fn iou(&self, o: &MotionBox) -> f64 {
        let ix = (self.x + self.w)
            .min(o.x + o.w)
            .saturating_sub(self.x.max(o.x)) as u64;
        let iy = (self.y + self.h)
            .min(o.y + o.h)
            .saturating_sub(self.y.max(o.y)) as u64;
        let inter = ix * iy;
        let uni = self.area() + o.area() - inter;
        if uni == 0 {
            0.0
        } else {
            inter as f64 / uni as f64
        }
    }

    /// The box in fractions of a `width` x `height` frame.
    pub fn normalised(&self, width: u32, height: u32) -> NormBox {
        let (fw, fh) = (width.max(1) as f32, height.max(1) as f32);
        NormBox {
            x: self.x as f32 / fw,
            y: self.y as f32 / fh,
            w: self.w as f32 / fw,
            h: self.h as f32 / fh,
        }
    }
}

/// What one frame showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameMotion {
    /// Moving regions after the area filter; empty on a global change.
    pub boxes: Vec<MotionBox>,
    /// Fraction of the unmasked pixels over the threshold (before dilation, shadows
    /// included).
    pub changed_fraction: f32,
    /// Fraction of the grid cells that show change.
    pub spread: f32,
    /// The whole scene changed (light, rain, IR switch, camera moved, scene cut): the
    /// background was re-seeded and the frame must raise no event.
    pub global_change: bool,
    /// Camera shake compensated on this frame: the frame content at (x + dx, y + dy)
    /// was compared with the background at (x, y). Boxes are in frame pixels.
    pub shift: (i32, i32),
    /// The background was (re-)seeded from this frame: first frame or global change.
    pub reseeded: bool,
    /// Warm-up (`warmup` after the first frame): the noise level is still the
    /// plain mean of every difference seen.
    pub learning: bool,
}

impl FrameMotion {
    /// Forgets the last frame's result, keeping the boxes' buffer.
    pub(super) fn clear(&mut self) {
        self.boxes.clear();
        self.global_change = false;
        self.reseeded = false;
        self.changed_fraction = 0.0;
        self.spread = 0.0;
        self.shift = (0, 0);
        self.learning = false;
    }

    /// Motion that counts towards an event.
    pub fn has_motion(&self) -> bool {
        !self.global_change && !self.boxes.is_empty()
    }
}
