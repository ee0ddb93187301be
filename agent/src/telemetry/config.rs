//! Logs, metrics and status (`[telemetry]`).

use serde::{Deserialize, Serialize};

use crate::values::Dur;

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub log_format: LogFormat,
    /// Prometheus endpoint; empty disables it.
    #[serde(default = "default_listen")]
    pub metrics_listen: String,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: Dur,
    /// Publish Home Assistant MQTT discovery for each camera.
    #[serde(default)]
    pub home_assistant: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            metrics_listen: default_listen(),
            heartbeat_interval: default_heartbeat(),
            home_assistant: false,
        }
    }
}

impl TelemetryConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return vec![(
                "metrics_listen".into(),
                format!(
                    "must be host:port such as \"127.0.0.1:9464\", got {:?}",
                    self.metrics_listen
                ),
            )];
        }
        Vec::new()
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_heartbeat() -> Dur {
    Dur::secs(30)
}
