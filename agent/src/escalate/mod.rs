//! Escalation: the frame message format, the AMQP and MQTT transports, the embedded
//! broker and the bounded buffers that hold messages while a broker is away.

pub mod amqp;
pub mod buffer;
pub mod camera;
pub mod config;
pub mod embedded;
pub mod message;
pub mod mqtt;
pub mod policy;
pub mod regions;
mod state;
pub mod tls;
pub mod transport;

pub use config::{EscalationConfig, Regions, TransportConfig, TransportKind};
pub use embedded::EmbeddedBroker;
pub use message::{FrameHeader, FrameMessage, MessageError};
pub use transport::{
    AgentTransport, Backlog, Connection, Delivery, Frames, Inbound, ResultMessage, Results,
    TransportError, TransportStats, WorkerTransport,
};
