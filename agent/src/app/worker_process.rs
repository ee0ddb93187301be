//! `edge-agent worker`: one inference worker. Loads the model, connects as a consumer,
//! prints the ready line the scaler waits for, then runs frames through the pipeline;
//! a frame is acked only after the broker confirmed its snapshot (if any) and detections. SIGTERM: stop taking frames, finish those held, exit 0; a worker that
//! cannot finish them within `scaling.grace_period` exits anyway (non-zero), before the
//! pool's SIGKILL, and the frames it held are delivered again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Loaded;
use crate::infer::broker::{work_item, TransportSink};
use crate::infer::frame_loop::{self, WorkItem};
use crate::infer::pipeline::Pipeline;
use crate::scale::{HELD_PREFIX, PROVIDER_PREFIX, READY_LINE};
use crate::shutdown::{Lifetime, Shutdown};
use crate::transport::TransportKind;
use crate::transport::WorkerTransport;

pub fn run(loaded: Loaded) -> i32 {
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
#[derive(Clone, Default)]
struct Held(Arc<AtomicU64>);

impl Held {
    fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    fn add(&self) {
        let n = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        report_held(n);
    }
    fn done(&self) {
        let n = self.0.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        report_held(n);
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
    let grace = cfg.scaling.grace_period.get();
    let lifetime = Lifetime::with_signals();
    let shutdown = lifetime.shutdown();
    let inference = cfg.inference.clone();
    let started = std::time::Instant::now();
    // A cold start is model load plus broker link plus subscription: the link does not
    // need the model, so on MQTT both run at once and the worker is ready after the
    // slower. Not on AMQP: its consumer starts with the connection and would take frames
    // (up to the prefetch) that it cannot report as held while the model loads, so the
    // scaler would see no backlog and could scale in a worker that is still loading.
    let overlap = cfg.transport.kind != TransportKind::Amqp;
    let load = async {
        let pipeline = tokio::task::spawn_blocking(move || Pipeline::new(&inference))
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
    let transport = Arc::new(transport);
    let mut frames = transport.frames().context("frames stream")?;
    let (tx, rx) = mpsc::channel::<WorkItem>(cfg.transport.prefetch.as_usize().max(1));
    // The loop ends when the channel closes, so frames already taken are finished.
    let loop_token = Shutdown::new();
    let work = tokio::spawn(frame_loop::run(
        pipeline,
        cfg.events.snapshots(),
        rx,
        TransportSink::new(transport.clone(), cfg.device.id.as_str()),
        loop_token,
    ));
    let ready_at = crate::clock::unix_ns_now();
    let held = Held::default();
    println!("{PROVIDER_PREFIX} {provider}");
    println!("{READY_LINE}");
    let _ = std::io::stdout().flush();
    info!(lifecycle = "ready", model = ?loaded_in, subscribed = ?linked_in, acknowledged = subscribed, "Worker ready.");
    loop {
        let d = tokio::select! {
            d = frames.next() => match d { Some(d) => d, None => break },
            _ = shutdown.cancelled() => break,
        };
        held.add();
        let held_now = held.clone();
        // Only once settled: the connection must not close before the ack is sent.
        let item = work_item(d, ready_at, move || held_now.done());
        if tx.send(item).await.is_err() {
            break;
        }
    }
    info!(lifecycle = "stopping", within = ?grace.mul_f32(GRACE_USED), "Worker stopping: finishing the frames it holds.");
    let deadline = tokio::time::Instant::now() + grace.mul_f32(GRACE_USED);
    let stages_until = deadline - Duration::from_secs(2).min(grace / 4);
    let mut clean = true;
    drop(tx);
    let mut work = work;
    let result = match tokio::time::timeout_at(stages_until, &mut work).await {
        Ok(r) => r.context("worker loop")?,
        Err(_) => {
            work.abort();
            warn!(lifecycle = "grace_exceeded", held = held.count(), grace = ?grace, "Frames not finished within scaling.grace_period; exiting anyway, they will be delivered again.");
            clean = false;
            Ok(())
        }
    };
    // The acks run in tasks of their own; closing before they are sent would hand the
    // frames back to the broker and another worker would process them again.
    let acks = async {
        while held.count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if clean && tokio::time::timeout_at(stages_until, acks).await.is_err() {
        warn!(
            held = held.count(),
            "Acks still pending at exit; those frames will be delivered again."
        );
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !transport.close(left).await {
        warn!(within = ?left, "The transport did not flush and close in time.");
        clean = false;
    }
    result.map_err(anyhow::Error::from)?;
    Ok(if clean {
        0
    } else {
        crate::shutdown::EXIT_UNCLEAN_STOP
    })
}
