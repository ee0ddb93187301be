//! Results: what comes back from the workers for this device's cameras. Detections are
//! counted and their latency exported; detections of event classes feed each camera's
//! tracks, and the agent publishes one incident (`events/{class}`: start, updates, end)
//! per tracked object. Tracks live here, not in the workers, so they survive workers
//! scaling to zero and back.

pub mod config;
pub mod filter;
pub mod geometry;
pub mod incidents;
pub mod stationary;
pub mod track;
pub mod zones;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::escalate::verify::VerifyRequest;
use crate::wire::detections::DetectionsIn;
pub use config::{EventsConfig, TracksConfig};
use incidents::{IncidentEvent, Incidents};

use crate::telemetry::metrics::{self, metrics};
use crate::transport::{AgentTransport, ResultMessage, Results};

/// How often forgotten tracks are looked for.
const TICK: Duration = Duration::from_millis(250);

/// Reads results until `stop`, then ends the live incidents and waits (bounded) for
/// their messages to leave. `stop` comes after the workers stopped, so the answers to
/// the last frames still count. Verification frames for stationary objects are asked
/// for on `checks` (the cameras' loops answer).
pub async fn run(
    transport: Arc<AgentTransport>,
    device: String,
    events: EventsConfig,
    scenes: std::collections::BTreeMap<String, zones::Scene>,
    checks: tokio::sync::mpsc::Sender<VerifyRequest>,
    stop: CancellationToken,
) {
    let mut results = match transport.results() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "No result stream; no incidents and no end-to-end latency.");
            return;
        }
    };
    let mut incidents =
        Incidents::new(&device, events.tracks.clone(), events.classes.clone()).with_scenes(scenes);
    ask(&checks, incidents.baselines());
    serve(
        &mut results,
        &mut incidents,
        &stop,
        DRAIN,
        |out| publish(&transport, out),
        |due| ask(&checks, due),
    )
    .await;
    let ended = incidents.finish(SystemTime::now());
    if !ended.is_empty() {
        info!(
            incidents = ended.len(),
            "Agent stopping: live incidents ended."
        );
        publish(&transport, ended);
        if !transport.flush(Duration::from_secs(3)).await {
            warn!("Incident end messages not all confirmed by the broker before stop.");
        }
    }
}

/// How long the results still queued at stop may take to be tracked (each takes
/// microseconds; the bound is for a queue that keeps filling).
const DRAIN: Duration = Duration::from_secs(1);

/// Tracks results until the stream ends or `stop`; then the results already queued are
/// tracked too (their frames were answered), for up to `drain_for`, and any left after
/// that are counted as dropped.
async fn serve(
    results: &mut Results,
    incidents: &mut Incidents,
    stop: &CancellationToken,
    drain_for: Duration,
    mut out: impl FnMut(Vec<IncidentEvent>),
    mut checks: impl FnMut(Vec<VerifyRequest>),
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Stop first: what is queued then is drained below, under its deadline.
            biased;
            _ = stop.cancelled() => break,
            r = results.next() => match r {
                Some(r) => out(handle(incidents, r)),
                None => return,
            },
            _ = tick.tick() => {
                let now = SystemTime::now();
                out(incidents.tick(now));
                checks(incidents.checks(now));
            }
        }
    }
    let until = tokio::time::Instant::now() + drain_for;
    let (mut drained, mut dropped) = (0u64, 0u64);
    while let Some(r) = results.try_next() {
        if tokio::time::Instant::now() < until {
            out(handle(incidents, r));
            drained += 1;
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(
                "results",
                metrics::DropReason::Stopped,
            ))
            .inc_by(dropped);
        warn!(drained, dropped, within = ?drain_for, "Agent stopping: results still queued were not tracked in time.");
    } else if drained > 0 {
        info!(
            drained,
            "Agent stopping: results still queued were tracked."
        );
    }
}

/// One result: detections are measured and tracked; incident events (this agent's
/// own, read back) are ignored.
fn handle(incidents: &mut Incidents, r: ResultMessage) -> Vec<IncidentEvent> {
    if r.kind != "detections" || !r.first_answer {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
        return rejected(&r, "not JSON");
    };
    if let Some(captured) = v["captured_ms"].as_u64() {
        let now = crate::clock::unix_ns_now() / 1_000_000;
        metrics()
            .stage_latency
            .get_or_create(&metrics::stage("end_to_end"))
            .observe(now.saturating_sub(captured) as f64 / 1e3);
    }
    observe_stages(&v["latency"]);
    let d: DetectionsIn = match serde_json::from_value(v) {
        Ok(d) => d,
        Err(e) => return rejected(&r, &e.to_string()),
    };
    info!(lifecycle = "detections", camera = %r.camera, seq = d.seq, detections = d.detections.items.len(), "Detections received.");
    incidents.detections(&r.camera, &d, SystemTime::now())
}

