//! Results: what comes back from the workers for this device's cameras. Detections are
//! counted and their latency exported; detections of event classes feed each camera's
//! tracks, and the agent publishes one incident (`events/{class}`: start, updates, end)
//! per tracked object. Tracks live here, not in the workers, so they survive workers
//! scaling to zero and back.

pub mod config;
pub mod incidents;
pub mod track;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::wire::detections::DetectionsIn;
pub use config::{EventsConfig, TracksConfig};
use incidents::{IncidentEvent, Incidents};

use crate::telemetry::metrics::{self, metrics};
use crate::transport::{AgentTransport, ResultMessage};

/// How often forgotten tracks are looked for.
const TICK: Duration = Duration::from_millis(250);

/// Reads results until `stop`, then ends the live incidents and waits (bounded) for
/// their messages to leave. `stop` comes after the workers stopped, so the answers to
/// the last frames still count.
pub async fn run(
    transport: Arc<AgentTransport>,
    device: String,
    events: EventsConfig,
    stop: CancellationToken,
) {
    let mut results = match transport.results() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "No result stream; no incidents and no end-to-end latency.");
            return;
        }
    };
    let mut incidents = Incidents::new(&device, events.tracks.clone(), events.classes.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = results.next() => match r {
                Some(r) => {
                    let out = handle(&mut incidents, r);
                    publish(&transport, out);
                }
                None => break,
            },
            _ = tick.tick() => publish(&transport, incidents.tick(SystemTime::now())),
            _ = stop.cancelled() => break,
        }
    }
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
