//! The pre-roll ring: the last few seconds of a camera's own encoded stream (H.264 or
//! H.265 access units after depayload and parse, before the decoder), so a clip can
//! begin before the incident that starts it. Nothing is decoded or re-encoded; an entry
//! holds a reference to the parser's buffer.
//!
//! Invariants: the ring starts at a key frame, and that key frame is the newest one at
//! or before `newest − keep` (so the ring always covers `keep`, plus at most one GOP).
//! A hard byte cap bounds it: when it bites, whole GOPs leave from the front (even if
//! that leaves less than `keep`) and each bite is counted. Pure: plain data in and out.

use std::collections::VecDeque;
use std::time::Duration;

/// One access unit of the encoded stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit<T> {
    /// Stream time of the unit (decode order: DTS where known, else PTS).
    pub ts: Duration,
    /// A key frame (IDR/IRAP): a decoder, or a clip, can start here.
    pub key: bool,
    pub bytes: usize,
    pub item: T,
}

/// What pushing one unit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The unit was not kept: a delta frame with no key frame before it in the ring.
    pub skipped: bool,
    /// Units dropped from the front because the byte cap bit.
    pub capped: usize,
}

#[derive(Debug)]
pub struct PreRoll<T> {
    keep: Duration,
    cap_bytes: usize,
    units: VecDeque<Unit<T>>,
    bytes: usize,
}

impl<T> PreRoll<T> {
    /// `keep` zero disables the ring: nothing is kept.
    pub fn new(keep: Duration, cap_bytes: usize) -> Self {
        Self {
            keep,
            cap_bytes,
            units: VecDeque::new(),
            bytes: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.keep.is_zero() && self.cap_bytes > 0
    }

    /// Changes the window and cap; what no longer fits leaves at the next push.
    pub fn set_limits(&mut self, keep: Duration, cap_bytes: usize) {
        self.keep = keep;
        self.cap_bytes = cap_bytes;
        if !self.enabled() {
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.units.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stream time covered, first unit to last.
    pub fn span(&self) -> Duration {
        match (self.units.front(), self.units.back()) {
            (Some(a), Some(b)) => b.ts.saturating_sub(a.ts),
            _ => Duration::ZERO,
        }
    }

    pub fn units(&self) -> impl Iterator<Item = &Unit<T>> {
        self.units.iter()
    }

    pub fn push(&mut self, unit: Unit<T>) -> Pushed {
        let mut out = Pushed::default();
        if !self.enabled() {
            out.skipped = true;
            return out;
        }
        // Time going backwards (a new stream after a reconnect, a wrapped clock): what
        // is kept no longer lines up with what comes, so start again.
        if self.units.back().is_some_and(|b| unit.ts < b.ts) {
            self.clear();
        }
        if self.units.is_empty() && !unit.key {
            out.skipped = true;
            return out;
        }
        self.bytes += unit.bytes;
        self.units.push_back(unit);
        self.trim_to_window();
        out.capped = self.trim_to_cap();
        out
    }

    /// Drops the GOPs that lie wholly before the newest key frame at or before
    /// `newest − keep`.
    fn trim_to_window(&mut self) {
        let Some(newest) = self.units.back().map(|u| u.ts) else {
            return;
        };
        let Some(cut) = newest.checked_sub(self.keep) else {
            return;
        };
        let start = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.key && u.ts <= cut)
            .map(|(i, _)| i)
            .next_back();
        if let Some(start) = start {
            self.drop_front(start);
        }
    }

    /// Drops whole GOPs from the front while over the cap; a ring that is one GOP over
    /// the cap is emptied rather than left starting at a delta frame.
    fn trim_to_cap(&mut self) -> usize {
        let mut dropped = 0;
        while self.bytes > self.cap_bytes && !self.units.is_empty() {
            let next_key = self
                .units
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, u)| u.key)
                .map(|(i, _)| i)
                .unwrap_or(self.units.len());
            dropped += next_key;
            self.drop_front(next_key);
        }
        dropped
    }

    fn drop_front(&mut self, n: usize) {
        for u in self.units.drain(..n) {
            self.bytes -= u.bytes;
        }
    }

