//! Integration tests against real components: the built binary, an in-process RTSP
//! server, RabbitMQ and Mosquitto on loopback, the embedded broker, ONNX Runtime.

mod clip_events;
mod clips;
mod common;
mod config;
mod cross;
mod deb;
mod decode;
mod full_cycle;
mod grafana;
mod infer;
mod ingest;
mod motion;
mod package;
mod page;
mod pipeline;
mod reload;
mod runtime;
mod scale;
mod stationary;
mod status;
mod stop;
mod telemetry;
mod transport;
mod uplink;
