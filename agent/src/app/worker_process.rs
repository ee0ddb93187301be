//! `edge-agent worker`: one inference worker. Loads the model, connects as a consumer,
//! prints the ready line the scaler waits for, then runs frames through the pipeline;
//! a frame is acked only after the broker confirmed its snapshot (if any) and detections. SIGTERM: stop taking frames, finish those held, exit 0; a worker that
//! cannot finish them within `scaling.grace_period` exits anyway (non-zero), before the
//! pool's SIGKILL, and the frames it held are delivered again.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::scaffold::Stop;
use crate::config::{Config, Loaded};
use crate::infer::broker::{work_item, TransportSink};
use crate::infer::frame_loop::{self, WorkItem};
use crate::infer::pipeline::Pipeline;
use crate::infer::InferError;
use crate::scale::{HELD_PREFIX, PROVIDER_PREFIX, READY_LINE};
use crate::shutdown::{Lifetime, Shutdown};
use crate::transport::{Frames, TransportKind, WorkerTransport};

pub fn run(loaded: Loaded) -> i32 {
    // Before the runtime's threads (see `memory::worker_heap`).
    crate::memory::worker_heap();
    super::run_on_runtime(
        "edge-worker",
        Some(2),
        "Worker stopped on an error.",
        run_worker(loaded),
    )
}

/// Frames this worker holds (delivered, not yet settled), reported on stdout as
/// `HELD_PREFIX n` whenever the count changes: the scaler adds it to the broker's ready
/// count, since a passive queue declare does not count delivered-unacked messages.
#[derive(Clone)]
struct Held(Arc<watch::Sender<u64>>);

impl Default for Held {
    fn default() -> Self {
        Held(Arc::new(watch::Sender::new(0)))
    }
}

