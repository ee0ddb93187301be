//! The per-camera state machine: connecting → streaming → (error, EOS or stall) →
//! backing off → connecting... Each run gets a fresh pipeline; a finished one is set to
//! NULL (on a thread of its own, since rtspsrc may wait on its socket) before it is
//! dropped. That wait is bounded: a pipeline that does not reach NULL within
//! [`TEARDOWN_TIMEOUT`] is abandoned (left to its thread, logged and counted), so a hung
//! camera never holds up a restart, a reload or a stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;

use gst::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::fallback::{Change, HwFallback};
use super::frames::GreyFrame;
use super::gst_pipeline::{self, lock, Attempt, Mode};
use super::{CameraState, DecodeSummary, IngestError, Shared, SourceConfig};
use crate::backoff::Backoff;
use crate::telemetry::metrics::{self, metrics};

/// A camera that streamed this long is healthy again: the next failure backs off from
/// the minimum. Shorter runs keep growing the delay, so a flapping camera is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How long a pipeline may take to reach NULL before it is abandoned.
pub(crate) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn supervise(
    cfg: SourceConfig,
    shared: Arc<Shared>,
    grey_tx: mpsc::Sender<GreyFrame>,
    stop: CancellationToken,
) -> bool {
    let span = tracing::info_span!("camera", camera = %shared.id);
    run(cfg, shared, grey_tx, stop).instrument(span).await
}

/// Runs until `stop`; true when the last pipeline reached NULL (false: abandoned).
async fn run(
    cfg: SourceConfig,
    shared: Arc<Shared>,
    grey_tx: mpsc::Sender<GreyFrame>,
    stop: CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(cfg.backoff.min.get(), cfg.backoff.max.get());
    let up = metrics()
        .camera_up
        .get_or_create(&metrics::camera(&shared.id))
        .clone();
    tracing::info!(lifecycle = "camera_starting", url = %cfg.url, "Camera starting.");
    let mut clean = true;
    let mut hw = HwFallback::default();
    loop {
        shared.beat.beat();
        shared.set_state(CameraState::Connecting);
        let attempt = Arc::new(Attempt::new());
        let (allow_hw, change) = hw.hardware_allowed(Instant::now());
        if change == Change::Retrying {
            lock(&shared.status).decoder_fallback = None;
            tracing::info!("Trying the hardware decoder again.");
        }
        let mut hardware = false;
        let built = gst_pipeline::build(
            &cfg,
            Mode::Live,
            &shared,
            &attempt,
            grey_tx.clone(),
            allow_hw,
        );
        let outcome = match built {
            Ok(built) => {
                hardware = built.hardware;
                lock(&shared.status).decoder = Some(built.decoder.clone());
                let outcome = watch(
                    &cfg,
                    &shared,
                    &attempt,
                    &built.pipeline,
                    &built.decoder,
                    &mut backoff,
                    &stop,
                )
                .await;
                up.set(0);
                attempt.cancel.cancel();
                clean = teardown(&shared.id, built.pipeline).await;
                outcome
            }
            Err(e) => Err(e),
        };
        if hardware {
            let decoded = attempt.frames.load(std::sync::atomic::Ordering::Relaxed) > 0;
            // Only a stream that reached the decoder says anything about the decoder.
            let reached = lock(&attempt.decoder).is_some();
            let failure = match &outcome {
                Err(e) if reached && !decoded => Some((e.to_string(), e.label())),
                _ => None,
            };
            let label = failure.as_ref().map(|f| f.1);
            if let Change::FellBack(why) = hw.record(failure.map(|f| f.0), Instant::now()) {
                tracing::warn!(reason = %why, "Hardware decoder failed; decoding in software.");
                lock(&shared.status).decoder_fallback = Some(why);
                metrics()
                    .decoder_fallbacks
                    .get_or_create(&vec![
                        ("camera", shared.id.to_string()),
                        ("reason", label.unwrap_or("error").to_string()),
                    ])
                    .inc();
            }
        }
        let err = match outcome {
            Ok(()) => break,
            Err(e) => e,
        };
        let reason = err.to_string();
        let delay = backoff.next_delay(reason.clone());
        {
            let mut s = lock(&shared.status);
            s.restarts = backoff.restarts;
            s.last_reason = Some(reason.clone());
            s.state = CameraState::BackingOff;
        }
        metrics()
            .camera_restarts
            .get_or_create(&vec![
                ("camera", shared.id.to_string()),
                ("reason", err.label().to_string()),
            ])
            .inc();
        tracing::warn!(
            url = %cfg.url,
            reason = %reason,
            label = err.label(),
            retry_in = ?delay,
            restarts = backoff.restarts,
            "Camera restarting."
        );
        if !back_off(&shared, delay, &stop).await {
            break;
        }
    }
    shared.set_state(CameraState::Stopped);
    up.set(0);
    if clean {
        tracing::info!(lifecycle = "camera_stopped", "Camera stopped.");
    }
    clean
}

