//! The one integration test target: every stage's tests against real components.

mod common;
mod transport;