impl Held {
    fn count(&self) -> u64 {
        *self.0.borrow()
    }
    fn add(&self) {
        // Reported under the count's lock, so the lines come out in the count's order.
        self.0.send_modify(|n| {
            *n += 1;
            report_held(*n);
        });
    }
    fn done(&self) {
        self.0.send_modify(|n| {
            *n = n.saturating_sub(1);
            report_held(*n);
        });
    }
    /// Returns once every frame held has been settled.
    async fn settled(&self) {
        let mut rx = self.0.subscribe();
        // The sender is `self`, alive while this waits: the wait cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

fn report_held(n: u64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{HELD_PREFIX} {n}");
    let _ = out.flush();
}

/// How long a worker waits for its broker subscription before it says it is ready.
const CONSUMING_TIMEOUT: Duration = Duration::from_secs(10);

/// The part of `grace_period` a stopping worker uses: it exits by itself before the
/// pool kills it, so it still closes its connection cleanly.
const GRACE_USED: f32 = 0.8;

async fn run_worker(loaded: Loaded) -> anyhow::Result<i32> {
    let cfg = loaded.config;
    let lifetime = Lifetime::with_signals();
    let started = Started::load_and_link(&cfg, &lifetime).await?;
    let transport = Arc::new(started.transport);
    let mut frames = transport.frames().context("frames stream")?;
    let (tx, rx) = mpsc::channel::<WorkItem>(cfg.transport.prefetch.as_usize().max(1));
    // The loop ends when the channel closes, so frames already taken are finished.
    let work = tokio::spawn(frame_loop::run(
        started.pipeline,
        cfg.events.snapshots(),
        rx,
        TransportSink::new(transport.clone(), cfg.device.id.as_str()),
        Shutdown::new(),
    ));
    let ready_at = crate::clock::unix_ns_now();
    announce_ready(
        &started.provider,
        started.loaded_in,
        started.linked_in,
        started.subscribed,
    );
    let held = Held::default();
    take_frames(&mut frames, &tx, &held, ready_at, lifetime.shutdown()).await;
    drop(tx);
    stop(cfg.scaling.grace_period.get(), work, &held, &transport).await
}

/// A worker ready to take frames: its model loaded, its broker link up.
struct Started {
    pipeline: Pipeline,
    provider: String,
    transport: WorkerTransport,
    loaded_in: Duration,
    linked_in: Duration,
    /// The broker acknowledged the subscription before ready.
    subscribed: bool,
}

impl Started {
    /// A cold start is model load plus broker link plus subscription: the link does not
    /// need the model, so on MQTT both run at once and the worker is ready after the
    /// slower. Not on AMQP: its consumer starts with the connection and would take
    /// frames (up to the prefetch) that it cannot report as held while the model loads,
    /// so the scaler would see no backlog and could scale in a worker that is still
    /// loading.
    async fn load_and_link(cfg: &Config, lifetime: &Lifetime) -> anyhow::Result<Started> {
        let inference = cfg.inference.clone();
        let started = std::time::Instant::now();
        let overlap = cfg.transport.kind != TransportKind::Amqp;
        let load = async {
            let pipeline = tokio::task::spawn_blocking(move || {
                let pipeline = Pipeline::new(&inference);
                // What the session creation freed (the model's bytes, layouts) goes
                // back: the worker's heap keeps freed blocks (`memory::worker_heap`).
                crate::memory::release_free_memory();
                pipeline
            })
            .await
            .context("model loading task")??;
            anyhow::Ok((pipeline, started.elapsed()))
        };
        let link = async {
            let transport =
                WorkerTransport::connect(&cfg.transport, cfg.device.id.as_str(), lifetime.end())
                    .await
                    .context("transport")?;
            // Ready means subscribed: on MQTT a frame published before the SUBACK is lost.
            let subscribed = transport.consuming(CONSUMING_TIMEOUT).await;
            anyhow::Ok((transport, subscribed, started.elapsed()))
        };
        let ((pipeline, loaded_in), (transport, subscribed, linked_in)) = if overlap {
            tokio::try_join!(load, link)?
        } else {
            let loaded = load.await?;
            (loaded, link.await?)
        };
        let provider = pipeline.provider().to_string();
        info!(provider = %provider, load = ?loaded_in, "Model loaded.");
        if !subscribed {
            warn!(timeout = ?CONSUMING_TIMEOUT, "No subscription acknowledged yet; announcing ready anyway (the agent resends what is lost).");
        }
        Ok(Started {
            pipeline,
            provider,
            transport,
            loaded_in,
            linked_in,
            subscribed,
        })
    }
}

/// The lines the scaler waits for: the execution provider, then ready.
/// `acknowledged`: whether the broker acknowledged the subscription before ready.
fn announce_ready(provider: &str, loaded_in: Duration, linked_in: Duration, acknowledged: bool) {
    println!("{PROVIDER_PREFIX} {provider}");
    println!("{READY_LINE}");
    let _ = std::io::stdout().flush();
    info!(lifecycle = "ready", model = ?loaded_in, subscribed = ?linked_in, acknowledged, "Worker ready.");
}

/// Hands frames to the frame loop, counting each as held until it is settled, until
/// the stream ends, the loop is gone or shutdown.
async fn take_frames(
    frames: &mut Frames,
    tx: &mpsc::Sender<WorkItem>,
    held: &Held,
    ready_at: u64,
    shutdown: &Shutdown,
) {
    loop {
        let d = tokio::select! {
            d = frames.next() => match d { Some(d) => d, None => return },
            _ = shutdown.cancelled() => return,
        };
        held.add();
        let held_now = held.clone();
        // Only once settled: the connection must not close before the ack is sent.
        let item = work_item(d, ready_at, move || held_now.done());
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// The stop, within [`GRACE_USED`] of `grace`: the frame loop finishes what it holds,
/// their acks go out, then the link flushes and closes with what is left. Frames not
/// finished in time are abandoned (the broker delivers them again) and the exit status
/// says so.
async fn stop(
    grace: Duration,
    mut work: JoinHandle<Result<(), InferError>>,
    held: &Held,
    transport: &WorkerTransport,
) -> anyhow::Result<i32> {
    let mut stop = Stop::begin(
        "Worker",
        grace.mul_f32(GRACE_USED),
        Duration::from_secs(2).min(grace / 4),
        "Worker stopping: finishing the frames it holds.",
    );
    let result = match stop.within(&mut work).await {
        Some(r) => r.context("worker loop")?,
        None => {
            work.abort();
            warn!(lifecycle = "grace_exceeded", held = held.count(), grace = ?grace, "Frames not finished within scaling.grace_period; exiting anyway, they will be delivered again.");
            stop.abandoned("frames held");
            Ok(())
        }
    };
    // The acks run in tasks of their own; closing before they are sent would hand the
    // frames back to the broker and another worker would process them again.
    if stop.clean() && stop.within(held.settled()).await.is_none() {
        warn!(
            held = held.count(),
            "Acks still pending at exit; those frames will be delivered again."
        );
    }
    let left = stop.left();
    if !transport.close(left).await {
        warn!(within = ?left, "The transport did not flush and close in time.");
        stop.abandoned("transport");
    }
    result.map_err(anyhow::Error::from)?;
    Ok(stop.finish())
}
