//! edge-agent: on-device video-event agent.
//!
//! A frame flows ingest → motion → escalate → transport → (broker) → infer → (broker) →
//! results (tracks, incidents), while scale watches the backlog; `camera` runs each
//! camera's ingest and analysis loop, `config` gathers every stage's section, and `app`
//! builds and wires the stages. Imports run with that flow: a module imports the leaves
//! (`values`, `wire`, `clock`, `image`, `sync`, `backoff`, `shutdown`, `memory`,
//! `telemetry`) and the stages before it, never one after it. README's Architecture
//! section follows one frame through the files.

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
pub mod uplink;
pub mod values;
pub mod wire;

/// The version printed by `--version` and published in the status message.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
