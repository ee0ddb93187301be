//! Uplink settings (`[uplink]`, `[uplink.spool]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::transport::{TransportConfig, TransportKind};
use crate::values::{AmqpSchemes, Dur, IntIn, MqttSchemes, SecretUrl, UplinkSchemes};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    /// No uplink: events go on the frames transport, as without this section.
    #[default]
    None,
    Mqtt,
    Amqp,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    #[serde(default)]
    pub kind: UplinkKind,
    /// The central broker: `mqtt://`/`mqtts://` for `kind = "mqtt"`,
    /// `amqp://`/`amqps://` for `kind = "amqp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl<UplinkSchemes>>,
    /// A file holding the broker password, put into `url` at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA bundle for `mqtts://` and `amqps://` (system roots otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// MQTT: topics are `{topic_prefix}/{device}/{camera}/...`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// AMQP: the topic exchange events are published to.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Send each detections message up as well (many messages: off by default).
    #[serde(default)]
    pub detections: bool,
    #[serde(default)]
    pub spool: SpoolConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Where the spool file lives; default `$STATE_DIRECTORY/uplink-spool` (systemd),
    /// else under `$XDG_STATE_HOME` or `~/.local/state` (the log names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Bytes of events kept while the uplink is down; the oldest go first.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: IntIn<4096, 1_099_511_627_776>,
    /// Events older than this are dropped unsent (counted).
    #[serde(default = "default_max_age")]
    pub max_age: Dur,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            kind: UplinkKind::None,
            url: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            topic_prefix: default_prefix(),
            exchange: default_exchange(),
            detections: false,
            spool: SpoolConfig::default(),
        }
    }
}

impl UplinkConfig {
    /// Problems as (key, message), keys relative to `uplink`.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.spool.max_age.get() < std::time::Duration::from_secs(1) {
            errs.push((
                "spool.max_age".into(),
                format!("must be at least 1s, got {:?}", self.spool.max_age),
            ));
        }
        let kind = match self.kind {
            UplinkKind::None => return errs,
            UplinkKind::Mqtt => "mqtt",
            UplinkKind::Amqp => "amqp",
        };
        match &self.url {
            None => errs.push(("url".into(), format!("is required with kind = \"{kind}\""))),
            Some(u) => {
                let amqp = u.scheme().starts_with("amqp");
                if amqp != (self.kind == UplinkKind::Amqp) {
                    errs.push((
                        "url".into(),
                        format!("scheme {:?} does not match kind = \"{kind}\"", u.scheme()),
                    ));
                }
            }
        }
        if let Some((key, other)) =
            crate::transport::config::client_cert_pair(&self.cert_file, &self.key_file)
        {
            errs.push((key.into(), format!("needs {other} as well (mutual TLS)")));
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['#', '+', ' ']) {
            errs.push((
                "topic_prefix".into(),
                format!(
                    "must be non-empty without '#', '+' or spaces, got {:?}",
                    self.topic_prefix
                ),
            ));
        }
        if self.exchange.is_empty() {
            errs.push(("exchange".into(), "must not be empty".into()));
        }
        errs
    }

    /// The transport settings of the uplink connection; None for `kind = "none"`.
    pub fn transport(&self) -> Option<TransportConfig> {
        let url = self.url.as_ref()?;
        let mut t = TransportConfig {
            password_file: None,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            topic_prefix: self.topic_prefix.clone(),
            events_exchange: self.exchange.clone(),
            ..TransportConfig::default()
        };
        match self.kind {
            UplinkKind::None => return None,
            UplinkKind::Mqtt => {
                t.kind = TransportKind::Mqtt;
                t.mqtt_url = SecretUrl::<MqttSchemes>::parse(url.expose()).ok()?;
            }
            UplinkKind::Amqp => {
                t.kind = TransportKind::Amqp;
                t.amqp_url = SecretUrl::<AmqpSchemes>::parse(url.expose()).ok()?;
            }
        }
        Some(t)
    }

    /// The spool directory: `spool.dir`, else the default (see [`SpoolConfig::dir`]).
    pub fn spool_dir(&self) -> PathBuf {
        if let Some(d) = &self.spool.dir {
            return d.clone();
        }
        let env = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
        if let Some(dir) = env("STATE_DIRECTORY") {
            // systemd may pass several directories separated by ':'; ours is the first.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            return PathBuf::from(first).join("uplink-spool");
        }
        if let Some(dir) = env("XDG_STATE_HOME") {
            return PathBuf::from(dir).join("edge-agent/uplink-spool");
        }
        match env("HOME") {
            Some(h) => PathBuf::from(h).join(".local/state/edge-agent/uplink-spool"),
            None => PathBuf::from("edge-agent-uplink-spool"),
        }
    }

    pub fn spool_limits(&self) -> super::spool::Limits {
        super::spool::Limits {
            max_bytes: self.spool.max_bytes.get() as u64,
            max_age_ms: self.spool.max_age.get().as_millis() as u64,
        }
    }
}

