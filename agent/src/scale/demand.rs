//! The workers' side of escalation: [`Demand`] implements the escalator's
//! [`Workers`] port with the pool, the scaler's wake-up, the pre-warm accounting and
//! the offload decision, so the escalator needs none of them by name.

use std::sync::Arc;

use tokio::sync::watch;

use super::offload::Offloader;
use super::prewarm::CandidateStarts;
use super::{PoolHandle, ScalingConfig, Wake};
use crate::escalate::escalator::Workers;
use crate::telemetry::metrics::{self, metrics};

pub struct Demand {
    pub wake: Arc<Wake>,
    pub pool: PoolHandle,
    pub scaling: watch::Receiver<ScalingConfig>,
    pub offloader: Offloader,
    starts: CandidateStarts,
    /// Where the last routed frame went: None for the local queue.
    last_queue: Option<String>,
}

impl Demand {
    pub fn new(
        wake: Arc<Wake>,
        pool: PoolHandle,
        scaling: watch::Receiver<ScalingConfig>,
        offloader: Offloader,
    ) -> Demand {
        Demand {
            wake,
            pool,
            scaling,
            offloader,
            starts: CandidateStarts::default(),
            last_queue: None,
        }
    }

    fn prewarm(&self) -> bool {
        self.scaling.borrow().prewarm_on_motion
    }
}

impl Workers for Demand {
    fn any_ready(&self) -> bool {
        self.pool.status().ready > 0
    }

    fn candidate_seen(&mut self, camera: &str) {
        if !self.prewarm() {
            return;
        }
        if self.starts.seen(camera, self.pool.status().running) {
            metrics()
                .prewarm_starts
                .get_or_create(&metrics::camera(camera))
                .inc();
        }
        self.wake.candidate();
    }

    fn candidate_dropped(&mut self, camera: &str) {
        if self.prewarm() && self.starts.dropped(camera) {
            metrics()
                .false_starts
                .get_or_create(&metrics::camera(camera))
                .inc();
        }
    }

    fn event_started(&mut self, camera: &str) {
        self.starts.confirmed(camera);
    }

    fn route(&mut self) -> Option<String> {
        self.last_queue = self.offloader.route(&self.pool.status());
        self.last_queue.clone()
    }

    fn sent(&mut self, camera: &str) {
        self.offloader.sent(camera);
        if self.last_queue.is_none() {
            self.wake.frame();
        }
    }
}
