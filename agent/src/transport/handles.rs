//! The three holders' handles: [`AgentTransport`] publishes frames, motion and
//! incidents and reads results back; [`WorkerTransport`] takes frames and publishes
//! results; [`UplinkTransport`] publishes events to a central broker and nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::buffer::Class;
use super::config::{TransportConfig, TransportKind};
use super::connection::{check_name, Connection, Link};
use super::embedded::{EmbeddedBroker, EmbeddedError};
use super::error::TransportError;
use super::link::{
    Backlog, Delivery, Frames, Inbound, LinkShared, ResultMessage, Results, Role, TransportStats,
};
use super::mqtt;
use super::state::Out;
use crate::sync::lock;
use crate::telemetry::metrics::{metrics, DropReason};
use crate::wire::frame::{self, FrameMessage};

/// The agent's side of the transport: publishes frames, motion, incidents and device
/// telemetry, reads detections and events back, and tells the scaler the backlog.
/// With `kind = "embedded"` it runs the broker.
pub struct AgentTransport {
    pub(crate) conn: Connection,
    /// The link to a central GPU pool on another AMQP broker (`scaling.remote_url`):
    /// offloaded frames go there, and their detections come back into the same results.
    offload: Option<Connection>,
    results: Mutex<Option<mpsc::Receiver<ResultMessage>>>,
    broker: Option<EmbeddedBroker>,
}

impl std::ops::Deref for AgentTransport {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl AgentTransport {
    /// Connects as the agent of `device` (see [`Connection`]); with `kind =
    /// "embedded"` starts the broker first. The link's tasks hang from `parent` (see
    /// [`crate::shutdown::Lifetime`]): cancelling it ends them at once, without a
    /// flush; a graceful stop calls [`AgentTransport::close`] first.
    pub async fn connect(
        cfg: &TransportConfig,
        device: &str,
        parent: &CancellationToken,
    ) -> Result<AgentTransport, TransportError> {
        Self::connect_with_offload(cfg, None, device, parent).await
    }

    /// Like [`AgentTransport::connect`], with a second link to a central GPU pool on
    /// another AMQP broker (`offload`: its URL, TLS files, the pool's queue as
    /// `frames_queue` and the exchange its workers answer on as `events_exchange`).
    /// Frames sent to a remote queue take that link; their detections come back on it
    /// into [`AgentTransport::results`], with the local ones.
    pub async fn connect_with_offload(
        cfg: &TransportConfig,
        offload: Option<&TransportConfig>,
        device: &str,
        parent: &CancellationToken,
    ) -> Result<AgentTransport, TransportError> {
        check_name("device", device, false)?;
        if let Some(o) = offload.filter(|o| o.kind != TransportKind::Amqp) {
            return Err(TransportError::Url {
                url: crate::values::secret::redact_url(o.mqtt_url.expose()),
                why: "the offload link to a GPU pool is AMQP only".into(),
            });
        }
        let shared = Arc::new(LinkShared::new(cfg, device, Role::Agent));
        let (results_tx, results_rx) = mpsc::channel(cfg.buffer_size.as_usize());
        let mut broker = None;
        let mut url = None;
        if cfg.kind == TransportKind::Embedded {
            let max_packet = 2 * cfg.max_payload.as_usize() + (1 << 20);
            let port = cfg.embedded_port.get() as u16;
            let log_size = cfg.embedded_log_size.as_usize();
            let downstream = url::Url::parse(cfg.mqtt_url.expose())
                .ok()
                .filter(|u| !u.username().is_empty() && u.password().is_some())
                .map(|u| {
                    (
                        mqtt::userinfo_decode(u.username()),
                        mqtt::userinfo_decode(u.password().unwrap_or("")),
                    )
                });
            // It waits (blocking) for the broker's listener.
            let b = tokio::task::spawn_blocking(move || {
                EmbeddedBroker::start_with(port, max_packet, log_size, downstream)
            })
            .await
            .map_err(|e| {
                TransportError::Embedded(EmbeddedError::Thread(std::io::Error::other(
                    e.to_string(),
                )))
            })??;
            url = Some(b.url());
            broker = Some(b);
        }
        let offload = match offload {
            Some(o) => {
                let shared = Arc::new(LinkShared::new(o, device, Role::Offload));
                Some(Connection::open(shared, None, parent, None, Some(results_tx.clone())).await?)
            }
            None => None,
        };
        let conn = Connection::open(shared, url, parent, None, Some(results_tx)).await?;
        Ok(AgentTransport {
            conn,
            offload,
            results: Mutex::new(Some(results_rx)),
            broker,
        })
    }

