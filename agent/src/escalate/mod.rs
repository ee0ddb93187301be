//! Escalation: what of a camera's motion goes to the detector (the per-camera policy and
//! budget) and the escalator, the one task that publishes what the cameras hand it
//! through the agent's transport handle.

pub mod config;
pub mod escalator;
pub mod policy;
pub mod verify;

pub use config::{DetectRegions, EscalationConfig};
