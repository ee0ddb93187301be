//! The leaf every stage and the configuration import: checked value types (a value that
//! deserialises is a valid value: ranges, durations, identifiers, URLs of the right
//! scheme) and secrets (the one redaction function every printed URL goes through).
//! It imports nothing of the crate.

pub mod secret;
mod types;

pub use types::*;
