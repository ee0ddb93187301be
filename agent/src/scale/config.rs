//! Worker scaling (`[scaling]`), with KEDA's names so operators recognise them.

use serde::{Deserialize, Serialize};

use crate::values::{Dur, IntIn};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    #[serde(default)]
    pub min_workers: IntIn<0, 64>,
    #[serde(default = "default_max")]
    pub max_workers: IntIn<1, 64>,
    /// Backlog at or above which workers start from zero.
    #[serde(default = "default_activation")]
    pub activation_backlog: IntIn<1, 1_000_000>,
    /// Target backlog per worker.
    #[serde(default = "default_per_worker")]
    pub backlog_per_worker: IntIn<1, 1_000_000>,
    #[serde(default = "default_polling")]
    pub polling_interval: Dur,
    /// Idle time before scaling back to `min_workers`.
    #[serde(default = "default_cooldown")]
    pub cooldown_period: Dur,
    /// Start a worker at a camera's first frame with motion, while the event is still
    /// being confirmed (`motion.start_frames`), so that the worker's start overlaps the
    /// confirmation; a worker started for motion that never became an event goes again
    /// after `cooldown_period`. Off: workers start at the first escalated frame.
    #[serde(default = "yes")]
    pub prewarm_on_motion: bool,
    /// Time a worker gets to finish after SIGTERM before it is killed.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// A worker that has not said it is ready this long after its start (hung while
    /// loading its model) is killed and the pool backs off. A first TensorRT engine
    /// build on a Jetson can take minutes: raise it there.
    #[serde(default = "default_ready_timeout")]
    pub worker_ready_timeout: Dur,
    /// Offload to this queue, on the same AMQP broker, when local workers cannot start
    /// or are all busy (unset: never). An `edge-agent scaler` (or the KEDA deployment)
    /// on a GPU server consumes it with `transport.frames_queue` set to this name;
    /// results come back on the events exchange like local ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_queue: Option<String>,
    /// Local backlog (frames waiting and held by local workers) above which frames go
    /// remote once local workers are at `max_workers`.
    #[serde(default = "default_offload")]
    pub offload_backlog: IntIn<1, 1_000_000>,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            min_workers: IntIn::lit(0),
            max_workers: default_max(),
            activation_backlog: default_activation(),
            backlog_per_worker: default_per_worker(),
            polling_interval: default_polling(),
            cooldown_period: default_cooldown(),
            prewarm_on_motion: true,
            grace_period: default_grace(),
            worker_ready_timeout: default_ready_timeout(),
            remote_queue: None,
            offload_backlog: default_offload(),
        }
    }
}

impl ScalingConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.min_workers.get() > self.max_workers.get() {
            errs.push((
                "min_workers".into(),
                format!(
                    "must not exceed max_workers ({}), got {}",
                    self.max_workers.get(),
                    self.min_workers.get()
                ),
            ));
        }
        if let Some(q) = &self.remote_queue {
            if q.is_empty() || q.contains(['#', '+', ' ']) {
                errs.push((
                    "remote_queue".into(),
                    format!("must be non-empty without '#', '+' or spaces, got {q:?}"),
                ));
            }
        }
        if self.polling_interval.get().is_zero() {
            errs.push(("polling_interval".into(), "must be greater than 0".into()));
        }
        if self.worker_ready_timeout.get().is_zero() {
            errs.push((
                "worker_ready_timeout".into(),
                "must be greater than 0".into(),
            ));
        }
        errs
    }
}

fn yes() -> bool {
    true
}
fn default_max() -> IntIn<1, 64> {
    IntIn::lit(1)
}
fn default_activation() -> IntIn<1, 1_000_000> {
    IntIn::lit(1)
}
fn default_per_worker() -> IntIn<1, 1_000_000> {
    IntIn::lit(4)
}
fn default_polling() -> Dur {
    Dur::ms(250)
}
fn default_cooldown() -> Dur {
    Dur::secs(30)
}
fn default_grace() -> Dur {
    Dur::secs(10)
}
fn default_ready_timeout() -> Dur {
    Dur::secs(300)
}
fn default_offload() -> IntIn<1, 1_000_000> {
    IntIn::lit(16)
}