    /// Whether the offload link is up; None without one.
    pub fn offload_connected(&self) -> Option<bool> {
        self.offload.as_ref().map(Connection::is_connected)
    }

    /// The offload link's counters; None without one.
    pub fn offload_stats(&self) -> Option<&TransportStats> {
        self.offload.as_ref().map(Connection::stats)
    }

    /// The embedded broker's address when this agent runs one.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().map(|b| b.addr())
    }

    /// The transport settings a worker of this agent runs on: `cfg` with, when this
    /// agent runs the embedded broker, its port and its credentials for this run (in
    /// `mqtt_url`, a secret: it reaches workers on stdin and never a log).
    pub fn worker_config(&self, cfg: &TransportConfig) -> TransportConfig {
        let mut c = cfg.clone();
        if let (TransportKind::Embedded, Some(b)) = (c.kind, &self.broker) {
            c.embedded_port = crate::values::IntIn::lit(i64::from(b.addr().port()));
            c.mqtt_url = crate::values::SecretUrl::parse(&b.url())
                .expect("the embedded broker's URL is a valid MQTT URL");
        }
        c
    }

    /// Detections and events coming back to this agent (once).
    pub fn results(&self) -> Result<Results, TransportError> {
        lock(&self.results)
            .take()
            .map(|rx| Inbound { rx })
            .ok_or(TransportError::AlreadyTaken("results()"))
    }

    /// Publishes a frame for the workers; returns once it is buffered. On a full
    /// buffer the oldest frame is dropped and counted.
    pub fn publish_frame(&self, msg: FrameMessage) -> Result<(), TransportError> {
        self.publish_frame_to(msg, None)
    }

    /// Like [`AgentTransport::publish_frame`], to another frames queue
    /// (`scaling.remote_queue`: offload): on the offload link when there is one, else
    /// on the same AMQP broker (ignored on MQTT). The frame is tracked as unanswered
    /// like any other, on the link it took; its result comes back the same way.
    pub fn publish_frame_to(
        &self,
        msg: FrameMessage,
        queue: Option<&str>,
    ) -> Result<(), TransportError> {
        let (c, queue) = match (&self.offload, queue) {
            // The offload link's frames queue is the remote queue.
            (Some(o), Some(_)) => (o, None),
            _ => (&self.conn, queue),
        };
        let h = &msg.header;
        let max = c.shared.cfg.max_payload.as_usize();
        if msg.jpeg.len() > max {
            c.shared.count_dropped(DropReason::FrameOversized);
            return Err(TransportError::Oversized {
                camera: h.camera.clone(),
                seq: h.seq,
                size: msg.jpeg.len(),
                max,
            });
        }
        check_name("camera", &h.camera, false)?;
        let (exchange, key) = match &c.link {
            Link::Mqtt(_) => (String::new(), c.mqtt_topic(&h.device, None, "frames")),
            Link::Amqp(_) => (
                String::new(),
                queue
                    .unwrap_or(c.shared.cfg.frames_queue.as_str())
                    .to_string(),
            ),
        };
        let mut out = Out::new(Class::Frame, "frames", exchange, key);
        out.payload = frame::encode(&msg);
        out.frame = Some((h.camera.clone(), h.seq));
        let evicted = {
            let mut st = c.shared.state();
            let evicted = st.expect_answer(&h.camera, h.seq, out.clone(), Instant::now());
            if c.shared.role == Role::Agent {
                metrics().backlog.set(st.unanswered() as i64);
            }
            evicted
        };
        if evicted {
            c.shared.count_dropped(DropReason::UnansweredEvicted);
        }
        c.enqueue(out);
        Ok(())
    }

