//! The bounded buffers of a transport, as plain data (no I/O, no clock of their own):
//! the outbox that holds messages while the broker is away, and the table of frames
//! sent and not yet answered (MQTT redelivery, and the backlog on every transport).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Events (results, events, snapshots, status) are kept and sent before frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Event,
    Frame,
}

/// Messages waiting for the broker. Full policy: drop the oldest frame; with no frame
/// left, an incoming frame is dropped; with only events, the oldest event goes.
#[derive(Debug)]
pub struct Outbox<T> {
    cap: usize,
    events: VecDeque<T>,
    frames: VecDeque<T>,
}

impl<T> Outbox<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            events: VecDeque::new(),
            frames: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a message; returns the one dropped to make room, if any.
    pub fn push(&mut self, class: Class, item: T) -> Option<(Class, T)> {
        let dropped = if self.len() < self.cap {
            None
        } else if let Some(old) = self.frames.pop_front() {
            Some((Class::Frame, old))
        } else if class == Class::Frame {
            return Some((Class::Frame, item));
        } else {
            self.events.pop_front().map(|old| (Class::Event, old))
        };
        self.queue(class).push_back(item);
        dropped
    }

    /// Puts back a message that was taken but not confirmed (connection lost), ahead of
    /// the others. These were accepted once, so the bound may be passed by at most the
    /// publish window.
    pub fn push_front(&mut self, class: Class, item: T) {
        self.queue(class).push_front(item);
    }

    /// The next message to send: events first.
    pub fn pop(&mut self) -> Option<(Class, T)> {
        if let Some(e) = self.events.pop_front() {
            return Some((Class::Event, e));
        }
        self.frames.pop_front().map(|f| (Class::Frame, f))
    }

    fn queue(&mut self, class: Class) -> &mut VecDeque<T> {
        match class {
            Class::Event => &mut self.events,
            Class::Frame => &mut self.frames,
        }
    }
}

/// A frame sent and not yet answered.
#[derive(Debug)]
struct Entry<T> {
    camera: String,
    seq: u64,
    sent: Instant,
    attempts: u32,
    item: T,
}

/// What [`Unanswered::due`] decided.
#[derive(Debug, Default)]
pub struct Due<T> {
    /// Frames to publish again.
    pub resend: Vec<T>,
    /// Frames given up on (no answer after every attempt, or redelivery off).
    pub expired: usize,
}

/// Frames sent and not yet answered, oldest first, bounded. With redelivery on
/// (MQTT) a frame is sent again after `after`, at most `max` times; with `max == 0`
/// (AMQP, where the broker redelivers) entries only count the backlog and expire.
#[derive(Debug)]
pub struct Unanswered<T> {
    cap: usize,
    after: Duration,
    max: u32,
    entries: VecDeque<Entry<T>>,
}

