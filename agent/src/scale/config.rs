//! Worker scaling (`[scaling]`), with KEDA's names so operators recognise them.

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use crate::transport::{TransportConfig, TransportKind};
use crate::values::{AmqpSchemes, Dur, IntIn, SecretUrl};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    #[serde(default)]
    pub min_workers: IntIn<0, 64>,
    #[serde(default = "default_max")]
    pub max_workers: IntIn<1, 64>,
    /// Backlog at or above which workers start from zero.
    #[serde(default = "default_activation")]
    pub activation_backlog: IntIn<1, 1_000_000>,
    /// Target backlog per worker.
    #[serde(default = "default_per_worker")]
    pub backlog_per_worker: IntIn<1, 1_000_000>,
    #[serde(default = "default_polling")]
    pub polling_interval: Dur,
    /// Idle time before scaling back to `min_workers`.
    #[serde(default = "default_cooldown")]
    pub cooldown_period: Dur,
    /// Start a worker at a camera's first frame with motion, while the event is still
    /// being confirmed (`motion.start_frames`), so that the worker's start overlaps the
    /// confirmation; a worker started for motion that never became an event goes again
    /// after `cooldown_period`. Off: workers start at the first escalated frame.
    #[serde(default = "yes")]
    pub prewarm_on_motion: bool,
    /// Time a worker gets to finish after SIGTERM before it is killed.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// A worker that has not said it is ready this long after its start (hung while
    /// loading its model) is killed and the pool backs off. A first TensorRT engine
    /// build on a Jetson can take minutes: raise it there.
    #[serde(default = "default_ready_timeout")]
    pub worker_ready_timeout: Dur,
    /// Offload to this queue when local workers cannot start or are all busy (unset:
    /// never). An `edge-agent scaler` (or the KEDA deployment) on a GPU server consumes
    /// it with `transport.frames_queue` set to this name. Without `remote_url` it is on
    /// the frames transport's AMQP broker and results come back on its events exchange
    /// like local ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_queue: Option<String>,
    /// The GPU pool's own AMQP broker (`amqp://` or `amqps://`): offloaded frames take a
    /// link of their own there, so the frames transport can stay on this box (the
    /// embedded broker), and their detections come back on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<SecretUrl<AmqpSchemes>>,
    /// A file holding the pool broker's password, put into `remote_url` at load
    /// (looked up like `transport.password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_password_file: Option<PathBuf>,
    /// CA bundle for an `amqps://` `remote_url` (system roots otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with the pool's broker, with
    /// `remote_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_key_file: Option<PathBuf>,
    /// The topic exchange the pool's workers publish detections to (their
    /// `transport.events_exchange`); with `remote_url` only. Default
    /// `transport.events_exchange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_exchange: Option<String>,
    /// Local backlog (frames waiting and held by local workers) above which frames go
    /// remote once local workers are at `max_workers`.
    #[serde(default = "default_offload")]
    pub offload_backlog: IntIn<1, 1_000_000>,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            min_workers: IntIn::lit(0),
            max_workers: default_max(),
            activation_backlog: default_activation(),
            backlog_per_worker: default_per_worker(),
            polling_interval: default_polling(),
            cooldown_period: default_cooldown(),
            prewarm_on_motion: true,
            grace_period: default_grace(),
            worker_ready_timeout: default_ready_timeout(),
            remote_queue: None,
            remote_url: None,
            remote_password_file: None,
            remote_ca_file: None,
            remote_cert_file: None,
            remote_key_file: None,
            remote_exchange: None,
            offload_backlog: default_offload(),
        }
    }
}

