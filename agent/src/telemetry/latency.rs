//! Per-stage latency of one escalated frame, from capture to the hand-over of its
//! detections to the transport. Pure: wall-clock marks in, milliseconds per stage out.
//!
//! The marks come from two processes on the same box (the agent stamps the frame
//! header, the worker adds its own), so they are Unix wall-clock nanoseconds. Stages
//! are consecutive differences of the marks, so they add up to the total; a mark that
//! is missing or out of order (a clock step) gives a stage of 0, never a negative one.
//!
//! ```text
//! captured ─ capture_to_motion ─ motion ─ motion_to_publish (encode) ─ published
//!   ─ cold_start + queue_wait (broker) ─ received ─ worker_wait ─ started
//!   ─ decode, preprocess, inference, postprocess, batch_other ─ processed
//!   ─ result_publish ─ result_at
//! ```
//! `cold_start` is the part of the broker wait before the worker that took the frame
//! was ready, when the agent marked the frame as sent while no worker was ready.

use crate::clock::Stamp;
pub use crate::wire::detections::{Latency, Stages};

/// Wall-clock marks of one frame, Unix nanoseconds (0: unknown).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marks {
    pub captured: u64,
    /// Motion decided on the frame (header stamp `motion`).
    pub motion: u64,
    /// Handed to the transport by the agent (header stamp `published`).
    pub published: u64,
    /// The agent saw no ready worker when it sent the frame.
    pub cold_start: bool,
    /// The worker that took the frame became ready.
    pub worker_ready: u64,
    /// The worker received the frame from the broker.
    pub received: u64,
    /// The worker's model began on the batch holding the frame.
    pub started: u64,
    /// The batch's model run (decode to postprocess) ended.
    pub processed: u64,
    /// The detections were handed to the transport.
    pub result_at: u64,
    /// The pipeline's own timings of the frame, milliseconds.
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

