//! Every message format, in one leaf: the frame message (binary framing around a JSON
//! header and a JPEG), how crops travel in that JPEG and map back to camera pixels, and
//! the JSON bodies of detections, motion, incidents and status. escalate, transport,
//! infer and results import it; no other module knows a byte layout or a JSON shape.

pub mod detections;
pub mod frame;
pub mod regions;
/// The message contract's checker (the JSON Schemas in `schemas/`); the integration
/// tests include the same file.
#[cfg(test)]
pub(crate) mod schema;

pub use frame::{FrameHeader, FrameMessage, MessageError};
