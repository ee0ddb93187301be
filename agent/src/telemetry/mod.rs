//! Telemetry: logging set-up, metrics, status heartbeat and systemd notification.

pub mod config;
pub mod gpu;
pub mod http;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod process;
pub mod status;

pub use config::{LogFormat, TelemetryConfig};