    /// Publishes motion or an incident for `camera` of this device. `kind` is
    /// `motion`, `events/<class>` or a bare class. Returns once buffered.
    pub fn publish_result(
        &self,
        camera: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let out = self
            .conn
            .result_out(&self.conn.shared.device, camera, kind, payload)?;
        self.conn.enqueue(out);
        Ok(())
    }

    /// Device-level telemetry such as the heartbeat: MQTT `{prefix}/{device}/{name}`,
    /// retained so a dashboard that connects later sees the last one; AMQP the events
    /// exchange with routing key `{device}.{name}` (two words, so the `*.*.class`
    /// bindings of event consumers and the agent's own results queue never match it).
    pub fn publish_device(&self, name: &str, payload: Bytes) -> Result<(), TransportError> {
        check_name("telemetry name", name, false)?;
        let (exchange, key, retain) = self.conn.device_route(name);
        self.conn.enqueue_event(exchange, key, retain, payload);
        Ok(())
    }

    /// MQTT only: a retained message on a topic outside this agent's prefix (Home
    /// Assistant discovery under `homeassistant/`). An empty payload clears it.
    pub fn publish_retained(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        if !self.is_mqtt() {
            return Err(TransportError::MqttOnly("a retained message"));
        }
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(TransportError::BadName {
                what: "topic",
                value: topic.to_string(),
            });
        }
        self.conn
            .enqueue_event(String::new(), topic.to_string(), true, payload);
        Ok(())
    }

    /// MQTT: publishes every unanswered frame again now, for when a worker becomes
    /// ready after none was: the broker dropped what was published meanwhile, and
    /// waiting for `redeliver_after` would add seconds to a cold start. A copy that did
    /// reach a worker is dropped by it (it still holds or already acked the frame).
    /// Returns how many were sent again; AMQP (whose queue kept them) sends none.
    pub fn resend_unanswered(&self) -> usize {
        let c = &self.conn;
        if !self.is_mqtt() {
            return 0;
        }
        let mut st = c.shared.state();
        let r = st.resend_unanswered(true, Instant::now());
        c.link.kick(&mut st, &c.shared);
        drop(st);
        for _ in 0..r.sent {
            c.shared.stats.bump("resent_on_ready");
        }
        c.shared.count_resent(&r);
        r.sent
    }

    /// The backlog for the scaler.
    pub async fn backlog(&self) -> Result<Backlog, TransportError> {
        let c = &self.conn;
        let unanswered = c.shared.state().unanswered() as u64;
        let (ready, consumers) = match &c.link {
            Link::Amqp(a) => {
                let (r, c) = a.queue_counts(&c.shared.cfg.frames_queue).await?;
                (Some(r), Some(c))
            }
            Link::Mqtt(_) => (None, None),
        };
        Ok(Backlog {
            ready,
            consumers,
            unanswered,
        })
    }

    /// Says `offline` on the status topic (MQTT), then flushes and closes within
    /// `timeout` (see [`Connection`]), the offload link alongside. Takes `&self`:
    /// other holders of the handle (health, scaler) need not be gone; what they
    /// publish afterwards fails.
    pub async fn close(&self, timeout: Duration) -> bool {
        if self.is_mqtt() {
            self.conn
                .enqueue(mqtt::status_out(&self.conn.shared, b"offline"));
        }
        let offload = async {
            match &self.offload {
                Some(o) => o.close(timeout).await,
                None => true,
            }
        };
        let (local, remote) = tokio::join!(self.conn.close(timeout), offload);
        local && remote
    }
}