/// Hands verification requests to the cameras. Full policy: a request is dropped and
/// counted; its tracks are asked for again a check interval later.
fn ask(checks: &tokio::sync::mpsc::Sender<VerifyRequest>, due: Vec<VerifyRequest>) {
    for req in due {
        let camera = req.camera.clone();
        if checks.try_send(req).is_err() {
            metrics()
                .dropped
                .get_or_create(&metrics::drop_reason(
                    &camera,
                    metrics::DropReason::VerifyQueueFull,
                ))
                .inc();
            if metrics::should_log(&format!("verify-full-{camera}"), Duration::from_secs(60)) {
                warn!(camera = %camera, "Verification request not handed to the camera (queue full or camera gone); asked again later.");
            }
        }
    }
}

fn rejected(r: &ResultMessage, why: &str) -> Vec<IncidentEvent> {
    metrics()
        .rejected
        .get_or_create(&metrics::reason("results", "bad_detections"))
        .inc();
    if metrics::should_log("bad-detections", Duration::from_secs(60)) {
        warn!(camera = %r.camera, seq = ?r.seq, error = %why, "Detections message not understood; not tracked.");
    }
    Vec::new()
}

fn publish(transport: &AgentTransport, events: Vec<IncidentEvent>) {
    for e in events {
        let state = serde_json::to_value(e.state).unwrap_or_default();
        let state = state.as_str().unwrap_or("?");
        let body = match serde_json::to_vec(&e) {
            Ok(b) => Bytes::from(b),
            Err(err) => {
                warn!(error = %err, "Incident event not serialisable.");
                continue;
            }
        };
        match transport.publish_result(&e.camera, &format!("events/{}", e.class), body) {
            Ok(()) => {
                metrics()
                    .incidents
                    .get_or_create(&vec![
                        ("camera", e.camera.clone()),
                        ("class", e.class.clone()),
                        ("state", state.to_string()),
                    ])
                    .inc();
                metrics()
                    .published
                    .get_or_create(&metrics::kind("events"))
                    .inc();
                info!(lifecycle = "incident", camera = %e.camera, class = %e.class, incident = %e.incident, state, frames = e.frames, "Incident event published.");
            }
            Err(err) => {
                warn!(camera = %e.camera, class = %e.class, error = %err, "Incident event not published.")
            }
        }
    }
}

/// Exports a detections message's per-stage latency (the worker's `latency` object)
/// as histograms, plus `result_delivery`: its hand-over at the worker to its arrival
/// here. Cold-start time is observed only for frames that waited for a worker.
fn observe_stages(latency: &serde_json::Value) {
    let Ok(l) = serde_json::from_value::<crate::telemetry::latency::Latency>(latency.clone())
    else {
        return;
    };
    let observe = |stage: &str, ms: f64| {
        metrics()
            .stage_latency
            .get_or_create(&metrics::stage(stage))
            .observe(ms / 1e3);
    };
    for (stage, ms) in l.stages.iter() {
        if stage != "cold_start" || l.cold_start {
            observe(stage, ms);
        }
    }
    let now = crate::clock::unix_ns_now();
    observe(
        "result_delivery",
        now.saturating_sub(l.result_at_unix_ns) as f64 / 1e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Inbound;

    fn queued(n: u64) -> (tokio::sync::mpsc::Sender<ResultMessage>, Results) {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for seq in 0..n {
            tx.try_send(ResultMessage {
                device: "dev".into(),
                camera: "gate".into(),
                kind: "detections".into(),
                payload: Bytes::from(format!("{{\"seq\":{seq}}}")),
                seq: Some(seq),
                first_answer: true,
            })
            .unwrap();
        }
        (tx, Inbound { rx })
    }

    fn incidents() -> Incidents {
        let e = EventsConfig::default();
        Incidents::new("dev", e.tracks, e.classes)
    }

    fn stopped_drops() -> u64 {
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason(
                "results",
                metrics::DropReason::Stopped,
            ))
            .get()
    }

    #[tokio::test]
    async fn results_still_queued_at_stop_are_tracked_before_the_loop_ends() {
        let (_tx, mut results) = queued(40);
        let stop = CancellationToken::new();
        stop.cancel();
        serve(&mut results, &mut incidents(), &stop, DRAIN, |_| {}, |_| {}).await;
        assert!(results.try_next().is_none(), "a queued result was left");
    }

    #[tokio::test]
    async fn results_left_after_the_drain_deadline_are_counted_as_dropped() {
        let before = stopped_drops();
        let (_tx, mut results) = queued(7);
        let stop = CancellationToken::new();
        stop.cancel();
        serve(
            &mut results,
            &mut incidents(),
            &stop,
            Duration::ZERO,
            |_| {},
            |_| {},
        )
        .await;
        assert!(results.try_next().is_none());
        assert_eq!(stopped_drops() - before, 7);
    }
}