    /// Clones of the kept units, oldest first (cheap for refcounted items).
    pub fn snapshot(&self) -> Vec<Unit<T>>
    where
        T: Clone,
    {
        self.units.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(ms: u64, key: bool, bytes: usize) -> Unit<u64> {
        Unit {
            ts: Duration::from_millis(ms),
            key,
            bytes,
            item: ms,
        }
    }

    /// A 10 fps stream with a key frame every `gop` frames, `frames` long.
    fn feed(ring: &mut PreRoll<u64>, frames: u64, gop: u64, bytes: usize) -> usize {
        let mut capped = 0;
        for i in 0..frames {
            capped += ring.push(unit(i * 100, i % gop == 0, bytes)).capped;
        }
        capped
    }

    #[test]
    fn the_ring_starts_at_the_newest_key_frame_at_or_before_the_window() {
        let mut ring = PreRoll::new(Duration::from_secs(2), usize::MAX);
        // Key frames every second (10 frames); newest at 9.9 s, so the cut is 7.9 s and
        // the key frame at or before it is the one at 7.0 s.
        feed(&mut ring, 100, 10, 1000);
        let first = ring.units().next().unwrap();
        assert!(first.key);
        assert_eq!(first.ts, Duration::from_millis(7000));
        assert!(ring.span() >= Duration::from_secs(2));
        assert!(ring.span() < Duration::from_secs(3));
    }

    #[test]
    fn a_key_frame_exactly_at_the_window_edge_starts_the_ring() {
        let mut ring = PreRoll::new(Duration::from_secs(2), usize::MAX);
        // Newest at 9.0 s (a key frame), cut at 7.0 s: a key frame there.
        feed(&mut ring, 91, 10, 1000);
        assert_eq!(ring.units().next().unwrap().ts, Duration::from_millis(7000));
        assert_eq!(ring.span(), Duration::from_secs(2));
    }

    #[test]
    fn delta_frames_before_the_first_key_frame_are_not_kept() {
        let mut ring = PreRoll::new(Duration::from_secs(5), usize::MAX);
        assert!(ring.push(unit(0, false, 10)).skipped);
        assert!(ring.push(unit(100, false, 10)).skipped);
        assert!(!ring.push(unit(200, true, 10)).skipped);
        assert!(!ring.push(unit(300, false, 10)).skipped);
        assert_eq!(ring.len(), 2);
        assert!(ring.units().next().unwrap().key);
    }

    #[test]
    fn the_byte_cap_drops_whole_gops_from_the_front_and_counts_them() {
        // 10 frames a GOP of 100 bytes each: 1000 bytes a GOP; room for 2.5 GOPs.
        let mut ring = PreRoll::new(Duration::from_secs(60), 2500);
        let capped = feed(&mut ring, 50, 10, 100);
        assert!(ring.bytes() <= 2500, "{} bytes kept", ring.bytes());
        assert!(ring.units().next().unwrap().key);
        assert!(capped > 0);
        assert_eq!(capped + ring.len(), 50);
    }

    #[test]
    fn a_single_gop_larger_than_the_cap_empties_the_ring_rather_than_break_it() {
        let mut ring = PreRoll::new(Duration::from_secs(60), 500);
        feed(&mut ring, 10, 10, 100);
        // The 6th frame of the first GOP went over: nothing left to start at.
        assert!(ring.is_empty() || ring.units().next().unwrap().key);
        assert!(ring.bytes() <= 500);
    }

    #[test]
    fn time_going_backwards_starts_the_ring_again() {
        let mut ring = PreRoll::new(Duration::from_secs(5), usize::MAX);
        feed(&mut ring, 30, 10, 10);
        ring.push(unit(50, true, 10));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.bytes(), 10);
    }

    #[test]
    fn a_disabled_ring_keeps_nothing() {
        let mut ring = PreRoll::new(Duration::ZERO, 1 << 20);
        feed(&mut ring, 30, 10, 10);
        assert!(ring.is_empty());
        ring.set_limits(Duration::from_secs(1), 1 << 20);
        feed(&mut ring, 30, 10, 10);
        assert!(!ring.is_empty());
        ring.set_limits(Duration::ZERO, 1 << 20);
        assert!(ring.is_empty());
        assert_eq!(ring.bytes(), 0);
    }
}
