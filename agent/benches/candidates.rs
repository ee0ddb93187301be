//! Benchmark (not a test): what starting a worker at the first motion candidate costs
//! in false starts, on the real fixed-camera clips of `tests/data/realcam`.
//!
//! Each clip is decoded once through the agent's own ingest pipeline (`ingest::replay`,
//! sampled to the analysis rate), then its grey frames are looped for one hour of
//! stream time through the agent's detector, event tracker, candidate accounting and
//! scaling decision (`Decider`, default cooldown), on a simulated clock: the figures
//! are those a camera showing the clip on repeat for an hour would give, without an
//! hour of wall time. Baseline in the same run: the same loop with pre-warm off.
//!
//! `cargo bench -p edge-agent --bench candidates` (env: EDGE_AGENT_REALCAM_DEV, the
//! clips' folder, default the repository's `tests/data/realcam`; BENCH_FPS, default `5,10,15`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use edge_agent::camera::CameraConfig;
use edge_agent::ingest::{self, GreyFrame};
use edge_agent::motion::{Detector, EventTracker, MotionConfig, MotionTransition};
use edge_agent::scale::prewarm::CandidateStarts;
use edge_agent::scale::{Decider, ScalingConfig};

const HOUR: Duration = Duration::from_secs(3600);

fn main() {
    let dir = std::env::var_os("EDGE_AGENT_REALCAM_DEV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/realcam")
        });
    let fps: Vec<u32> = std::env::var("BENCH_FPS")
        .unwrap_or_else(|_| "5,10,15".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    gstreamer::init().expect("GStreamer initialises");
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the clips folder {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let mp4 = p.join(format!("{name}.mp4"));
            mp4.is_file().then_some(mp4)
        })
        .collect();
    clips.sort();
    assert!(
        !clips.is_empty(),
        "no NAME/NAME.mp4 under {}",
        dir.display()
    );
    let scaling = ScalingConfig::default();
    println!(
        "Each clip looped for one hour of stream time through the agent's detector, event tracker and scaling decision (motion and scaling at their defaults: start_frames {}, cooldown {:?}); per hour:",
        MotionConfig::default().start_frames.get(),
        scaling.cooldown_period.get()
    );
    println!();
    println!("| clip | analysis fps | clip s | candidates | events | candidates dropped | worker starts, pre-warm off | worker starts, pre-warm on | of which false starts | worker time off / on (min) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut totals = [0u64; 2];
    for clip in &clips {
        for &f in &fps {
            let frames = decode(clip, f);
            let off = simulate(&frames, f, &scaling, false);
            let on = simulate(&frames, f, &scaling, true);
            assert_eq!(
                (off.candidates, off.events),
                (on.candidates, on.events),
                "motion does not depend on the scaler"
            );
            totals[0] += on.false_starts;
            totals[1] += on.starts;
            println!(
                "| {} | {f} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} |",
                clip.file_stem().and_then(|s| s.to_str()).unwrap_or("?"),
                frames.len() as f64 / f as f64,
                on.candidates,
                on.events,
                on.dropped,
                off.starts,
                on.starts,
                on.false_starts,
                off.worker_time.as_secs_f64() / 60.0,
                on.worker_time.as_secs_f64() / 60.0,
            );
        }
    }
    println!();
    println!(
        "A false start is a worker started for a candidate that never became an event (it idles through the cooldown). Over every row: {} of {} pre-warm starts were false.",
        totals[0], totals[1]
    );
}

/// The clip's grey analysis frames (width, height, luma), through the agent's ingest
/// at `fps`.
fn decode(clip: &Path, fps: u32) -> Vec<(u32, u32, Vec<u8>)> {
    let cfg: CameraConfig = toml::from_str(&format!(
        "id = \"clip\"\nurl = \"file://{}\"\nanalysis_fps = {fps}\n",
        clip.display()
    ))
    .expect("clip camera config");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<GreyFrame>(16);
        let collect = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(f) = rx.recv().await {
                v.push((f.width, f.height, f.data));
            }
            v
        });
        ingest::replay(cfg, true, tx, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("replaying {}: {e}", clip.display()));
        let v = collect.await.expect("collector");
        assert!(!v.is_empty(), "{}: no frames decoded", clip.display());
        v
    })
}

#[derive(Default)]
struct Outcome {
    candidates: u64,
    events: u64,
    dropped: u64,
    starts: u64,
    false_starts: u64,
    worker_time: Duration,
}

fn simulate(
    frames: &[(u32, u32, Vec<u8>)],
    fps: u32,
    scaling: &ScalingConfig,
    prewarm: bool,
) -> Outcome {
    let motion = MotionConfig::default();
    let (width, height) = (frames[0].0, frames[0].1);
    let mut det = Detector::new(&motion, width, height, fps);
    let mut tracker = EventTracker::new(&motion, "clip");
    let mut starts = CandidateStarts::default();
    let mut decider = Decider::new(scaling);
    let step = Duration::from_secs(1) / fps;
    let t0 = Instant::now();
    let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Outcome::default();
    let mut running = 0u32;
    let mut at = Duration::ZERO;
    let mut i = 0usize;
    while at < HOUR {
        let m = det
            .process(&frames[i % frames.len()].2)
            .expect("frame size")
            .clone();
        let was_pending = tracker.pending() > 0;
        let t = tracker.update(wall0 + at, &m);
        let pending = tracker.pending() > 0;
        let mut candidate = false;
        if !was_pending && pending {
            out.candidates += 1;
            candidate = prewarm;
            if prewarm && starts.seen("clip", running) {
                out.starts += 1;
            }
        } else if was_pending && !pending && tracker.current().is_none() {
            out.dropped += 1;
            if starts.dropped("clip") {
                out.false_starts += 1;
            }
        }
        if let Some(MotionTransition::Started(_)) = &t {
            out.events += 1;
            starts.confirmed("clip");
        }
        // While an event shows motion its frames are escalated: one waits at a time.
        let backlog = u64::from(tracker.current().is_some() && m.has_motion());
        let next = decider.decide(t0 + at, backlog, running, candidate);
        if running == 0 && next > 0 && !candidate {
            out.starts += 1;
        }
        running = next;
        if running > 0 {
            out.worker_time += step;
        }
        at += step;
        i += 1;
    }
    out
}
