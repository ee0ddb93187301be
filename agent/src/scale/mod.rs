//! Scale: turns the frames backlog into a desired number of worker processes and
//! supervises them (start on demand, scale in gracefully, back to zero when idle).

pub mod config;

pub use config::ScalingConfig;
