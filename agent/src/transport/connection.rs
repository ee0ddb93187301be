//! One connection to the broker: the owner task of the link (AMQP or MQTT), opened in
//! the background and reconnected by that task, and the ticker that expires frames.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::buffer::Class;
use super::config::TransportKind;
use super::error::TransportError;
use super::link::{Delivery, LinkShared, ResultMessage, Role, TransportStats};
use super::state::{Out, State};
use super::{amqp, mqtt};
use crate::telemetry::metrics::metrics;

pub(crate) enum Link {
    Mqtt(mqtt::MqttLink),
    Amqp(amqp::AmqpLink),
}

impl Link {
    pub(crate) fn kick(&self, st: &mut State, shared: &LinkShared) {
        if let Link::Mqtt(m) = self {
            m.pump(st, shared);
        }
    }
}

/// What both sides' handles share: the connection, its state and its counters. Each
/// handle derefs to it for these few read-only operations and the flush.
pub struct Connection {
    pub(crate) shared: Arc<LinkShared>,
    pub(crate) link: Link,
    pub(crate) cancel: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Connection {
    /// Connects (in the background: the first connection and every reconnection are
    /// made by the owner task, so this returns at once unless the settings are bad).
    pub(crate) async fn open(
        shared: Arc<LinkShared>,
        url: Option<String>,
        parent: &CancellationToken,
        frames_tx: Option<mpsc::Sender<Delivery>>,
        results_tx: Option<mpsc::Sender<ResultMessage>>,
    ) -> Result<Connection, TransportError> {
        let cancel = parent.child_token();
        let link = match (&shared.cfg.kind, url) {
            (TransportKind::Amqp, _) => Link::Amqp(amqp::start(
                shared.clone(),
                cancel.clone(),
                frames_tx,
                results_tx,
            )?),
            (_, url) => {
                let url = url.unwrap_or_else(|| shared.cfg.mqtt_url.expose().to_string());
                Link::Mqtt(mqtt::start(
                    shared.clone(),
                    &url,
                    cancel.clone(),
                    frames_tx,
                    results_tx,
                )?)
            }
        };
        spawn_ticker(shared.clone(), &link, cancel.clone());
        Ok(Connection {
            shared,
            link,
            cancel,
        })
    }

    pub fn stats(&self) -> &TransportStats {
        &self.shared.stats
    }

    /// The transport's sign of life: it beats while its ticker turns (connected or
    /// reconnecting), not while its state is stuck.
    pub fn beat(&self) -> &crate::telemetry::notify::Beat {
        &self.shared.beat
    }

    /// True while the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.state().connected()
    }

    /// True when this transport speaks MQTT (embedded broker or an external one).
    pub fn is_mqtt(&self) -> bool {
        matches!(self.link, Link::Mqtt(_))
    }

    /// Waits until every buffered message is confirmed by the broker; false on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.state().is_drained() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Flushes, then closes the connection (MQTT: DISCONNECT, so the broker does not
    /// publish the last will), all within `timeout`. True when everything buffered was
    /// confirmed and the connection closed cleanly.
    pub(crate) async fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Most of the time for the flush; the rest for the goodbye.
        let flushed = self.flush(timeout.mul_f32(0.8)).await;
        let left = deadline.saturating_duration_since(Instant::now());
        let closed = match &self.link {
            // The owner tasks write the DISCONNECT, then end by themselves.
            Link::Mqtt(m) => m.disconnect(left).await,
            Link::Amqp(a) => a.close(left).await,
        };
        self.cancel.cancel();
        flushed && closed
    }

    pub(crate) fn mqtt_topic(&self, device: &str, camera: Option<&str>, suffix: &str) -> String {
        let prefix = &self.shared.cfg.topic_prefix;
        match camera {
            Some(c) => format!("{prefix}/{device}/{c}/{suffix}"),
            None => format!("{prefix}/{device}/{suffix}"),
        }
    }

    /// Adds a message to the outbox (drop policy applied and counted).
    pub(crate) fn enqueue(&self, out: Out) {
        let mut st = self.shared.state();
        let dropped = st.push(out);
        self.link.kick(&mut st, &self.shared);
        drop(st);
        self.shared.wake.notify_one();
        if let Some(class) = dropped {
            self.shared.count_overflow(class);
        }
    }

    /// Queues `out` now (so messages keep their order) and returns the broker's
    /// confirmation to wait on.
    pub(crate) fn enqueue_confirmed(
        &self,
        mut out: Out,
    ) -> impl Future<Output = Result<(), TransportError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        out.confirm = Some(tx);
        self.enqueue(out);
        async move { rx.await.map_err(|_| TransportError::Dropped) }
    }

    pub(crate) fn result_out(
        &self,
        device: &str,
        camera: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<Out, TransportError> {
        check_name("device", device, false)?;
        check_name("camera", camera, false)?;
        let (label, mqtt_suffix, amqp_suffix) = result_kind(kind)?;
        let (exchange, key) = match &self.link {
            Link::Mqtt(_) => (
                String::new(),
                self.mqtt_topic(device, Some(camera), &mqtt_suffix),
            ),
            Link::Amqp(_) => (
                self.shared.cfg.events_exchange.clone(),
                format!("{device}.{camera}.{amqp_suffix}"),
            ),
        };
        let mut out = Out::new(Class::Event, label, exchange, key);
        out.payload = payload;
        Ok(out)
    }

    /// Where device-level telemetry `name` goes: MQTT `{prefix}/{device}/{name}`,
    /// retained; AMQP the events exchange, routing key `{device}.{name}`.
    pub(crate) fn device_route(&self, name: &str) -> (String, String, bool) {
        let device = &self.shared.device;
        match &self.link {
            Link::Mqtt(_) => (String::new(), self.mqtt_topic(device, None, name), true),
            Link::Amqp(_) => (
                self.shared.cfg.events_exchange.clone(),
                format!("{device}.{name}"),
                false,
            ),
        }
    }

    pub(crate) fn enqueue_event(
        &self,
        exchange: String,
        key: String,
        retain: bool,
        payload: Bytes,
    ) {
        let mut out = Out::new(Class::Event, "status", exchange, key);
        out.retain = retain;
        out.payload = payload;
        self.enqueue(out);
    }
}

