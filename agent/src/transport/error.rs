//! The transport's errors, and the one place a broker link's error is logged.

use std::time::Duration;

use super::embedded::EmbeddedError;
use crate::telemetry::metrics;
use crate::values::secret::redact_text;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("transport URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("TLS for {what}: {why}")]
    Tls { what: String, why: String },
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(
        "a worker on the embedded broker needs transport.embedded_port (the agent's broker port)"
    )]
    EmbeddedPortUnknown,
    #[error("AMQP {what}: {why}")]
    Amqp { what: String, why: String },
    #[error("{what} is not valid in a topic or routing key: {value:?}")]
    BadName { what: &'static str, value: String },
    #[error("frame {camera}/{seq}: JPEG of {size} bytes exceeds transport.max_payload ({max})")]
    Oversized {
        camera: String,
        seq: u64,
        size: usize,
        max: usize,
    },
    #[error("message dropped from the full outbound buffer before the broker confirmed it")]
    Dropped,
    #[error("{0} was already taken from this transport")]
    AlreadyTaken(&'static str),
    #[error("the transport is closed")]
    Closed,
    #[error("{0} needs an MQTT transport (embedded or mqtt)")]
    MqttOnly(&'static str),
}

/// Logs a connection problem once in a while, without secrets.
pub(crate) fn log_link_error(what: &str, err: &dyn std::fmt::Display) {
    if metrics::should_log(&format!("transport-link-{what}"), Duration::from_secs(10)) {
        tracing::warn!(link = what, error = %redact_text(&err.to_string()), "Broker connection lost; reconnecting.");
    }
}