/// Waits `delay` before the next try, beating meanwhile; false when stopped.
async fn back_off(shared: &Shared, delay: Duration, stop: &CancellationToken) -> bool {
    let until = tokio::time::Instant::now() + delay;
    loop {
        shared.beat.beat();
        let step = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        if step.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

/// Watches one pipeline run. `Ok(())` means shutdown; `Err` says why the run ended.
async fn watch(
    cfg: &SourceConfig,
    shared: &Shared,
    attempt: &Attempt,
    pipeline: &gst::Pipeline,
    decoder: &str,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> Result<(), IngestError> {
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        // The bus usually says why; give it a moment to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Err(attempt
            .take_fault()
            .unwrap_or_else(|| IngestError::Pipeline {
                camera: shared.id.to_string(),
                message: format!("could not start the pipeline: {e}"),
            }));
    }
    let stall = cfg.stall_timeout.get().max(Duration::from_millis(100));
    let mut tick = tokio::time::interval((stall / 4).min(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streaming_since: Option<Instant> = None;
    let up = metrics()
        .camera_up
        .get_or_create(&metrics::camera(&shared.id))
        .clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = attempt.notify.notified() => {}
            _ = tick.tick() => {}
        }
        shared.beat.beat();
        if let Some(fault) = attempt.take_fault() {
            return Err(fault);
        }
        let frames = attempt.frames.load(std::sync::atomic::Ordering::Relaxed);
        if frames > 0 && streaming_since.is_none() {
            streaming_since = Some(Instant::now());
            let size = *lock(&attempt.size);
            {
                let mut s = lock(&shared.status);
                s.state = CameraState::Streaming;
                s.source_size = size;
            }
            up.set(1);
            let decoder = lock(&attempt.decoder)
                .clone()
                .unwrap_or_else(|| decoder.to_string());
            lock(&shared.status).decoder = Some(decoder.clone());
            tracing::info!(lifecycle = "camera_streaming", decoder = %decoder, size = ?size, "Camera streaming.");
        }
        if let Some(since) = streaming_since {
            if since.elapsed() >= STABLE_AFTER {
                backoff.reset();
            }
            if let Some(size) = *lock(&attempt.size) {
                lock(&shared.status).source_size = Some(size);
            }
        }
        let quiet = attempt.since_last_frame();
        if quiet >= stall {
            return Err(IngestError::Stalled {
                camera: shared.id.to_string(),
                after: quiet,
            });
        }
    }
}

/// Sets the pipeline to NULL on a thread of its own and drops it there; waits at most
/// [`TEARDOWN_TIMEOUT`]. True when it reached NULL; false when it was abandoned (the
/// thread keeps trying; the pipeline's threads and socket stay until it gives up).
///
/// A plain thread, not `spawn_blocking`: the runtime waits for its blocking tasks when
/// it shuts down, and a teardown stuck on a frozen camera must not hold the process.
async fn teardown(camera: &str, pipeline: gst::Pipeline) -> bool {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("teardown-{camera}"))
        .spawn(move || {
            let _ = pipeline.set_state(gst::State::Null);
            drop(pipeline);
            // The pipeline's threads and buffers are gone: give their pages back.
            crate::memory::release_free_memory();
            let _ = done_tx.send(());
        });
    let reached = match spawned {
        Ok(_) => matches!(
            tokio::time::timeout(TEARDOWN_TIMEOUT, done_rx).await,
            Ok(Ok(()))
        ),
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the pipeline teardown thread.");
            false
        }
    };
    if !reached {
        metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("camera_teardown", camera))
            .inc();
        tracing::warn!(
            timeout = ?TEARDOWN_TIMEOUT,
            "Camera pipeline did not reach NULL in time; abandoned."
        );
    }
    reached
}

