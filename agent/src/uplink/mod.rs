//! The uplink: events to a central broker, apart from the frames. Frames stay on the
//! local transport (usually the embedded broker); incidents, snapshots, clip notices,
//! motion, status and health go up through a disk spool (`spool.rs`) to a central MQTT
//! or AMQP broker, so they survive an outage of hours and a power cut. The connection
//! is the transport module's (`UplinkTransport`); this module owns the spool, the
//! message ids and the forwarder that empties the spool in order.

pub mod config;
pub mod spool;

pub use config::{SpoolConfig, UplinkConfig, UplinkKind};
