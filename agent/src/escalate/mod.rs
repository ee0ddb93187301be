//! Escalation: the escalator (the one task that publishes what the cameras hand it),
//! the frame message format, the agent's and the worker's transport handles over AMQP
//! and MQTT, the embedded broker and the bounded buffers that hold messages while a
//! broker is away.

pub mod amqp;
pub mod buffer;
pub mod config;
pub mod embedded;
pub mod escalator;
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
