//! Transport settings (`[transport]`).

use serde::{Deserialize, Serialize};

use crate::values::{AmqpSchemes, Dur, IntIn, MqttSchemes, SecretUrl};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// An MQTT broker inside the agent, on loopback: no outside service needed.
    #[default]
    Embedded,
    Mqtt,
    Amqp,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default)]
    pub kind: TransportKind,
    /// The MQTT broker (`kind = "mqtt"`). With `kind = "embedded"` only its user and
    /// password count: a login the embedded broker admits for a downstream service
    /// (the agent's own clients use credentials generated at each start).
    #[serde(default = "default_mqtt_url")]
    pub mqtt_url: SecretUrl<MqttSchemes>,
    #[serde(default = "default_amqp_url")]
    pub amqp_url: SecretUrl<AmqpSchemes>,
    /// A file holding the broker password, put into the URL in use at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// CA bundle for `mqtts://` and `amqps://` (system roots otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// Loopback port of the embedded broker (0 picks a free one).
    #[serde(default = "default_embedded_port")]
    pub embedded_port: IntIn<0, 65535>,
    /// Bytes the embedded broker keeps per topic filter (its commit log, in 4 segments),
    /// which bounds its memory: a frame older than that, not yet read by a worker, is
    /// dropped there and published again by the agent after `redeliver_after`.
    #[serde(default = "default_embedded_log_size")]
    pub embedded_log_size: IntIn<1_048_576, 1_073_741_824>,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_frames_queue")]
    pub frames_queue: String,
    #[serde(default = "default_events_exchange")]
    pub events_exchange: String,
    /// Messages held while the broker is unreachable; oldest frames go first when full.
    #[serde(default = "default_buffer")]
    pub buffer_size: IntIn<1, 100_000>,
    /// Frames older than this expire in the queue (AMQP message TTL).
    #[serde(default = "default_ttl")]
    pub frame_ttl: Dur,
    /// Frames queue length bound (AMQP `x-max-length`, drop-oldest).
    #[serde(default = "default_max_queue")]
    pub max_queue_length: IntIn<1, 1_000_000>,
    /// Largest JPEG payload accepted, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: IntIn<1024, 67_108_864>,
    /// Unacknowledged frames a worker holds at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: IntIn<1, 1000>,
    /// MQTT: a frame with no result after this long is published again (a worker died).
    #[serde(default = "default_redeliver_after")]
    pub redeliver_after: Dur,
    /// MQTT: how many times one frame is published again at most.
    #[serde(default = "default_redeliver_max")]
    pub redeliver_max: IntIn<0, 10>,
    /// MQTT shared-subscription group the workers join (`$share/<group>/...`).
    #[serde(default = "default_worker_group")]
    pub worker_group: String,
    /// Messages published and not yet confirmed by the broker, at most.
    #[serde(default = "default_window")]
    pub publish_window: IntIn<1, 1000>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            kind: TransportKind::default(),
            mqtt_url: default_mqtt_url(),
            amqp_url: default_amqp_url(),
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            embedded_port: default_embedded_port(),
            embedded_log_size: default_embedded_log_size(),
            topic_prefix: default_prefix(),
            frames_queue: default_frames_queue(),
            events_exchange: default_events_exchange(),
            buffer_size: default_buffer(),
            frame_ttl: default_ttl(),
            max_queue_length: default_max_queue(),
            max_payload: default_max_payload(),
            prefetch: default_prefetch(),
            redeliver_after: default_redeliver_after(),
            redeliver_max: default_redeliver_max(),
            worker_group: default_worker_group(),
            publish_window: default_window(),
        }
    }
}

impl TransportConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (key, v) in [
            ("topic_prefix", &self.topic_prefix),
            ("frames_queue", &self.frames_queue),
            ("worker_group", &self.worker_group),
        ] {
            if v.is_empty() || v.contains(['#', '+', ' ']) {
                errs.push((
                    key.to_string(),
                    format!("must be non-empty without '#', '+' or spaces, got {v:?}"),
                ));
            }
        }
        if let Some((key, other)) = client_cert_pair(&self.cert_file, &self.key_file) {
            errs.push((key.into(), format!("needs {other} as well (mutual TLS)")));
        }
        if self.events_exchange.is_empty() {
            errs.push(("events_exchange".into(), "must not be empty".into()));
        }
        if self.worker_group.contains('/') {
            errs.push((
                "worker_group".into(),
                format!("must not contain '/', got {:?}", self.worker_group),
            ));
        }
        // RabbitMQ drops a message older than its TTL: under a second, every frame.
        if self.frame_ttl.get() < std::time::Duration::from_secs(1) {
            errs.push((
                "frame_ttl".into(),
                format!("must be at least 1s, got {:?}", self.frame_ttl),
            ));
        }
        if self.redeliver_after.get() < std::time::Duration::from_millis(100) {
            errs.push((
                "redeliver_after".into(),
                format!("must be at least 100ms, got {:?}", self.redeliver_after),
            ));
        }
        errs
    }
}