/// A worker's side of the transport: takes frames (each acked or rejected through its
/// [`Delivery`]) and publishes detections, snapshots and events for the frame's device.
pub struct WorkerTransport {
    pub(crate) conn: Connection,
    frames: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

impl std::ops::Deref for WorkerTransport {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl WorkerTransport {
    /// Connects as a worker for `device` (`+`: every device); see
    /// [`AgentTransport::connect`] for `parent`. On the embedded broker it needs
    /// `transport.embedded_port`, the agent's broker port, and the credentials of the
    /// agent's run in `transport.mqtt_url` (see [`AgentTransport::worker_config`]).
    pub async fn connect(
        cfg: &TransportConfig,
        device: &str,
        parent: &CancellationToken,
    ) -> Result<WorkerTransport, TransportError> {
        check_name("device", device, true)?;
        let url = match cfg.kind {
            TransportKind::Embedded if cfg.embedded_port.get() == 0 => {
                return Err(TransportError::EmbeddedPortUnknown)
            }
            TransportKind::Embedded => {
                let (user, password) = url::Url::parse(cfg.mqtt_url.expose())
                    .map(|u| (u.username().to_string(), u.password().map(str::to_string)))
                    .unwrap_or_default();
                Some(super::embedded::client_url(
                    cfg.embedded_port.get() as u16,
                    &user,
                    password.as_deref().unwrap_or(""),
                ))
            }
            _ => None,
        };
        let shared = Arc::new(LinkShared::new(cfg, device, Role::Worker));
        // AMQP: the prefetch limit bounds it. MQTT: the broker's in-flight window (20
        // on Mosquitto, 100 on the embedded broker) does.
        let (frames_tx, frames_rx) = mpsc::channel(cfg.prefetch.as_usize().max(256));
        let conn = Connection::open(shared, url, parent, Some(frames_tx), None).await?;
        Ok(WorkerTransport {
            conn,
            frames: Mutex::new(Some(frames_rx)),
        })
    }

    /// The frames for this worker (once).
    pub fn frames(&self) -> Result<Frames, TransportError> {
        lock(&self.frames)
            .take()
            .map(|rx| Inbound { rx })
            .ok_or(TransportError::AlreadyTaken("frames()"))
    }

