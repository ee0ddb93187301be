//! Scale: turns the frames backlog into a desired number of worker processes and
//! supervises them (start on demand, scale in gracefully, back to zero when idle).

pub mod config;
pub mod decide;
pub mod demand;
pub mod offload;
pub mod pool;
pub mod prewarm;

pub use config::ScalingConfig;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use decide::Decider;
pub use pool::{
    run_owned, spawn_pool, PoolHandle, PoolStatus, WorkerSpec, HELD_PREFIX, PROVIDER_PREFIX,
    READY_LINE,
};

/// What makes the scaler look again before its next poll: a frame escalated, or a
/// motion candidate (a camera's first frame with motion boxes, before the event is
/// confirmed), which asks for a worker at once so that its start overlaps the
/// confirmation window instead of following it.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    candidate: AtomicBool,
}

impl Wake {
    /// A frame was published to the local queue.
    pub fn frame(&self) {
        self.notify.notify_one();
    }

    /// A motion candidate: start a worker now if none runs (`prewarm_on_motion`).
    pub fn candidate(&self) {
        self.candidate.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn take_candidate(&self) -> bool {
        self.candidate.swap(false, Ordering::AcqRel)
    }
}

/// Polls the backlog every `polling_interval` (or at once when `wake` is notified, as
/// the escalator does for each frame and each motion candidate, so a worker starts
/// without waiting for the next poll) and sets the pool's target.
///
/// `cfg` may change while it runs (a reload): the next decision uses the new bounds,
/// keeping the cooldown window seen so far.
pub async fn run_scaler<F, Fut>(
    mut cfg_rx: tokio::sync::watch::Receiver<ScalingConfig>,
    pool: PoolHandle,
    mut backlog: F,
    wake: Arc<Wake>,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let mut cfg = cfg_rx.borrow_and_update().clone();
    let mut decider = Decider::new(&cfg);
    let mut last_target = u32::MAX;
    loop {
        if cfg_rx.has_changed().unwrap_or(false) {
            cfg = cfg_rx.borrow_and_update().clone();
            decider.reconfigure(&cfg);
        }
        if let Some(b) = backlog().await {
            let current = pool.status().running;
            let candidate = wake.take_candidate() && cfg.prewarm_on_motion;
            let target = decider.decide(Instant::now(), b, current, candidate);
            if target != last_target {
                tracing::info!(
                    backlog = b,
                    workers = current,
                    target,
                    candidate,
                    "Scaling workers."
                );
                last_target = target;
            }
            pool.set_target(target);
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.polling_interval.get()) => {}
            _ = wake.notify.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    pool.set_target(0);
}
