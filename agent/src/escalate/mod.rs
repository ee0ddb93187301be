//! Escalation: the frame message format, the AMQP and MQTT transports, the embedded
//! broker and the bounded buffers that hold messages while a broker is away.

pub mod camera;
pub mod config;
pub mod policy;

pub use config::{EscalationConfig, TransportConfig, TransportKind};