fn default_prefix() -> String {
    "edge".into()
}
fn default_exchange() -> String {
    "edge.events".into()
}
fn default_max_bytes() -> IntIn<4096, 1_099_511_627_776> {
    IntIn::lit(256 * 1024 * 1024)
}
fn default_max_age() -> Dur {
    Dur::secs(7 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = Box<dyn Fn(&mut UplinkConfig)>;

    fn mqtt() -> UplinkConfig {
        toml::from_str("kind = \"mqtt\"\nurl = \"mqtts://edge@central:8883\"").unwrap()
    }

    #[test]
    fn uplink_checks_name_each_bad_key() {
        let rows: Vec<(&str, Change, &str, &str)> = vec![
            (
                "no url",
                Box::new(|c| c.url = None),
                "url",
                "is required with kind = \"mqtt\"",
            ),
            (
                "amqp url for mqtt",
                Box::new(|c| c.url = Some(SecretUrl::parse("amqp://central/%2f").unwrap())),
                "url",
                "scheme \"amqp\" does not match kind = \"mqtt\"",
            ),
            (
                "key without certificate",
                Box::new(|c| c.key_file = Some("k.pem".into())),
                "key_file",
                "needs cert_file as well (mutual TLS)",
            ),
            (
                "prefix with '#'",
                Box::new(|c| c.topic_prefix = "a/#".into()),
                "topic_prefix",
                "must be non-empty without '#', '+' or spaces, got \"a/#\"",
            ),
            (
                "empty exchange",
                Box::new(|c| c.exchange = String::new()),
                "exchange",
                "must not be empty",
            ),
            (
                "spool age zero",
                Box::new(|c| c.spool.max_age = Dur::ms(0)),
                "spool.max_age",
                "must be at least 1s, got 0s",
            ),
        ];
        assert!(mqtt().check().is_empty());
        assert!(UplinkConfig::default().check().is_empty());
        for (name, change, key, message) in rows {
            let mut c = mqtt();
            change(&mut c);
            let errs = c.check();
            assert_eq!(errs, [(key.to_string(), message.to_string())], "{name}");
        }
    }

    #[test]
    fn an_uplink_section_becomes_the_transport_settings_of_its_kind() {
        assert_eq!(UplinkConfig::default().transport(), None);
        let t = mqtt().transport().unwrap();
        assert_eq!(t.kind, TransportKind::Mqtt);
        assert_eq!(t.mqtt_url.expose(), "mqtts://edge@central:8883");
        let c: UplinkConfig = toml::from_str(
            "kind = \"amqp\"\nurl = \"amqps://edge@central/%2f\"\nexchange = \"fleet\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[spool]\nmax_bytes = 1048576\nmax_age = \"1h\"",
        )
        .unwrap();
        let t = c.transport().unwrap();
        assert_eq!(t.kind, TransportKind::Amqp);
        assert_eq!(t.events_exchange, "fleet");
        assert_eq!(t.cert_file.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(
            c.spool_limits(),
            crate::uplink::spool::Limits {
                max_bytes: 1 << 20,
                max_age_ms: 3_600_000
            }
        );
        assert!(toml::from_str::<UplinkConfig>("kind = \"kafka\"").is_err());
        assert!(toml::from_str::<UplinkConfig>("[spool]\nsize = 3").is_err());
        assert!(toml::from_str::<UplinkConfig>("url = \"rtsp://cam\"").is_err());
    }
}
