//! Configuration: typed sections (each next to its stage), layered loading from fleet,
//! site and device files plus the environment, and validation that reports every
//! problem at once with file, line and key.

pub mod load;
pub mod render;
pub mod secret;
pub mod tree;
pub mod types;

use serde::{Deserialize, Serialize};

pub use load::{load, Loaded, Sources};
pub use tree::{ConfigError, ConfigErrors, Origin};

use crate::escalate::TransportConfig;
use crate::infer::{EventsConfig, InferenceConfig};
use crate::ingest::CameraConfig;
use crate::scale::ScalingConfig;
use crate::telemetry::TelemetryConfig;
use types::Ident;

/// Exit code for configuration errors (sysexits EX_CONFIG); systemd's
/// `RestartPreventExitStatus=78` keeps a bad config from restart-looping.
pub const EXIT_CONFIG: i32 = 78;

/// The demo configuration used when no configuration is given at all.
pub const DEMO_TOML: &str = include_str!("demo.toml");

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub transport: TransportConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default)]
    pub scaling: ScalingConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

impl Config {
    /// Parses one TOML text with no layering (tests, embedded demo).
    pub fn from_toml_str(name: &str, text: &str) -> Result<Config, ConfigErrors> {
        load::load_texts(&[(name.to_string(), text.to_string())], &[], None).map(|l| l.config)
    }

    /// Checks that span fields or sections; returns (key path, message).
    pub(crate) fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut nest = |prefix: &str, v: Vec<(String, String)>| {
            errs.extend(v.into_iter().map(|(k, m)| (format!("{prefix}.{k}"), m)));
        };
        for cam in &self.cameras {
            let prefix = format!("cameras[{}]", cam.id);
            nest(&format!("{prefix}.motion"), cam.motion.check());
            nest(&format!("{prefix}.escalation"), cam.escalation.check());
            if cam.backoff.min > cam.backoff.max {
                nest(
                    &format!("{prefix}.backoff"),
                    vec![(
                        "min".into(),
                        format!(
                            "must not exceed backoff.max ({:?}), got {:?}",
                            cam.backoff.max, cam.backoff.min
                        ),
                    )],
                );
            }
        }
        nest("transport", self.transport.check());
        nest("inference", self.inference.check());
        nest("scaling", self.scaling.check());
        nest("telemetry", self.telemetry.check());
        nest(
            "events.tracks",
            self.events.tracks.check(&self.events.classes),
        );
        if let Some(q) = &self.scaling.remote_queue {
            if self.transport.kind != crate::escalate::TransportKind::Amqp {
                errs.push((
                    "scaling.remote_queue".into(),
                    format!(
                        "offloading to {q:?} needs transport.kind = \"amqp\" (the remote queue is on the same broker), got {:?}",
                        format!("{:?}", self.transport.kind).to_lowercase()
                    ),
                ));
            } else if q == &self.transport.frames_queue {
                errs.push((
                    "scaling.remote_queue".into(),
                    format!("must differ from transport.frames_queue, both are {q:?}"),
                ));
            }
        }
        for (key, path) in [
            ("inference.model", &self.inference.model),
            ("inference.labels", &self.inference.labels),
        ] {
            if !path.as_os_str().is_empty() && !path.exists() {
                errs.push((
                    key.to_string(),
                    format!("file not found: {}", path.display()),
                ));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests;