impl<T: Clone> Unanswered<T> {
    pub fn new(cap: usize, after: Duration, max: u32) -> Self {
        Self {
            cap: cap.max(1),
            after,
            max,
            entries: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a sent frame; returns true when the oldest entry had to be evicted.
    pub fn insert(&mut self, camera: &str, seq: u64, item: T, now: Instant) -> bool {
        // A frame sent again under the same name replaces its entry.
        self.entries
            .retain(|e| !(e.seq == seq && e.camera == camera));
        let evicted = self.entries.len() >= self.cap;
        if evicted {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            camera: camera.to_string(),
            seq,
            sent: now,
            attempts: 0,
            item,
        });
        evicted
    }

    /// Clears the entry of an answered frame; false when there was none (a duplicate
    /// answer, or one for a frame given up on).
    pub fn answer(&mut self, camera: &str, seq: u64) -> bool {
        match self
            .entries
            .iter()
            .position(|e| e.seq == seq && e.camera == camera)
        {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Every unanswered frame, to publish again now (counted as an attempt; those out of
    /// attempts are given up on). For frames published while no consumer was subscribed:
    /// an MQTT broker does not keep them, and waiting `after` would waste seconds.
    pub fn resend_all(&mut self, now: Instant) -> Due<T> {
        let before = self.after;
        self.after = Duration::ZERO;
        let out = self.due(now);
        self.after = before;
        out
    }

    /// Frames whose answer is overdue at `now`.
    pub fn due(&mut self, now: Instant) -> Due<T> {
        let mut out = Due {
            resend: Vec::new(),
            expired: 0,
        };
        let (after, max) = (self.after, self.max);
        self.entries.retain_mut(|e| {
            if now.saturating_duration_since(e.sent) < after {
                return true;
            }
            if e.attempts >= max {
                out.expired += 1;
                return false;
            }
            e.attempts += 1;
            e.sent = now;
            out.resend.push(e.item.clone());
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_the_oldest_frame_and_keeps_events() {
        let mut o = Outbox::new(3);
        assert!(o.push(Class::Frame, "f1").is_none());
        assert!(o.push(Class::Event, "e1").is_none());
        assert!(o.push(Class::Frame, "f2").is_none());
        assert_eq!(o.push(Class::Event, "e2"), Some((Class::Frame, "f1")));
        assert_eq!(o.push(Class::Frame, "f3"), Some((Class::Frame, "f2")));
        // Only events and one frame left; a new event pushes the frame out.
        assert_eq!(o.push(Class::Event, "e3"), Some((Class::Frame, "f3")));
        // All events: a new frame is refused, a new event replaces the oldest event.
        assert_eq!(o.push(Class::Frame, "f4"), Some((Class::Frame, "f4")));
        assert_eq!(o.push(Class::Event, "e4"), Some((Class::Event, "e1")));
        let order: Vec<_> = std::iter::from_fn(|| o.pop().map(|x| x.1)).collect();
        assert_eq!(order, ["e2", "e3", "e4"]);
    }

    #[test]
    fn events_are_sent_before_frames_and_requeued_messages_go_first() {
        let mut o = Outbox::new(10);
        o.push(Class::Frame, 1);
        o.push(Class::Event, 2);
        o.push(Class::Frame, 3);
        o.push_front(Class::Frame, 0);
        let order: Vec<_> = std::iter::from_fn(|| o.pop()).collect();
        assert_eq!(
            order,
            [
                (Class::Event, 2),
                (Class::Frame, 0),
                (Class::Frame, 1),
                (Class::Frame, 3)
            ]
        );
    }

    #[test]
    fn an_unanswered_frame_is_resent_after_the_deadline_at_most_max_times() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut u = Unanswered::new(10, s, 2);
        u.insert("cam", 1, "f1", t0);
        u.insert("cam", 2, "f2", t0);
        assert!(u.due(t0 + s / 2).resend.is_empty());
        assert!(u.answer("cam", 2));
        assert!(!u.answer("cam", 2), "a second answer is a duplicate");
        assert_eq!(u.due(t0 + s).resend, ["f1"]);
        assert!(u.due(t0 + s + s / 2).resend.is_empty());
        assert_eq!(u.due(t0 + 2 * s).resend, ["f1"]);
        let last = u.due(t0 + 3 * s);
        assert!(last.resend.is_empty());
        assert_eq!(last.expired, 1);
        assert!(u.is_empty());
    }

    #[test]
    fn resend_all_sends_every_unanswered_frame_at_once_within_the_attempt_limit() {
        let t0 = Instant::now();
        let mut u = Unanswered::new(8, Duration::from_secs(10), 1);
        u.insert("cam", 1, "f1", t0);
        u.insert("cam", 2, "f2", t0 + Duration::from_millis(5));
        let d = u.resend_all(t0 + Duration::from_millis(10));
        assert_eq!((d.resend, d.expired), (vec!["f1", "f2"], 0));
        // The deadline still holds for the normal path, restarted from the resend.
        assert!(u.due(t0 + Duration::from_secs(9)).resend.is_empty());
        // Out of attempts (max 1): a second resend_all gives them up.
        let d = u.resend_all(t0 + Duration::from_millis(20));
        assert_eq!((d.resend.len(), d.expired), (0, 2));
        assert!(u.is_empty());
    }

    #[test]
    fn the_unanswered_table_is_bounded_and_without_redelivery_entries_expire() {
        let t0 = Instant::now();
        let mut u = Unanswered::new(2, Duration::from_secs(1), 0);
        assert!(!u.insert("a", 1, (), t0));
        assert!(!u.insert("a", 2, (), t0));
        assert!(u.insert("a", 3, (), t0));
        assert!(!u.answer("a", 1), "the oldest was evicted");
        let d = u.due(t0 + Duration::from_secs(2));
        assert_eq!((d.resend.len(), d.expired), (0, 2));
    }
}
