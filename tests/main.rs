//! Integration tests against real components: the built binary, an in-process RTSP
//! server, RabbitMQ and Mosquitto on loopback, the embedded broker, ONNX Runtime.

mod common;
mod config;
mod ingest;
mod package;
mod scale;
mod motion;
//! The one integration test target: every stage's tests against real components.
mod transport;
mod infer;
