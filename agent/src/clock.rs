//! Wall-clock stamps that follow a frame across processes: the agent stamps capture,
//! motion and publish, the worker its own stages, and telemetry turns them into stage
//! latencies. A leaf: it depends on nothing else in the crate.

use serde::{Deserialize, Serialize};

/// One stage's wall-clock time, so latency can be followed across processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamp {
    pub stage: String,
    pub at_unix_ns: u64,
}

impl Stamp {
    /// `stage` happened now.
    pub fn now(stage: &str) -> Stamp {
        Stamp {
            stage: stage.to_string(),
            at_unix_ns: unix_ns_now(),
        }
    }
}

/// Wall-clock now in unix nanoseconds (0 before 1970).
pub fn unix_ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
