//! Scale: turns the frames backlog into a desired number of worker processes and
//! supervises them (start on demand, scale in gracefully, back to zero when idle).

pub mod config;
pub mod decide;
pub mod offload;
pub mod pool;

pub use config::ScalingConfig;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use decide::Decider;
pub use pool::{
    spawn_pool, PoolHandle, PoolStatus, WorkerSpec, HELD_PREFIX, PROVIDER_PREFIX, READY_LINE,
};

/// Polls the backlog every `polling_interval` (or at once when `wake` is notified, as
/// the escalator does for each frame so a worker starts without waiting for the next
/// poll) and sets the pool's target.
pub async fn run_scaler<F, Fut>(
    cfg: ScalingConfig,
    pool: PoolHandle,
    mut backlog: F,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let mut decider = Decider::new(&cfg);
    let mut last_target = u32::MAX;
    loop {
        if let Some(b) = backlog().await {
            let current = pool.status().running;
            let target = decider.decide(Instant::now(), b, current);
            if target != last_target {
                tracing::info!(backlog = b, workers = current, target, "Scaling workers.");
                last_target = target;
            }
            pool.set_target(target);
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.polling_interval.get()) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    pool.set_target(0);
}
