//! The one integration test target: real GStreamer, brokers and ONNX Runtime on loopback.

mod common;
mod ingest;
