//! Configuration: typed sections (each next to its stage), layered loading from fleet,
//! site and device files plus the environment, and validation that reports every
//! problem at once with file, line and key.

pub mod load;
pub mod render;
pub mod resolved;
pub mod tree;
mod warnings;

use serde::{Deserialize, Serialize};

pub use load::{load, load_resolved, Loaded, Sources};
pub use resolved::resolved_text;
pub use tree::{ConfigError, ConfigErrors, Origin};

use crate::camera::CameraConfig;
use crate::infer::InferenceConfig;
use crate::results::EventsConfig;
use crate::scale::ScalingConfig;
use crate::telemetry::TelemetryConfig;
use crate::transport::TransportConfig;
use crate::uplink::UplinkConfig;
use crate::values::{Dur, Ident};

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
    /// Events to a central broker, apart from the frames (`kind = "none"`: none).
    #[serde(default)]
    pub uplink: UplinkConfig,
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
    /// The longest a stop (SIGTERM) takes: cameras, workers and the transport are
    /// stopped within it, and whatever is not done by then is abandoned and the exit
    /// status says so. systemd's `TimeoutStopSec` must be above it.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
}

fn default_stop_timeout() -> Dur {
    Dur::secs(20)
}

impl Config {
    /// Parses one TOML text with no layering (tests, embedded demo).
    pub fn from_toml_str(name: &str, text: &str) -> Result<Config, ConfigErrors> {
        load::load_texts(&[(name.to_string(), text.to_string())], &[], None).map(|l| l.config)
    }

    /// Checks that span fields or sections; returns (key path, message).
    pub(crate) fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut direct: Vec<(String, String)> = Vec::new();
        let mut nest = |prefix: &str, v: Vec<(String, String)>| {
            errs.extend(v.into_iter().map(|(k, m)| (format!("{prefix}.{k}"), m)));
        };
        for cam in &self.cameras {
            let prefix = format!("cameras[{}]", cam.id);
            nest(&format!("{prefix}.motion"), cam.motion.check());
            nest(&format!("{prefix}.escalation"), cam.escalation.check());
            for (name, z) in &cam.zones {
                nest(&format!("{prefix}.zones.{name}"), z.check());
            }
            let known = |c: &str| self.events.classes.iter().any(|k| k == c);
            for (class, o) in &cam.objects {
                let key = format!("{prefix}.objects.{class}");
                if !known(class) {
                    direct.push((key.clone(), format!("{class:?} is not in events.classes {:?}: only event classes are tracked", self.events.classes)));
                }
                nest(&key, o.check_filters());
                for z in o.required_zones.iter().flatten() {
                    if !cam.zones.contains_key(z) {
                        direct.push((
                            format!("{key}.required_zones"),
                            format!(
                                "unknown zone {z:?}: camera {:?} defines {:?}",
                                cam.id.as_str(),
                                cam.zones.keys().collect::<Vec<_>>()
                            ),
                        ));
                    }
                }
            }
            // Zones required by a class everywhere must exist on every camera that does
            // not lift the requirement itself.
            for (class, o) in &self.events.tracks.classes {
                if cam
                    .objects
                    .get(class)
                    .is_some_and(|c| c.required_zones.is_some())
                {
                    continue;
                }
                for z in o.required_zones.iter().flatten() {
                    if !cam.zones.contains_key(z) {
                        direct.push((format!("events.tracks.classes.{class}.required_zones"), format!("unknown zone {z:?} on camera {:?} (its zones: {:?}); define it there, or set cameras.objects.{class}.required_zones for that camera", cam.id.as_str(), cam.zones.keys().collect::<Vec<_>>())));
                    }
                }
            }
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
        if self.device.stop_timeout.get() < std::time::Duration::from_secs(1) {
            nest(
                "device",
                vec![(
                    "stop_timeout".into(),
                format!(
                    "must be at least 1s (cameras, workers and the transport stop within it), got {:?}",
                        self.device.stop_timeout.get()
                    ),
                )],
            );
        }
        nest("transport", self.transport.check());
        nest("uplink", self.uplink.check());
        nest("inference", self.inference.check());
        nest("scaling", self.scaling.check());
        nest("telemetry", self.telemetry.check());
        nest(
            "events.tracks",
            self.events.tracks.check(&self.events.classes),
        );
        nest("events.clips", self.events.clips.check());
        errs.extend(direct);
        // With `scaling.remote_url` the remote queue is on a broker of its own.
        if let Some(q) = self
            .scaling
            .remote_queue
            .as_ref()
            .filter(|_| self.scaling.remote_url.is_none())
        {
            if self.transport.kind != crate::transport::TransportKind::Amqp {
                errs.push((
                    "scaling.remote_queue".into(),
                    format!(
                        "offloading to {q:?} needs scaling.remote_url (the GPU pool's AMQP broker) or transport.kind = \"amqp\" (the remote queue on the same broker), got {:?}",
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
        // The bundled test model finds only the demo's coloured squares: on a real camera
        // it would raise nonsense events, so a fresh install with real cameras stops here
        // (exit 78) instead of starting workers. A project checkout is a development
        // setup whose test cameras are RTSP servers as well.
        if self.inference.model.as_os_str().is_empty()
            && crate::infer::pipeline::project_test_model().is_none()
        {
            if let Some(cam) = self.cameras.iter().find(|c| c.url.scheme() != "demo") {
                errs.push((
                    "inference.model".into(),
                    format!(
                        "is not set, and camera {:?} is a real camera: the bundled test model only \
                         finds the demo's coloured squares. Set inference.model to your YOLOv4 ONNX \
                         model (and inference.labels to its class names)",
                        cam.id.as_str()
                    ),
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
