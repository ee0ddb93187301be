//! The one place every metric is defined. Names are prefixed `edge_agent_`.
//! Stages count through [`metrics()`]; the Prometheus endpoint encodes the registry.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

/// Latency buckets in seconds, from 1 ms to 30 s (cold starts).
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    /// Frames received from each camera (before sampling).
    pub frames: Family<Labels, Counter>,
    /// Frames dropped anywhere, by camera or queue and reason.
    pub dropped: Family<Labels, Counter>,
    /// Camera pipeline restarts by reason.
    pub camera_restarts: Family<Labels, Counter>,
    /// Clip files that could not be opened, written or finished, by camera.
    pub clip_errors: Family<Labels, Counter>,
    /// Clip and snapshot files removed by the storage budget, by kind and reason
    /// (`max_bytes`, `min_free`, `max_age`).
    pub storage_removed: Family<Labels, Counter>,
    /// Bytes of encoded stream each camera's pre-roll ring holds (0 with clips off).
    pub preroll_bytes: Family<Labels, Gauge>,
    /// Cameras switched from the hardware decoder to software, by camera and reason.
    pub decoder_fallbacks: Family<Labels, Counter>,
    /// 1 while a camera is streaming.
    pub camera_up: Family<Labels, Gauge>,
    pub motion_events: Family<Labels, Counter>,
    /// Frames escalated to the detector.
    pub escalations: Family<Labels, Counter>,
    /// Verification frames sent without motion to look again for stationary objects
    /// (also counted in `escalations`), by camera.
    pub verifications: Family<Labels, Counter>,
    /// Tracks by camera and state: stationary (standing still, verified), background
    /// (known objects that start nothing), held_back (seen often enough but below
    /// `threshold` or outside their required zones).
    pub tracks: Family<Labels, Gauge>,
    /// Messages published by kind (frames, detections, events, motion, status).
    pub published: Family<Labels, Counter>,
    /// Incident messages by camera, class and state (start, update, end).
    pub incidents: Family<Labels, Counter>,
    /// Detections of event classes not tracked, by camera, class and the object filter
    /// that removed them (min_area, max_area, min_ratio, max_ratio, min_score, mask).
    pub filtered: Family<Labels, Counter>,
    /// Frames a worker handed back for redelivery (results not handed over or not
    /// confirmed), by transport kind.
    pub requeued: Family<Labels, Counter>,
    /// Messages rejected by consumers, by reason (malformed, truncated, oversized...).
    pub rejected: Family<Labels, Counter>,
    /// Frames the workers ran inference on.
    pub inferences: Family<Labels, Counter>,
    /// Per-stage latency (stage = capture_to_motion, motion_to_publish, queue_wait,
    /// inference, result_publish, end_to_end, cold_start).
    pub stage_latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Running workers.
    pub workers: Gauge,
    /// Frames sent and not yet answered (the scaler's backlog for MQTT/embedded).
    pub backlog: Gauge,
    /// Execution provider in use (label provider) = 1.
    pub provider: Family<Labels, Gauge>,
    /// Ready workers by the execution provider their session runs on.
    pub worker_providers: Family<Labels, Gauge>,
    /// Resident memory of each worker in bytes.
    pub worker_memory: Family<Labels, Gauge>,
    /// GPU memory of each worker in bytes (NVIDIA only; absent without a GPU).
    pub worker_gpu_memory: Family<Labels, Gauge>,
    /// GPU utilisation in percent, by GPU (absent without a GPU).
    pub gpu_utilization: Family<Labels, Gauge<f64, AtomicU64>>,
    /// GPU memory in use in bytes, by GPU (NVIDIA only; absent without a GPU).
    pub gpu_memory: Family<Labels, Gauge>,
    /// Frames sent to the remote queue because local workers were saturated or absent.
    pub offloaded: Family<Labels, Counter>,
    /// What a stop or restart gave up waiting for, by kind and name: a camera pipeline
    /// that did not reach NULL in time (`camera_teardown`), workers still running at
    /// the deadline (`workers`), a transport that did not flush (`transport`).
    pub abandoned: Family<Labels, Counter>,
    /// 1 while a camera decodes key frames only (idle decode, no motion).
    pub camera_idle: Family<Labels, Gauge>,
    /// Workers started for a motion candidate, before the event was confirmed.
    pub prewarm_starts: Family<Labels, Counter>,
    /// Of those, the ones whose motion stopped before it became an event.
    pub false_starts: Family<Labels, Counter>,
    /// Frames that were to go as crops around motion (`regions = "motion"`) and went
    /// whole instead, by camera and reason (`wire::regions::Fallback`).
    pub crops_whole: Family<Labels, Counter>,
    pub process_memory: Gauge,
    /// Process CPU use in percent of one core.
    pub process_cpu: Gauge,
    /// 1 while the uplink to the central broker is connected (absent without one).
    pub uplink_connected: Gauge,
    /// Events in the uplink's disk spool, not yet confirmed by the central broker.
    pub uplink_spool_messages: Gauge,
    /// Their bytes (records, not the file's size).
    pub uplink_spool_bytes: Gauge,
    /// Age of the oldest spooled event in seconds (0 when empty).
    pub uplink_spool_oldest_seconds: Gauge<f64, AtomicU64>,
    /// Events the central broker confirmed (they left the spool).
    pub uplink_sent: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("edge_agent");
        let m = Metrics {
            frames: Family::default(),
            dropped: Family::default(),
            camera_restarts: Family::default(),
            clip_errors: Family::default(),
            storage_removed: Family::default(),
            preroll_bytes: Family::default(),
            camera_up: Family::default(),
            decoder_fallbacks: Family::default(),
            motion_events: Family::default(),
            escalations: Family::default(),
            verifications: Family::default(),
            tracks: Family::default(),
            published: Family::default(),
            incidents: Family::default(),
            filtered: Family::default(),
            rejected: Family::default(),
            requeued: Family::default(),
            inferences: Family::default(),
            stage_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            workers: Gauge::default(),
            backlog: Gauge::default(),
            provider: Family::default(),
            worker_providers: Family::default(),
            worker_memory: Family::default(),
            worker_gpu_memory: Family::default(),
            gpu_utilization: Family::default(),
            gpu_memory: Family::default(),
            offloaded: Family::default(),
            abandoned: Family::default(),
            camera_idle: Family::default(),
            prewarm_starts: Family::default(),
            false_starts: Family::default(),
            crops_whole: Family::default(),
            process_memory: Gauge::default(),
            process_cpu: Gauge::default(),
            uplink_connected: Gauge::default(),
            uplink_spool_messages: Gauge::default(),
            uplink_spool_bytes: Gauge::default(),
            uplink_spool_oldest_seconds: Gauge::default(),
            uplink_sent: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("frames", "Frames received per camera", m.frames.clone());
        registry.register(
            "dropped",
            "Frames or messages dropped, by place and reason",
            m.dropped.clone(),
        );
        registry.register(
            "filtered",
            "Detections removed by an object filter, by camera, class and reason",
            m.filtered.clone(),
        );
        registry.register(
            "clip_errors",
            "Clip files not opened, written or finished, by camera",
            m.clip_errors.clone(),
        );
        registry.register(
            "preroll_bytes",
            "Bytes of encoded stream held in each camera's pre-roll ring for clips",
            m.preroll_bytes.clone(),
        );
        registry.register(
            "storage_removed",
            "Clip and snapshot files removed by the storage budget, by kind and reason",
            m.storage_removed.clone(),
        );

        registry.register(
            "camera_restarts",
            "Camera pipeline restarts by reason",
            m.camera_restarts.clone(),
        );
        registry.register(
            "camera_up",
            "1 while the camera streams",
            m.camera_up.clone(),
        );
        registry.register(
            "decoder_fallbacks",
            "Cameras switched from the hardware decoder to software decode, by camera and reason",
            m.decoder_fallbacks.clone(),
        );
        registry.register(
            "motion_events",
            "Motion events started",
            m.motion_events.clone(),
        );
        registry.register(
            "escalations",
            "Frames escalated to the detector",
            m.escalations.clone(),
        );
        registry.register(
            "uplink_connected",
            "1 while the uplink to the central broker is connected",
            m.uplink_connected.clone(),
        );
        registry.register(
            "uplink_spool_messages",
            "Events spooled for the uplink, not yet confirmed",
            m.uplink_spool_messages.clone(),
        );
        registry.register(
            "uplink_spool_bytes",
            "Bytes of the events spooled for the uplink",
            m.uplink_spool_bytes.clone(),
        );
        registry.register(
            "uplink_spool_oldest_seconds",
            "Age of the oldest spooled event (0 when empty)",
            m.uplink_spool_oldest_seconds.clone(),
        );
        registry.register(
            "uplink_sent",
            "Events the central broker confirmed",
            m.uplink_sent.clone(),
        );
        registry.register(
            "verifications",
            "Verification frames sent without motion to look again for stationary objects",
            m.verifications.clone(),
        );
        registry.register(
            "tracks",
            "Tracks by camera and state (stationary, background, held_back)",
            m.tracks.clone(),
        );
        registry.register(
            "published",
            "Messages published, by kind",
            m.published.clone(),
        );
        registry.register(
            "incidents",
            "Incident events published, by camera, class and state",
            m.incidents.clone(),
        );
        registry.register(
            "rejected",
            "Messages rejected by consumers, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "requeued",
            "Frames a worker handed back for redelivery, by transport kind",
            m.requeued.clone(),
        );
        registry.register(
            "inferences",
            "Frames run through the detector",
            m.inferences.clone(),
        );
        registry.register(
            "stage_latency_seconds",
            "Per-stage latency",
            m.stage_latency.clone(),
        );
        registry.register("workers", "Running inference workers", m.workers.clone());
        registry.register(
            "backlog",
            "Frames sent and not yet answered",
            m.backlog.clone(),
        );
        registry.register("provider", "Execution provider in use", m.provider.clone());
        registry.register(
            "worker_providers",
            "Ready inference workers by execution provider",
            m.worker_providers.clone(),
        );
        registry.register(
            "worker_memory_bytes",
            "Resident memory per worker",
            m.worker_memory.clone(),
        );
        registry.register(
            "worker_gpu_memory_bytes",
            "GPU memory per worker (NVIDIA)",
            m.worker_gpu_memory.clone(),
        );
        registry.register(
            "gpu_utilization_percent",
            "GPU utilisation by GPU",
            m.gpu_utilization.clone(),
        );
        registry.register(
            "gpu_memory_used_bytes",
            "GPU memory in use by GPU (NVIDIA)",
            m.gpu_memory.clone(),
        );
        registry.register(
            "offloaded",
            "Frames offloaded to the remote queue",
            m.offloaded.clone(),
        );
        registry.register(
            "abandoned",
            "What a stop or restart gave up waiting for, by kind and name",
            m.abandoned.clone(),
        );
        registry.register(
            "camera_idle",
            "1 while the camera decodes key frames only (idle decode)",
            m.camera_idle.clone(),
        );
        registry.register(
            "prewarm_starts",
            "Workers started for a motion candidate, before the event was confirmed",
            m.prewarm_starts.clone(),
        );
        registry.register(
            "false_starts",
            "Workers started for a motion candidate that never became an event",
            m.false_starts.clone(),
        );
        registry.register(
            "crops_whole",
            "Frames sent whole instead of as crops around motion, by camera and reason",
            m.crops_whole.clone(),
        );
        registry.register(
            "process_memory_bytes",
            "Resident memory of the agent",
            m.process_memory.clone(),
        );
        registry.register(
            "process_cpu_percent",
            "CPU use of the agent, percent of one core",
            m.process_cpu.clone(),
        );
        Metrics { registry, ..m }
    }

    /// OpenMetrics exposition of every metric (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }

    /// Prometheus text format 0.0.4 of every metric, for scrapers that do not ask for
    /// OpenMetrics.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

