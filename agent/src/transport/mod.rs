//! The broker link: the same API over MQTT (embedded broker or Mosquitto) and AMQP
//! (RabbitMQ), one handle type per side. [`AgentTransport`] publishes frames, motion and
//! incidents and reads results back; [`WorkerTransport`] takes frames and publishes
//! results. Each offers only its side's operations, so a worker calling an agent method
//! does not compile; both deref to [`Connection`] for what they share.
//!
//! One task owns each connection (the rumqttc event loop, the lapin connection); the
//! handles touch the shared state (`state.rs`) only through its operations, under a
//! short lock. Outgoing messages wait in a bounded outbox (`buffer.rs`) while the broker
//! is away (events kept and sent before frames, oldest frames dropped and counted), and
//! messages not yet confirmed by the broker go back to the front of it when the
//! connection drops: delivery is at least once, and consumers drop duplicates by
//! (device, camera, seq, capture time). The message formats are `wire`'s; this module
//! knows topics, queues and acknowledgements, not payloads.

mod ack_order;
pub mod amqp;
pub mod buffer;
pub mod config;
pub mod connection;
pub mod embedded;
pub mod error;
pub mod handles;
pub mod link;
pub mod mqtt;
mod state;
pub mod tls;

pub use config::{TransportConfig, TransportKind};
pub use connection::Connection;
pub use embedded::EmbeddedBroker;
pub use error::TransportError;
pub use handles::{AgentTransport, UplinkTransport, WorkerTransport};
pub use link::{Backlog, Delivery, Frames, Inbound, ResultMessage, Results, TransportStats};