pub(crate) async fn replay(
    cfg: SourceConfig,
    sample: bool,
    grey_tx: mpsc::Sender<GreyFrame>,
    shutdown: CancellationToken,
) -> Result<DecodeSummary, IngestError> {
    let shared = Arc::new(Shared::new(&cfg));
    let span = tracing::info_span!("replay", camera = %shared.id);
    async move {
        let attempt = Arc::new(Attempt::new());
        let built = gst_pipeline::build(
            &cfg,
            Mode::Replay { sample },
            &shared,
            &attempt,
            grey_tx,
            true,
        )?;
        tracing::info!(url = %cfg.url, decoder = %built.decoder, "Replay starting.");
        let result = async {
            built.pipeline.set_state(gst::State::Playing).map_err(|e| {
                attempt
                    .take_fault()
                    .unwrap_or_else(|| IngestError::Pipeline {
                        camera: shared.id.to_string(),
                        message: format!("could not start the pipeline: {e}"),
                    })
            })?;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(IngestError::Cancelled {
                        camera: shared.id.to_string(),
                    }),
                    _ = attempt.notify.notified() => {}
                }
                match attempt.take_fault() {
                    Some(IngestError::EndOfStream { .. }) => return Ok(()),
                    Some(e) => return Err(e),
                    None => {}
                }
            }
        }
        .await;
        attempt.cancel.cancel();
        teardown(&shared.id, built.pipeline).await;
        result?;
        let summary = DecodeSummary {
            frames: shared.frames.load(std::sync::atomic::Ordering::Relaxed),
            delivered: shared.delivered.load(std::sync::atomic::Ordering::Relaxed),
            source_size: *lock(&attempt.size),
        };
        tracing::info!(
            frames = summary.frames,
            delivered = summary.delivered,
            "Replay ended."
        );
        Ok(summary)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline whose streaming thread is stuck (in a pad probe this test holds, as
    /// rtspsrc can be on a dead socket) cannot reach NULL: the teardown gives up after
    /// its bound, counts it, and the caller goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipeline_that_cannot_reach_null_is_abandoned_after_the_bound() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch("videotestsrc is-live=true ! fakesink name=sink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline.by_name("sink").unwrap();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(Some((entered_tx, release_rx)));
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some((entered, release)) = lock(&gate).take() {
                    let _ = entered.send(());
                    let _ = release.recv();
                }
                gst::PadProbeReturn::Ok
            });
        pipeline.set_state(gst::State::Playing).unwrap();
        entered_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a buffer reaches the sink");

        let name = "teardown-unit-test";
        let before = metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("camera_teardown", name))
            .get();
        let outcome = tokio::time::timeout(TEARDOWN_TIMEOUT * 4, teardown(name, pipeline)).await;
        release_tx.send(()).unwrap();
        assert_eq!(outcome, Ok(false), "the teardown was not bounded");
        let after = metrics()
            .abandoned
            .get_or_create(&metrics::abandoned("camera_teardown", name))
            .get();
        assert_eq!(after, before + 1);
    }
}