/// Rewrites OpenMetrics as the Prometheus text format: a counter's `HELP` and `TYPE`
/// name the `_total` sample, an info family becomes a gauge named `_info`, and
/// `# UNIT` and `# EOF`, which the text format does not have, go.
fn openmetrics_to_text(open: &str) -> String {
    let mut suffix = std::collections::HashMap::new();
    for rest in open.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        match rest.split_once(' ') {
            Some((name, "counter")) if !name.ends_with("_total") => suffix.insert(name, "_total"),
            Some((name, "info")) => suffix.insert(name, "_info"),
            _ => None,
        };
    }
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| line.strip_prefix(tag).map(|rest| (tag, rest)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if tag == "# TYPE " && tail == "info" {
                    "gauge"
                } else {
                    tail
                };
                let sfx = suffix.get(name).copied().unwrap_or("");
                out.push_str(&format!("{tag}{name}{sfx} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Label helpers.
pub fn camera(id: &str) -> Labels {
    vec![("camera", id.to_string())]
}
fn reason(place: &str, why: &str) -> Labels {
    vec![("place", place.to_string()), ("reason", why.to_string())]
}
pub fn filtered(camera: &str, class: &str, why: &str) -> Labels {
    vec![
        ("camera", camera.to_string()),
        ("class", class.to_string()),
        ("reason", why.to_string()),
    ]
}
/// The labels of the `dropped` counter: where, and which [`DropReason`].
pub fn drop_reason(place: &str, why: DropReason) -> Labels {
    reason(place, why.as_str())
}
pub fn reject_reason(place: &str, why: RejectReason) -> Labels {
    reason(place, why.as_str())
}
/// The labels of `crops_whole`: the camera and why its frame went whole.
pub fn crops_whole(camera: &str, why: &str) -> Labels {
    vec![("camera", camera.to_string()), ("reason", why.to_string())]
}

/// Why a consumer rejected a message: every reason the `rejected` counter carries, in
/// one place, as [`DropReason`] is for drops. [`RejectReason::as_str`] is the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    // A frame message, as the transport decodes it (`wire::frame::MessageError`).
    /// It does not start with the frame magic.
    BadMagic,
    /// A frame format version this build does not read.
    UnsupportedVersion,
    /// Shorter than its header says.
    Truncated,
    /// Its header is not a valid frame header.
    HeaderInvalid,
    /// Over the size limit.
    Oversized,
    /// Its image is not a JPEG (or the worker could not decode it).
    NotJpeg,
    /// Bytes after the image.
    TrailingBytes,
    // The worker.
    /// Inference ran but the snapshot could not be made.
    Snapshot,
    // Results.
    /// A detections message that is not JSON or not in the detections format.
    BadDetections,
}

impl RejectReason {
    /// The `reason` label, as dashboards and tests know it.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadMagic => "bad_magic",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::Truncated => "truncated",
            RejectReason::HeaderInvalid => "header_invalid",
            RejectReason::Oversized => "oversized",
            RejectReason::NotJpeg => "not_jpeg",
            RejectReason::TrailingBytes => "trailing_bytes",
            RejectReason::Snapshot => "snapshot",
            RejectReason::BadDetections => "bad_detections",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why something was dropped: every reason the `dropped` counter carries, in one
/// place, so a new one is a new variant rather than a string that dashboards and
/// tests do not know. [`DropReason::as_str`] is the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    // A camera's frames, before and at escalation.
    /// The camera's grey frame queue to the motion loop was full.
    MotionQueueFull,
    /// The motion detector rejected the frame.
    MotionError,
    /// The colour frame had already been sent (analysis lagging behind the ring).
    ColourFrameRepeat,
    /// The colour copy had left the ring.
    ColourFrameGone,
    /// The escalation queue was full.
    EscalationQueueFull,
    /// The escalation queue was closed: the motion end at stop was lost.
    MotionTransitionClosed,
    // The broker link.
    /// A frame message over the size limit.
    FrameOversized,
    /// A frame sent but never answered, evicted to make room.
    UnansweredEvicted,
    /// A frame sent but never answered, given up after its deadline.
    UnansweredExpired,
    /// The outbox dropped a frame to make room.
    FrameOverflow,
    /// The outbox dropped an event to make room.
    EventOverflow,
    /// The results queue was full.
    ResultsOverflow,
    /// A worker's inbox was full.
    WorkerInboxFull,
    // Results.
    /// Results still queued when the agent stopped.
    Stopped,
    /// A camera's tracker was at its track limit.
    TracksFull,
    /// A verification request for stationary objects found the cameras' queue full.
    VerifyQueueFull,
    // The worker pool: a worker lost.
    /// A worker crashed.
    Crash,
    /// A worker failed to start.
    StartFailure,
    /// A worker was not ready in time.
    ReadyTimeout,
    // The metrics endpoint: a connection closed unserved.
    /// The client was at its own connection limit.
    ClientLimit,
    /// Every connection slot was taken.
    ConnectionLimit,
    /// The request head did not arrive in time.
    HeadTimeout,
    /// The connection outlived its limit.
    ConnectionTimeout,
    // Evidence clips.
    /// The pre-roll ring of a camera's encoded stream was at its byte cap: whole GOPs left.
    PrerollCap,
    /// A clip writer's queue was full: frames skipped to the next key frame.
    ClipQueueFull,
    /// A finished clip's report could not be handed over.
    ClipReport,
    // The uplink's spool.
    /// The oldest event was evicted to make room (`uplink.spool.max_bytes`).
    SpoolEvicted,
    /// An event older than `uplink.spool.max_age` was evicted unsent.
    SpoolExpired,
    /// An event could not be committed to the spool (disk full, larger than the spool).
    SpoolFailed,
    // Snapshots kept for the page.
    /// A snapshot left the agent's memory to keep within `events.snapshot_memory`.
    SnapshotEvicted,
}

impl DropReason {
    /// The `reason` label, as dashboards and tests know it.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MotionQueueFull => "motion_queue_full",
            DropReason::MotionError => "motion_error",
            DropReason::ColourFrameRepeat => "colour_frame_repeat",
            DropReason::ColourFrameGone => "colour_frame_gone",
            DropReason::EscalationQueueFull => "escalation_queue_full",
            DropReason::MotionTransitionClosed => "motion_transition_closed",
            DropReason::FrameOversized => "frame_oversized",
            DropReason::UnansweredEvicted => "unanswered_evicted",
            DropReason::UnansweredExpired => "unanswered_expired",
            DropReason::FrameOverflow => "frame_overflow",
            DropReason::EventOverflow => "event_overflow",
            DropReason::ResultsOverflow => "results_overflow",
            DropReason::WorkerInboxFull => "worker_inbox_full",
            DropReason::Stopped => "stopped",
            DropReason::TracksFull => "tracks_full",
            DropReason::VerifyQueueFull => "verify_queue_full",
            DropReason::Crash => "crash",
            DropReason::StartFailure => "start_failure",
            DropReason::ReadyTimeout => "ready_timeout",
            DropReason::ClientLimit => "client_limit",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::HeadTimeout => "head_timeout",
            DropReason::ConnectionTimeout => "connection_timeout",
            DropReason::PrerollCap => "preroll_cap",
            DropReason::ClipQueueFull => "clip_queue_full",
            DropReason::ClipReport => "clip_report",
            DropReason::SpoolEvicted => "spool_evicted",
            DropReason::SpoolExpired => "spool_expired",
            DropReason::SpoolFailed => "spool_failed",
            DropReason::SnapshotEvicted => "snapshot_evicted",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
pub fn kind(k: &str) -> Labels {
    vec![("kind", k.to_string())]
}
pub fn stage(s: &str) -> Labels {
    vec![("stage", s.to_string())]
}
pub fn abandoned(kind: &str, name: &str) -> Labels {
    vec![("kind", kind.to_string()), ("name", name.to_string())]
}

/// Logs at most once per `every` for a given key, so a counted drop or error is
/// visible in the log without flooding it. Returns true when the caller should log.
pub fn should_log(key: &str, every: std::time::Duration) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut map = crate::sync::lock(LAST.get_or_init(Default::default));
    let now = Instant::now();
    match map.get(key) {
        Some(t) if now.duration_since(*t) < every => false,
        _ => {
            map.insert(key.to_string(), now);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition_with_the_prefix() {
        metrics()
            .frames
            .get_or_create(&camera("unit-cam"))
            .inc_by(3);
        // A stage of its own: the registry is shared by every test in this process.
        metrics()
            .stage_latency
            .get_or_create(&stage("unit-stage"))
            .observe(0.05);
        let text = metrics().encode();
        assert!(
            text.contains("edge_agent_frames_total{camera=\"unit-cam\"} 3\n"),
            "{text}"
        );
        // Buckets are cumulative: 0.05 s falls in le=0.05 and every bucket above.
        for (le, n) in [("0.02", 0), ("0.05", 1), ("0.1", 1), ("+Inf", 1)] {
            let line = format!(
                "edge_agent_stage_latency_seconds_bucket{{le=\"{le}\",stage=\"unit-stage\"}} {n}\n"
            );
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains("edge_agent_stage_latency_seconds_count{stage=\"unit-stage\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_has_no_openmetrics_lines() {
        let open = "# HELP a_frames Frames.\n# TYPE a_frames counter\n# UNIT a_frames frames\n\
                    a_frames_total{camera=\"x\"} 3\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
                    # HELP a_build Build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(open),
            "# HELP a_frames_total Frames.\n# TYPE a_frames_total counter\n\
             a_frames_total{camera=\"x\"} 3\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n"
        );
    }
}
