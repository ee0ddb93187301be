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
    /// The file holding the token of the page on `metrics_listen` (its frames and
    /// clips too), looked up like `password_file`. Without one, a listener on loopback
    /// serves the page to anyone who can reach it and any other refuses it (403);
    /// `/metrics` and `/health` need no token either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token_file: Option<std::path::PathBuf>,
    /// The token read from `page_token_file` at load; never serialised.
    #[serde(skip)]
    pub page_token: Option<PageToken>,
}

/// The page's token: shown as `***`, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct PageToken(String);

impl PageToken {
    pub fn new(token: String) -> PageToken {
        PageToken(token)
    }

    /// Whether `offered` is this token; the time taken does not depend on where they
    /// differ (only on the length offered).
    pub fn matches(&self, offered: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(offered.as_bytes()))
    }

    /// The token as text, for the one place that must write it (the page's cookie).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PageToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageToken(***)")
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            metrics_listen: default_listen(),
            heartbeat_interval: default_heartbeat(),
            home_assistant: false,
            page_token_file: None,
            page_token: None,
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