/// The key set without its partner, if one is: (key, the partner's key).
pub(crate) fn client_cert_pair<T>(
    cert: &Option<T>,
    key: &Option<T>,
) -> Option<(&'static str, &'static str)> {
    match (cert, key) {
        (Some(_), None) => Some(("cert_file", "key_file")),
        (None, Some(_)) => Some(("key_file", "cert_file")),
        _ => None,
    }
}

fn default_mqtt_url() -> SecretUrl<MqttSchemes> {
    SecretUrl::parse("mqtt://127.0.0.1:1883").expect("valid default")
}
fn default_amqp_url() -> SecretUrl<AmqpSchemes> {
    // No credentials: the AMQP client then uses RabbitMQ's default guest/guest.
    SecretUrl::parse("amqp://127.0.0.1:5672/%2f").expect("valid default")
}
fn default_embedded_port() -> IntIn<0, 65535> {
    IntIn::lit(0)
}
fn default_embedded_log_size() -> IntIn<1_048_576, 1_073_741_824> {
    // 4 segments of 4 MiB: room for a frame of the largest default payload, and a small
    // part of an 8 GiB box (rumqttd 0.20's example keeps 4 x 100 MiB).
    IntIn::lit(16 * 1024 * 1024)
}
fn default_prefix() -> String {
    "edge".into()
}
fn default_frames_queue() -> String {
    "edge.frames".into()
}
fn default_events_exchange() -> String {
    "edge.events".into()
}
fn default_buffer() -> IntIn<1, 100_000> {
    IntIn::lit(256)
}
fn default_ttl() -> Dur {
    Dur::secs(30)
}
fn default_max_queue() -> IntIn<1, 1_000_000> {
    IntIn::lit(1000)
}
fn default_max_payload() -> IntIn<1024, 67_108_864> {
    IntIn::lit(4 * 1024 * 1024)
}
fn default_prefetch() -> IntIn<1, 1000> {
    IntIn::lit(2)
}
fn default_redeliver_after() -> Dur {
    Dur::secs(10)
}
fn default_redeliver_max() -> IntIn<0, 10> {
    IntIn::lit(2)
}
fn default_worker_group() -> String {
    "edge-workers".into()
}
fn default_window() -> IntIn<1, 1000> {
    IntIn::lit(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = Box<dyn Fn(&mut TransportConfig)>;

    #[test]
    fn transport_checks_name_each_bad_field() {
        let rows: Vec<(&str, Change, &str)> = vec![
            (
                "prefix with '+'",
                Box::new(|c| c.topic_prefix = "a/+".into()),
                "topic_prefix",
            ),
            (
                "empty queue",
                Box::new(|c| c.frames_queue = String::new()),
                "frames_queue",
            ),
            (
                "empty exchange",
                Box::new(|c| c.events_exchange = String::new()),
                "events_exchange",
            ),
            (
                "group with '/'",
                Box::new(|c| c.worker_group = "a/b".into()),
                "worker_group",
            ),
            (
                "group with '#'",
                Box::new(|c| c.worker_group = "#".into()),
                "worker_group",
            ),
            (
                "client key without its certificate",
                Box::new(|c| c.key_file = Some("client.key".into())),
                "key_file",
            ),
            (
                "client certificate without its key",
                Box::new(|c| c.cert_file = Some("client.pem".into())),
                "cert_file",
            ),
            (
                "redelivery too eager",
                Box::new(|c| c.redeliver_after = Dur::ms(10)),
                "redeliver_after",
            ),
        ];
        assert!(TransportConfig::default().check().is_empty());
        for (name, change, key) in rows {
            let mut c = TransportConfig::default();
            change(&mut c);
            let errs = c.check();
            assert_eq!(errs.len(), 1, "{name}: {errs:?}");
            assert_eq!(errs[0].0, key, "{name}");
        }
    }

    #[test]
    fn a_transport_section_parses_with_defaults_and_refuses_unknown_keys() {
        let c: TransportConfig = toml::from_str(
            "kind = \"amqp\"\namqp_url = \"amqps://u:p@rabbit/%2f\"\nredeliver_after = \"3s\"",
        )
        .unwrap();
        assert_eq!(c.kind, TransportKind::Amqp);
        assert_eq!(c.frames_queue, "edge.frames");
        assert_eq!(c.redeliver_after, Dur::secs(3));
        assert!(toml::from_str::<TransportConfig>("buffer = 3").is_err());
        assert!(toml::from_str::<TransportConfig>("mqtt_url = \"amqp://x\"").is_err());
    }
}
