//! edge-agent: on-device video-event agent.
//!
//! A frame flows ingest → motion → escalate → (broker) → infer → (broker) → results (tracks, incident events), while scale
//! watches the backlog and config and telemetry serve everyone. One module per stage;
//! `camera` joins a camera's ingest pipeline and its analysis loop (motion, then what
//! to escalate), `app` builds and wires the stages. `clock`, `image` and `sync` are
//! leaves every stage may use.

pub mod app;
pub mod backoff;
pub mod camera;
pub mod cli;
pub mod clips;
pub mod clock;
pub mod config;
pub mod escalate;
pub mod image;
pub mod infer;
pub mod ingest;
pub mod memory;
pub mod motion;
pub mod results;
pub mod scale;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod transport;
pub mod values;
pub mod wire;

/// The message contract's checker, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/schema.rs"]
pub(crate) mod schema;

/// The version printed by `--version` and published in the status message.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
