//! Telemetry: logging set-up, metrics, status heartbeat and systemd notification.

pub mod config;
pub mod gpu;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod process;

pub use config::{LogFormat, TelemetryConfig};