    /// Waits until this transport receives frames. MQTT drops a frame published while
    /// no consumer is subscribed, so a worker announces itself ready only after its
    /// SUBACK; an AMQP queue keeps frames, so there is nothing to wait for. False on
    /// timeout.
    pub async fn consuming(&self, timeout: Duration) -> bool {
        if !self.is_mqtt() {
            return true;
        }
        let mut rx = self.conn.shared.subscribed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Queues a result for `device`'s `camera` (the frame's device: a worker may
    /// serve several; `kind` is `detections`, `events/<class>` or a bare class) now,
    /// so results keep their order, and returns the broker's confirmation to wait on
    /// later: a worker acks a frame only after its answer is
    /// confirmed, without waiting a broker round trip before the next frame.
    pub fn publish_result_then(
        &self,
        device: &str,
        camera: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<impl Future<Output = Result<(), TransportError>> + Send + 'static, TransportError>
    {
        let out = self.conn.result_out(device, camera, kind, payload)?;
        Ok(self.conn.enqueue_confirmed(out))
    }

    /// Like [`WorkerTransport::publish_result_then`], returning once the broker
    /// confirmed it.
    pub async fn publish_result_confirmed(
        &self,
        device: &str,
        camera: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.publish_result_then(device, camera, kind, payload)?
            .await
    }

    /// Publishes an event snapshot for `device`'s `camera` and returns once the
    /// broker confirmed it, so the event that refers to it can follow.
    pub async fn publish_snapshot_for(
        &self,
        device: &str,
        camera: &str,
        snapshot_id: &str,
        jpeg: Bytes,
    ) -> Result<(), TransportError> {
        let out =
            self.conn
                .result_out(device, camera, &format!("snapshots/{snapshot_id}"), jpeg)?;
        self.conn.enqueue_confirmed(out).await
    }

    /// Flushes and closes within `timeout` (see [`Connection`]).
    pub async fn close(&self, timeout: Duration) -> bool {
        self.conn.close(timeout).await
    }
}

/// The uplink's side: publishes events to a central broker, each with the broker's
/// confirmation to wait on (the spool removes an event only then), and device state
/// (status, health). It consumes nothing and never carries frames. It says `online` at
/// each connection and `offline` at a clean close: on MQTT in the retained
/// `{prefix}/{device}/status`, whose last will says `lost` (its session is persistent);
/// on AMQP, which has no last will, in the status queue (see `amqp::status_out`).
pub struct UplinkTransport {
    pub(crate) conn: Connection,
}

impl std::ops::Deref for UplinkTransport {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl UplinkTransport {
    /// Connects to the central broker as `device`'s uplink (in the background, see
    /// [`Connection`]); `cfg.kind` is `mqtt` or `amqp`.
    pub async fn connect(
        cfg: &TransportConfig,
        device: &str,
        parent: &CancellationToken,
    ) -> Result<UplinkTransport, TransportError> {
        check_name("device", device, false)?;
        if cfg.kind == TransportKind::Embedded {
            return Err(TransportError::BadName {
                what: "uplink kind",
                value: "embedded".into(),
            });
        }
        let shared = Arc::new(LinkShared::new(cfg, device, Role::Uplink));
        let conn = Connection::open(shared, None, parent, None, None).await?;
        Ok(UplinkTransport { conn })
    }

    /// Queues an event about `camera` (`kind` as for
    /// [`AgentTransport::publish_result`]) and returns the broker's confirmation to
    /// wait on. Messages leave in the order they were queued; those not confirmed
    /// when the connection drops are sent again first, in order, after it comes back.
    pub fn publish_event_then(
        &self,
        camera: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<impl Future<Output = Result<(), TransportError>> + Send + 'static, TransportError>
    {
        let out = self
            .conn
            .result_out(&self.conn.shared.device, camera, kind, payload)?;
        Ok(self.conn.enqueue_confirmed(out))
    }

    /// Device state (`health`, ...): the latest value counts, so it is not spooled;
    /// retained on MQTT (see [`AgentTransport::publish_device`]).
    pub fn publish_device(&self, name: &str, payload: Bytes) -> Result<(), TransportError> {
        check_name("telemetry name", name, false)?;
        let (exchange, key, retain) = self.conn.device_route(name);
        self.conn.enqueue_event(exchange, key, retain, payload);
        Ok(())
    }

    /// Messages queued and not yet confirmed by the broker (the spool's in-flight
    /// window is kept under the outbox size, so none is ever dropped to make room).
    pub fn capacity(&self) -> usize {
        self.conn.shared.cfg.buffer_size.as_usize()
    }

    /// Says `offline` (MQTT: the retained status; AMQP: the status queue), then
    /// flushes and closes within `timeout`.
    pub async fn close(&self, timeout: Duration) -> bool {
        let status = match &self.conn.link {
            Link::Mqtt(_) => mqtt::status_out(&self.conn.shared, b"offline"),
            Link::Amqp(_) => super::amqp::status_out(&self.conn.shared, b"offline"),
        };
        self.conn.enqueue(status);
        self.conn.close(timeout).await
    }
}

/// The escalator's way out (shared: the results task and telemetry hold the same handle).
impl crate::escalate::escalator::Publish for Arc<AgentTransport> {
    type Error = TransportError;
    fn publish_motion(&self, camera: &str, payload: Bytes) -> Result<(), TransportError> {
        self.publish_result(camera, "motion", payload)
    }
    fn publish_frame(&self, msg: FrameMessage, queue: Option<&str>) -> Result<(), TransportError> {
        self.publish_frame_to(msg, queue)
    }
}