/// Redelivery (MQTT) and expiry of unanswered frames, on a timer.
pub(crate) fn spawn_ticker(shared: Arc<LinkShared>, link: &Link, cancel: CancellationToken) {
    let every = (shared.cfg.redeliver_after.get() / 4)
        .clamp(Duration::from_millis(25), Duration::from_secs(1));
    let pump = match link {
        Link::Mqtt(m) => Some(m.clone()),
        Link::Amqp(_) => None,
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut st = shared.state();
            let r = st.resend_unanswered(false, Instant::now());
            if shared.role == Role::Agent {
                metrics().backlog.set(st.unanswered() as i64);
            }
            if let Some(m) = &pump {
                m.pump(&mut st, &shared);
            }
            drop(st);
            shared.beat.beat();
            shared.wake.notify_one();
            for _ in 0..r.sent {
                shared.stats.bump("redelivered");
            }
            shared.count_resent(&r);
        }
    });
}

/// Validates a name used in topics and routing keys. Workers may serve every device
/// (`+`).
pub(crate) fn check_name(
    what: &'static str,
    value: &str,
    wildcard_ok: bool,
) -> Result<(), TransportError> {
    if wildcard_ok && value == "+" {
        return Ok(());
    }
    crate::values::Ident::new(value)
        .map(|_| ())
        .map_err(|_| TransportError::BadName {
            what,
            value: value.to_string(),
        })
}

/// Maps a result kind to (metric label, MQTT topic suffix, AMQP routing-key suffix).
pub(crate) fn result_kind(kind: &str) -> Result<(&'static str, String, String), TransportError> {
    let bad = || TransportError::BadName {
        what: "result kind",
        value: kind.to_string(),
    };
    let ident = |s: &str| crate::values::Ident::new(s).map_err(|_| bad());
    match kind {
        "motion" => Ok(("motion", "motion".into(), "motion".into())),
        "detections" => Ok(("detections", "detections".into(), "detections".into())),
        // Finished clip files (`schemas/clip.v1.json`).
        "clips" => Ok(("clips", "clips".into(), "clips".into())),
        k if k.starts_with("snapshots/") => {
            let id = &k["snapshots/".len()..];
            ident(id)?;
            Ok(("snapshot", k.to_string(), format!("snapshot.{id}")))
        }
        k => {
            let class = k.strip_prefix("events/").unwrap_or(k);
            ident(class)?;
            if matches!(
                class,
                "snapshots" | "snapshot" | "frames" | "status" | "clips"
            ) {
                return Err(bad());
            }
            Ok(("events", format!("events/{class}"), class.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_kinds_map_to_topics_and_routing_keys() {
        let rows = [
            ("motion", Some(("motion", "motion", "motion"))),
            (
                "detections",
                Some(("detections", "detections", "detections")),
            ),
            ("fire", Some(("events", "events/fire", "fire"))),
            ("events/gun", Some(("events", "events/gun", "gun"))),
            (
                "snapshots/42",
                Some(("snapshot", "snapshots/42", "snapshot.42")),
            ),
            ("clips", Some(("clips", "clips", "clips"))),
            ("events/clips", None),
            ("events/a.b", None),
            ("events/#", None),
            ("", None),
            ("snapshots/x/y", None),
            ("frames", None),
        ];
        for (kind, want) in rows {
            let got = result_kind(kind).ok();
            let got = got.as_ref().map(|(a, b, c)| (*a, b.as_str(), c.as_str()));
            assert_eq!(got, want, "kind {kind:?}");
        }
    }
}