impl ScalingConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.min_workers.get() > self.max_workers.get() {
            errs.push((
                "min_workers".into(),
                format!(
                    "must not exceed max_workers ({}), got {}",
                    self.max_workers.get(),
                    self.min_workers.get()
                ),
            ));
        }
        if let Some(q) = &self.remote_queue {
            if q.is_empty() || q.contains(['#', '+', ' ']) {
                errs.push((
                    "remote_queue".into(),
                    format!("must be non-empty without '#', '+' or spaces, got {q:?}"),
                ));
            }
        }
        if self.remote_queue.is_none() {
            let set = [
                ("remote_url", self.remote_url.is_some()),
                ("remote_ca_file", self.remote_ca_file.is_some()),
                ("remote_cert_file", self.remote_cert_file.is_some()),
                ("remote_key_file", self.remote_key_file.is_some()),
                ("remote_exchange", self.remote_exchange.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, is)| *is) {
                errs.push((
                    key.to_string(),
                    "needs scaling.remote_queue (where offloaded frames go)".into(),
                ));
            }
        } else if self.remote_url.is_none() {
            let set = [
                ("remote_ca_file", self.remote_ca_file.is_some()),
                ("remote_cert_file", self.remote_cert_file.is_some()),
                ("remote_key_file", self.remote_key_file.is_some()),
                ("remote_exchange", self.remote_exchange.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, is)| *is) {
                errs.push((
                    key.to_string(),
                    "needs scaling.remote_url (without it the remote queue is on the frames transport's broker)".into(),
                ));
            }
        }
        if let Some((key, other)) = crate::transport::config::client_cert_pair(
            &self.remote_cert_file,
            &self.remote_key_file,
        ) {
            errs.push((
                format!("remote_{key}"),
                format!("needs remote_{other} as well (mutual TLS)"),
            ));
        }
        if self.remote_exchange.as_ref().is_some_and(|x| x.is_empty()) {
            errs.push(("remote_exchange".into(), "must not be empty".into()));
        }
        if self.polling_interval.get().is_zero() {
            errs.push(("polling_interval".into(), "must be greater than 0".into()));
        }
        if self.worker_ready_timeout.get().is_zero() {
            errs.push((
                "worker_ready_timeout".into(),
                "must be greater than 0".into(),
            ));
        }
        errs
    }
}

impl ScalingConfig {
    /// The offload link's settings: None unless `remote_queue` and `remote_url` are
    /// both set (without `remote_url` the remote queue is on the frames transport). The
    /// local transport's limits (payload, outbox, frame TTL, queue length: the pool
    /// declares its queue with the same arguments) with the pool's broker, TLS files,
    /// queue and exchange.
    pub fn remote_transport(&self, local: &TransportConfig) -> Option<TransportConfig> {
        let (queue, url) = (self.remote_queue.as_ref()?, self.remote_url.as_ref()?);
        Some(TransportConfig {
            kind: TransportKind::Amqp,
            amqp_url: url.clone(),
            password_file: None,
            ca_file: self.remote_ca_file.clone(),
            cert_file: self.remote_cert_file.clone(),
            key_file: self.remote_key_file.clone(),
            frames_queue: queue.clone(),
            events_exchange: self
                .remote_exchange
                .clone()
                .unwrap_or_else(|| local.events_exchange.clone()),
            ..local.clone()
        })
    }
}

fn yes() -> bool {
    true
}
fn default_max() -> IntIn<1, 64> {
    IntIn::lit(1)
}
fn default_activation() -> IntIn<1, 1_000_000> {
    IntIn::lit(1)
}
fn default_per_worker() -> IntIn<1, 1_000_000> {
    IntIn::lit(4)
}
fn default_polling() -> Dur {
    Dur::ms(250)
}
fn default_cooldown() -> Dur {
    Dur::secs(30)
}
fn default_grace() -> Dur {
    Dur::secs(10)
}
fn default_ready_timeout() -> Dur {
    Dur::secs(300)
}
fn default_offload() -> IntIn<1, 1_000_000> {
    IntIn::lit(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offload_link_takes_the_pools_broker_queue_and_exchange_and_the_local_limits() {
        let local = TransportConfig {
            frame_ttl: Dur::secs(9),
            events_exchange: "edge.events".into(),
            ..TransportConfig::default()
        };
        let same_broker = ScalingConfig {
            remote_queue: Some("pool.frames".into()),
            ..ScalingConfig::default()
        };
        assert_eq!(same_broker.remote_transport(&local), None);
        let c: ScalingConfig = toml::from_str(
            "remote_queue = \"pool.frames\"\nremote_url = \"amqps://edge@pool/%2f\"\nremote_ca_file = \"ca.pem\"\nremote_exchange = \"edge.pool\"",
        )
        .unwrap();
        assert!(c.check().is_empty(), "{:?}", c.check());
        let t = c.remote_transport(&local).unwrap();
        assert_eq!(t.kind, TransportKind::Amqp);
        assert_eq!(t.amqp_url.expose(), "amqps://edge@pool/%2f");
        assert_eq!(t.frames_queue, "pool.frames");
        assert_eq!(t.events_exchange, "edge.pool");
        assert_eq!(t.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(
            t.frame_ttl,
            Dur::secs(9),
            "the pool's queue has the same arguments"
        );
        let c = ScalingConfig {
            remote_exchange: None,
            ..c
        };
        assert_eq!(
            c.remote_transport(&local).unwrap().events_exchange,
            "edge.events"
        );
    }
}
