//! Telemetry: logging set-up, metrics, status heartbeat and systemd notification.

pub mod config;
pub mod logging;
pub mod metrics;

pub use config::{LogFormat, TelemetryConfig};