impl Marks {
    /// The agent's marks, from a frame header's capture time and stamps.
    pub fn from_header(captured: u64, stamps: &[Stamp], cold_start: bool) -> Self {
        let at = |stage: &str| {
            stamps
                .iter()
                .find(|s| s.stage == stage)
                .map_or(0, |s| s.at_unix_ns)
        };
        Self {
            captured,
            motion: at("motion"),
            published: at("published"),
            cold_start,
            ..Self::default()
        }
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Latency {
    pub fn compute(m: &Marks) -> Self {
        // Each known mark, forced to be no earlier than the one before it, so every
        // stage is ≥ 0 and the stages tile [captured, result_at].
        let mut last = m.captured;
        let mut next = |t: u64| {
            if t != 0 && t > last {
                last = t;
            }
            last
        };
        let captured = m.captured;
        let motion = next(m.motion);
        let published = next(m.published);
        let received = next(m.received);
        let started = next(m.started);
        let processed = next(m.processed);
        let result_at = next(m.result_at);

        let broker = received - published;
        let cold = if m.cold_start && m.worker_ready > published {
            (m.worker_ready - published).min(broker)
        } else {
            0
        };
        // The model run: the frame's own timings, scaled down if (clock granularity)
        // they exceed the measured window; the rest belongs to the batch's other frames.
        let window = ms(processed - started);
        let own = [
            m.decode_ms,
            m.preprocess_ms,
            m.inference_ms,
            m.postprocess_ms,
        ]
        .map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 });
        let sum: f64 = own.iter().sum();
        let scale = if sum > window && sum > 0.0 {
            window / sum
        } else {
            1.0
        };
        let [decode, preprocess, inference, postprocess] = own.map(|v| v * scale);
        let stages = Stages {
            capture_to_motion: ms(motion - captured),
            motion_to_publish: ms(published - motion),
            cold_start: ms(cold),
            queue_wait: ms(broker - cold),
            worker_wait: ms(started - received),
            decode,
            preprocess,
            inference,
            postprocess,
            batch_other: (window - decode - preprocess - inference - postprocess).max(0.0),
            result_publish: ms(result_at - processed),
        };
        Self {
            cold_start: m.cold_start,
            stages,
            total_ms: ms(result_at - captured),
            result_at_unix_ns: result_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn marks() -> Marks {
        Marks {
            captured: T0,
            motion: T0 + 3 * MS,
            published: T0 + 10 * MS,
            cold_start: false,
            worker_ready: 0,
            received: T0 + 12 * MS,
            started: T0 + 13 * MS,
            processed: T0 + 33 * MS,
            result_at: T0 + 34 * MS,
            decode_ms: 2.0,
            preprocess_ms: 3.0,
            inference_ms: 12.0,
            postprocess_ms: 1.0,
        }
    }

    fn sum(l: &Latency) -> f64 {
        l.stages.iter().iter().map(|(_, v)| v).sum()
    }

    #[test]
    fn warm_frame_stages_follow_the_marks_and_add_up_to_the_total() {
        let l = Latency::compute(&marks());
        let s = &l.stages;
        assert_eq!(s.capture_to_motion, 3.0);
        assert_eq!(s.motion_to_publish, 7.0);
        assert_eq!(s.cold_start, 0.0);
        assert_eq!(s.queue_wait, 2.0);
        assert_eq!(s.worker_wait, 1.0);
        assert_eq!(
            (s.decode, s.preprocess, s.inference, s.postprocess),
            (2.0, 3.0, 12.0, 1.0)
        );
        assert_eq!(s.batch_other, 2.0);
        assert_eq!(s.result_publish, 1.0);
        assert_eq!(l.total_ms, 34.0);
        assert!((sum(&l) - l.total_ms).abs() < 1e-9);
        assert!(!l.cold_start);
        assert_eq!(l.result_at_unix_ns, T0 + 34 * MS);
    }

    #[test]
    fn a_cold_frame_splits_the_broker_wait_at_the_worker_ready_mark() {
        let mut m = marks();
        m.cold_start = true;
        m.received = T0 + 900 * MS;
        m.worker_ready = T0 + 850 * MS;
        m.started = T0 + 901 * MS;
        m.processed = T0 + 921 * MS;
        m.result_at = T0 + 922 * MS;
        let l = Latency::compute(&m);
        assert_eq!(l.stages.cold_start, 840.0);
        assert_eq!(l.stages.queue_wait, 50.0);
        assert!(l.cold_start);
        assert!((sum(&l) - l.total_ms).abs() < 1e-9);

        // Ready after the frame arrived (clock skew): the whole wait is cold start.
        m.worker_ready = T0 + 2_000 * MS;
        let l = Latency::compute(&m);
        assert_eq!((l.stages.cold_start, l.stages.queue_wait), (890.0, 0.0));
        // Not marked cold: a ready mark changes nothing.
        m.cold_start = false;
        let l = Latency::compute(&m);
        assert_eq!((l.stages.cold_start, l.stages.queue_wait), (0.0, 890.0));
    }

    #[test]
    fn missing_or_backward_marks_give_zero_stages_never_negative_ones() {
        type Edit = Box<dyn Fn(&mut Marks)>;
        let rows: Vec<(&str, Edit)> = vec![
            ("no motion stamp", Box::new(|m| m.motion = 0)),
            ("no published stamp", Box::new(|m| m.published = 0)),
            (
                "clock stepped back at the worker",
                Box::new(|m| m.received = T0 + MS),
            ),
            (
                "timings beyond the window",
                Box::new(|m| m.inference_ms = 500.0),
            ),
            ("NaN timing", Box::new(|m| m.decode_ms = f64::NAN)),
            (
                "nothing after capture",
                Box::new(|m| {
                    *m = Marks {
                        captured: T0,
                        ..Marks::default()
                    }
                }),
            ),
        ];
        for (name, f) in rows {
            let mut m = marks();
            f(&mut m);
            let l = Latency::compute(&m);
            for (stage, v) in l.stages.iter() {
                assert!(v >= 0.0 && v.is_finite(), "{name}: {stage} = {v}");
            }
            assert!(
                (sum(&l) - l.total_ms).abs() < 1e-6,
                "{name}: {} vs {}",
                sum(&l),
                l.total_ms
            );
        }
    }

    #[test]
    fn the_agent_marks_come_from_the_header_stamps() {
        let stamps = vec![
            Stamp {
                stage: "motion".into(),
                at_unix_ns: 5,
            },
            Stamp {
                stage: "encoded".into(),
                at_unix_ns: 6,
            },
            Stamp {
                stage: "published".into(),
                at_unix_ns: 7,
            },
        ];
        let m = Marks::from_header(4, &stamps, true);
        assert_eq!(
            (m.captured, m.motion, m.published, m.cold_start),
            (4, 5, 7, true)
        );
    }
}
