//! The transport handles: the same API over MQTT (embedded broker or Mosquitto) and
//! AMQP (RabbitMQ), one type per side. [`AgentTransport`] publishes frames, motion and
//! incidents and reads results back; [`WorkerTransport`] takes frames and publishes
//! results. Each offers only its side's operations, so a worker calling an agent
//! method does not compile; both deref to [`Connection`] for what they share.
//!
//! One task owns each connection (the rumqttc event loop, the lapin connection); the
//! handles touch the shared state (`state.rs`) only through its operations, under a
//! short lock. Outgoing messages wait in a
//! bounded outbox while the broker is away (events kept and sent before frames, oldest
//! frames dropped and counted), and messages not yet confirmed by the broker go back to
//! the front of it when the connection drops: delivery is at least once, and consumers
//! drop duplicates by (device, camera, seq, capture time).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::buffer::{Class, Unanswered};
use super::config::{TransportConfig, TransportKind};
use super::embedded::{EmbeddedBroker, EmbeddedError};
use super::message::{self, FrameMessage};
pub(crate) use super::state::{Out, Resent, State};
use super::{amqp, mqtt};
use crate::config::secret::redact_text;
use crate::telemetry::metrics::{self, metrics};

/// Which side of the link this is: [`AgentTransport`] or [`WorkerTransport`]. Inside
/// the link only, for what differs per side (client ids, subscriptions, queues).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Publishes frames, motion and events; reads results back.
    Agent,
    /// Consumes frames; publishes detections and events.
    Worker,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("transport URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("TLS for {what}: {why}")]
    Tls { what: String, why: String },
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(
        "a worker on the embedded broker needs transport.embedded_port (the agent's broker port)"
    )]
    EmbeddedPortUnknown,
    #[error("AMQP {what}: {why}")]
    Amqp { what: String, why: String },
    #[error("{what} is not valid in a topic or routing key: {value:?}")]
    BadName { what: &'static str, value: String },
    #[error("frame {camera}/{seq}: JPEG of {size} bytes exceeds transport.max_payload ({max})")]
    Oversized {
        camera: String,
        seq: u64,
        size: usize,
        max: usize,
    },
    #[error("message dropped from the full outbound buffer before the broker confirmed it")]
    Dropped,
    #[error("{0} was already taken from this transport")]
    AlreadyTaken(&'static str),
    #[error("the transport is closed")]
    Closed,
    #[error("{0} needs an MQTT transport (embedded or mqtt)")]
    MqttOnly(&'static str),
}

/// Counters of one transport (also mirrored into the process metrics), so a test or
/// status output can read what this link dropped, rejected and redelivered.
#[derive(Debug, Default)]
pub struct TransportStats {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl TransportStats {
    pub fn get(&self, name: &str) -> u64 {
        lock(&self.counts).get(name).copied().unwrap_or(0)
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }
    pub(crate) fn bump(&self, name: &str) {
        *lock(&self.counts).entry(name.to_string()).or_default() += 1;
    }
}

/// Backlog as the scaler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Frames ready in the broker queue (AMQP passive declare; None on MQTT).
    pub ready: Option<u64>,
    /// Consumers on the frames queue (AMQP only).
    pub consumers: Option<u64>,
    /// Frames this agent sent that have no result yet (covers unacked frames too).
    pub unanswered: u64,
}

/// A result (detections or an event) read back by the agent.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultMessage {
    pub device: String,
    pub camera: String,
    /// `detections` or `events/<class>`.
    pub kind: String,
    pub payload: Bytes,
    /// The frame answered, from the payload's `"seq"` field.
    pub seq: Option<u64>,
    /// True for the first answer of a frame this agent is waiting for.
    pub first_answer: bool,
}

/// A frame handed to a worker. Ack it after its results are published.
pub struct Delivery {
    pub msg: FrameMessage,
    /// AMQP: the broker delivered it before (its worker died). MQTT: the DUP flag of a
    /// retransmission; a frame the agent publishes again is a new message, not flagged
    /// (workers drop copies they already acked).
    pub redelivered: bool,
    pub(crate) acker: Acker,
    pub(crate) shared: Arc<Shared>,
    /// MQTT: marks the frame as held by this worker until it is settled or dropped, so a
    /// copy published again meanwhile (see [`Transport::resend_unanswered`]) is dropped.
    pub(crate) _held: Option<HeldFrame>,
}

/// A frame this worker holds; forgotten when dropped (acked, rejected or abandoned).
pub(crate) struct HeldFrame {
    shared: Arc<Shared>,
    key: FrameKey,
}

impl HeldFrame {
    /// Marks `m` as held; `None` when this worker already holds a copy of it.
    pub(crate) fn take(shared: &Arc<Shared>, m: &FrameMessage) -> Option<HeldFrame> {
        let key = frame_key(m);
        lock(&shared.held).insert(key.clone()).then(|| HeldFrame {
            shared: shared.clone(),
            key,
        })
    }
}

impl Drop for HeldFrame {
    fn drop(&mut self) {
        lock(&self.shared.held).remove(&self.key);
    }
}

pub(crate) enum Acker {
    Mqtt {
        client: rumqttc::AsyncClient,
        publish: rumqttc::Publish,
        /// The connection it came on, and the current one.
        generation: u64,
        current: Arc<std::sync::atomic::AtomicU64>,
    },
    Amqp(lapin::Acker),
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("camera", &self.msg.header.camera)
            .field("seq", &self.msg.header.seq)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    /// Acknowledges the frame: the broker forgets it, and this worker will drop a
    /// later copy of it as a duplicate.
    pub async fn ack(self) -> Result<(), TransportError> {
        lock(&self.shared.recent).insert(frame_key(&self.msg));
        settle(self.acker, false).await
    }

    /// Refuses the frame for `reason` (a metric label): dead-lettered on AMQP, dropped
    /// on MQTT, counted either way.
    pub async fn reject(self, reason: &'static str) -> Result<(), TransportError> {
        self.shared.count_rejected(reason);
        settle(self.acker, true).await
    }
}

async fn settle(acker: Acker, reject: bool) -> Result<(), TransportError> {
    match acker {
        Acker::Mqtt {
            client,
            publish,
            generation,
            current,
        } => {
            if current.load(std::sync::atomic::Ordering::Acquire) != generation {
                // Its session is gone (clean session): nothing to ack.
                return Ok(());
            }
            // try first: the event loop drains this channel, never block it needlessly.
            if client.try_ack(&publish).is_err() {
                client
                    .ack(&publish)
                    .await
                    .map_err(|_| TransportError::Closed)?;
            }
            Ok(())
        }
        Acker::Amqp(acker) => {
            let r = if reject {
                acker
                    .reject(lapin::options::BasicRejectOptions { requeue: false })
                    .await
            } else {
                acker.ack(lapin::options::BasicAckOptions::default()).await
            };
            r.map(|_| ()).map_err(|e| TransportError::Amqp {
                what: "ack".into(),
                why: e.to_string(),
            })
        }
    }
}

/// Messages coming in from the broker, as a stream; bounded (see each producer's
/// full policy).
pub struct Inbound<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Inbound<T> {
    /// The next message; None once the transport is closed.
    pub async fn next(&mut self) -> Option<T> {
        self.rx.recv().await
    }
}

impl<T> futures::Stream for Inbound<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The frames of a worker.
pub type Frames = Inbound<Delivery>;
/// The results coming back to an agent.
pub type Results = Inbound<ResultMessage>;

/// Recently acknowledged frames, to drop redelivered copies (bounded FIFO set).
#[derive(Default)]
pub(crate) struct Recent {
    order: VecDeque<FrameKey>,
    set: HashSet<FrameKey>,
}

type FrameKey = (String, String, u64, u64);

const RECENT_CAP: usize = 4096;

impl Recent {
    fn insert(&mut self, key: FrameKey) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > RECENT_CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
    fn contains(&self, key: &FrameKey) -> bool {
        self.set.contains(key)
    }
}

fn frame_key(m: &FrameMessage) -> FrameKey {
    let h = &m.header;
    (h.device.clone(), h.camera.clone(), h.seq, h.captured)
}

/// Everything the handle and the owner task share.
pub(crate) struct Shared {
    pub cfg: TransportConfig,
    pub device: String,
    pub role: Role,
    pub state: Mutex<State>,
    /// Wakes the AMQP owner task when the outbox gains a message.
    pub wake: Notify,
    pub stats: TransportStats,
    pub recent: Mutex<Recent>,
    /// Frames a worker holds now (MQTT consumers; see [`HeldFrame`]).
    pub held: Mutex<HashSet<FrameKey>>,
    /// A consuming MQTT connection has its subscription acknowledged (SUBACK).
    pub subscribed: tokio::sync::watch::Sender<bool>,
    /// The ticker's sign of life (it takes the state lock every turn), for the watchdog.
    pub beat: crate::telemetry::notify::Beat,
}

/// What a consumer does with an incoming frame (boxed: a header is much larger than
/// the other variants).
pub(crate) enum Incoming {
    Frame(Box<FrameMessage>),
    Rejected,
    Duplicate,
}

impl Shared {
    fn new(cfg: &TransportConfig, device: &str, role: Role) -> Shared {
        let unanswered = match cfg.kind {
            TransportKind::Amqp => {
                Unanswered::new(cfg.buffer_size.as_usize(), cfg.frame_ttl.get(), 0)
            }
            _ => Unanswered::new(
                cfg.buffer_size.as_usize(),
                cfg.redeliver_after.get(),
                cfg.redeliver_max.get() as u32,
            ),
        };
        Shared {
            cfg: cfg.clone(),
            device: device.to_string(),
            role,
            state: Mutex::new(State::new(cfg.buffer_size.as_usize(), unanswered)),
            wake: Notify::new(),
            stats: TransportStats::default(),
            recent: Mutex::new(Recent::default()),
            held: Mutex::new(HashSet::new()),
            subscribed: tokio::sync::watch::Sender::new(false),
            beat: Default::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn count_dropped(&self, why: &'static str) {
        self.stats.bump(&format!("dropped.{why}"));
        metrics()
            .dropped
            .get_or_create(&metrics::reason("transport", why))
            .inc();
        if metrics::should_log(&format!("transport-dropped-{why}"), Duration::from_secs(10)) {
            tracing::warn!(device = %self.device, reason = why, "Transport dropped a message.");
        }
    }

    pub fn count_rejected(&self, why: &'static str) {
        self.stats.bump(&format!("rejected.{why}"));
        metrics()
            .rejected
            .get_or_create(&metrics::reason("transport", why))
            .inc();
        if metrics::should_log(
            &format!("transport-rejected-{why}"),
            Duration::from_secs(10),
        ) {
            tracing::warn!(device = %self.device, reason = why, "Rejected a frame message.");
        }
    }

    /// Decodes an incoming frame and checks it against the recent acks.
    pub fn accept_frame(&self, data: Bytes) -> Incoming {
        match message::decode_bytes(data, self.cfg.max_payload.as_usize()) {
            Err(e) => {
                self.count_rejected(e.reason());
                Incoming::Rejected
            }
            Ok(m) => {
                if lock(&self.recent).contains(&frame_key(&m)) {
                    self.stats.bump("duplicate_frame");
                    Incoming::Duplicate
                } else {
                    Incoming::Frame(Box::new(m))
                }
            }
        }
    }

    /// Turns an incoming result into a [`ResultMessage`], clearing the frame's entry.
    pub fn accept_result(
        &self,
        device: &str,
        camera: &str,
        kind: String,
        payload: Bytes,
    ) -> ResultMessage {
        let seq = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
        let first_answer = match seq {
            Some(seq) if device == self.device => {
                let mut st = self.state();
                let cleared = st.answered(camera, seq);
                metrics().backlog.set(st.unanswered() as i64);
                cleared
            }
            _ => false,
        };
        if seq.is_some() && !first_answer {
            self.stats.bump("duplicate_result");
        }
        ResultMessage {
            device: device.to_string(),
            camera: camera.to_string(),
            kind,
            payload,
            seq,
            first_answer,
        }
    }

    /// Counts what a redelivery pass gave up on or dropped.
    pub fn count_resent(&self, r: &Resent) {
        for _ in 0..r.expired {
            self.count_dropped("unanswered_expired");
        }
        for class in &r.dropped {
            self.count_dropped(overflow_reason(*class));
        }
    }

    /// A consuming connection's subscription was acknowledged, or its connection lost.
    pub fn set_subscribed(&self, yes: bool) {
        self.subscribed.send_replace(yes);
    }

    /// Adds a message to the outbox (drop policy applied and counted).
    fn enqueue(&self, out: Out, link: &Link) {
        let mut st = self.state();
        let dropped = st.push(out);
        link.kick(&mut st, self);
        drop(st);
        self.wake.notify_one();
        if let Some(class) = dropped {
            self.count_dropped(overflow_reason(class));
        }
    }
}

fn overflow_reason(class: Class) -> &'static str {
    match class {
        Class::Frame => "frame_overflow",
        Class::Event => "event_overflow",
    }
}

pub(crate) use crate::sync::lock;

pub(crate) enum Link {
    Mqtt(mqtt::MqttLink),
    Amqp(amqp::AmqpLink),
}

impl Link {
    fn kick(&self, st: &mut State, shared: &Shared) {
        if let Link::Mqtt(m) = self {
            m.pump(st, shared);
        }
    }
}

/// What both sides' handles share: the connection, its state and its counters. Each
/// handle derefs to it for these few read-only operations and the flush.
pub struct Connection {
    shared: Arc<Shared>,
    link: Link,
    cancel: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Connection {
    /// Connects (in the background: the first connection and every reconnection are
    /// made by the owner task, so this returns at once unless the settings are bad).
    async fn open(
        shared: Arc<Shared>,
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
    async fn close(&self, timeout: Duration) -> bool {
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

    fn mqtt_topic(&self, device: &str, camera: Option<&str>, suffix: &str) -> String {
        let prefix = &self.shared.cfg.topic_prefix;
        match camera {
            Some(c) => format!("{prefix}/{device}/{c}/{suffix}"),
            None => format!("{prefix}/{device}/{suffix}"),
        }
    }

    fn enqueue(&self, out: Out) {
        self.shared.enqueue(out, &self.link);
    }

    /// Queues `out` now (so messages keep their order) and returns the broker's
    /// confirmation to wait on.
    fn enqueue_confirmed(
        &self,
        mut out: Out,
    ) -> impl Future<Output = Result<(), TransportError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        out.confirm = Some(tx);
        self.enqueue(out);
        async move { rx.await.map_err(|_| TransportError::Dropped) }
    }

    fn result_out(
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

    fn enqueue_event(&self, exchange: String, key: String, retain: bool, payload: Bytes) {
        let mut out = Out::new(Class::Event, "status", exchange, key);
        out.retain = retain;
        out.payload = payload;
        self.enqueue(out);
    }
}

/// The agent's side of the transport: publishes frames, motion, incidents and device
/// telemetry, reads detections and events back, and tells the scaler the backlog.
/// With `kind = "embedded"` it runs the broker.
pub struct AgentTransport {
    conn: Connection,
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
        check_name("device", device, false)?;
        let shared = Arc::new(Shared::new(cfg, device, Role::Agent));
        let (results_tx, results_rx) = mpsc::channel(cfg.buffer_size.as_usize());
        let mut broker = None;
        let mut url = None;
        if cfg.kind == TransportKind::Embedded {
            let max_packet = 2 * cfg.max_payload.as_usize() + (1 << 20);
            let port = cfg.embedded_port.get() as u16;
            let log_size = cfg.embedded_log_size.as_usize();
            // It waits (blocking) for the broker's listener.
            let b = tokio::task::spawn_blocking(move || {
                EmbeddedBroker::start_with(port, max_packet, log_size)
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
        let conn = Connection::open(shared, url, parent, None, Some(results_tx)).await?;
        Ok(AgentTransport {
            conn,
            results: Mutex::new(Some(results_rx)),
            broker,
        })
    }

    /// The embedded broker's address when this agent runs one.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().map(|b| b.addr())
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

    /// Like [`AgentTransport::publish_frame`], to another frames queue of the same
    /// AMQP broker (`scaling.remote_queue`: offload). The frame is tracked as
    /// unanswered like any other; its result comes back the same way. Ignored on MQTT.
    pub fn publish_frame_to(
        &self,
        msg: FrameMessage,
        queue: Option<&str>,
    ) -> Result<(), TransportError> {
        let c = &self.conn;
        let h = &msg.header;
        let max = c.shared.cfg.max_payload.as_usize();
        if msg.jpeg.len() > max {
            c.shared.count_dropped("frame_oversized");
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
        out.payload = message::encode(&msg);
        out.frame = Some((h.camera.clone(), h.seq));
        let evicted = {
            let mut st = c.shared.state();
            let evicted = st.expect_answer(&h.camera, h.seq, out.clone(), Instant::now());
            metrics().backlog.set(st.unanswered() as i64);
            evicted
        };
        if evicted {
            c.shared.count_dropped("unanswered_evicted");
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
        let c = &self.conn;
        let device = c.shared.device.clone();
        let (exchange, key, retain) = match &c.link {
            Link::Mqtt(_) => (String::new(), c.mqtt_topic(&device, None, name), true),
            Link::Amqp(_) => (
                c.shared.cfg.events_exchange.clone(),
                format!("{device}.{name}"),
                false,
            ),
        };
        c.enqueue_event(exchange, key, retain, payload);
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
    /// `timeout` (see [`Connection`]). Takes `&self`: other holders of the handle
    /// (health, scaler) need not be gone; what they publish afterwards fails.
    pub async fn close(&self, timeout: Duration) -> bool {
        if self.is_mqtt() {
            self.conn
                .enqueue(mqtt::status_out(&self.conn.shared, b"offline"));
        }
        self.conn.close(timeout).await
    }
}

/// A worker's side of the transport: takes frames (each acked or rejected through its
/// [`Delivery`]) and publishes detections, snapshots and events for the frame's device.
pub struct WorkerTransport {
    conn: Connection,
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
    /// `transport.embedded_port`, the agent's broker port.
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
                Some(format!("mqtt://127.0.0.1:{}", cfg.embedded_port.get()))
            }
            _ => None,
        };
        let shared = Arc::new(Shared::new(cfg, device, Role::Worker));
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

/// Validates a name used in topics and routing keys. Workers may serve every device
/// (`+`).
fn check_name(what: &'static str, value: &str, wildcard_ok: bool) -> Result<(), TransportError> {
    if wildcard_ok && value == "+" {
        return Ok(());
    }
    crate::config::types::Ident::new(value)
        .map(|_| ())
        .map_err(|_| TransportError::BadName {
            what,
            value: value.to_string(),
        })
}

/// Maps a result kind to (metric label, MQTT topic suffix, AMQP routing-key suffix).
fn result_kind(kind: &str) -> Result<(&'static str, String, String), TransportError> {
    let bad = || TransportError::BadName {
        what: "result kind",
        value: kind.to_string(),
    };
    let ident = |s: &str| crate::config::types::Ident::new(s).map_err(|_| bad());
    match kind {
        "motion" => Ok(("motion", "motion".into(), "motion".into())),
        "detections" => Ok(("detections", "detections".into(), "detections".into())),
        k if k.starts_with("snapshots/") => {
            let id = &k["snapshots/".len()..];
            ident(id)?;
            Ok(("snapshot", k.to_string(), format!("snapshot.{id}")))
        }
        k => {
            let class = k.strip_prefix("events/").unwrap_or(k);
            ident(class)?;
            if matches!(class, "snapshots" | "snapshot" | "frames" | "status") {
                return Err(bad());
            }
            Ok(("events", format!("events/{class}"), class.to_string()))
        }
    }
}

/// Redelivery (MQTT) and expiry of unanswered frames, on a timer.
fn spawn_ticker(shared: Arc<Shared>, link: &Link, cancel: CancellationToken) {
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

/// Logs a connection problem once in a while, without secrets.
pub(crate) fn log_link_error(what: &str, err: &dyn std::fmt::Display) {
    if metrics::should_log(&format!("transport-link-{what}"), Duration::from_secs(10)) {
        tracing::warn!(link = what, error = %redact_text(&err.to_string()), "Broker connection lost; reconnecting.");
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

/// The transport's side of fuzzing: whatever arrives as a frame is either accepted or
/// rejected with exactly one counted reason.
#[cfg(test)]
mod fuzz {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn every_rejected_frame_is_counted_once_with_its_reason() {
        let shared = Shared::new(&TransportConfig::default(), "dev-1", Role::Worker);
        let mut rng = StdRng::seed_from_u64(0xf4a3_5eed);
        let valid = message::encode(&message::tests::sample(1, 200)).to_vec();
        let (mut rejected, mut accepted) = (0u64, 0u64);
        for _ in 0..2000 {
            let mut data = if rng.random_bool(0.5) {
                valid.clone()
            } else {
                let mut d = vec![0u8; rng.random_range(0..100)];
                rng.fill(&mut d[..]);
                d
            };
            for _ in 0..rng.random_range(0..3) {
                message::fuzz::mutate(&mut rng, &mut data);
            }
            let before: u64 = rejected_total(&shared);
            match shared.accept_frame(Bytes::from(data)) {
                Incoming::Rejected => {
                    rejected += 1;
                    assert_eq!(rejected_total(&shared), before + 1);
                }
                Incoming::Frame(_) | Incoming::Duplicate => {
                    accepted += 1;
                    assert_eq!(rejected_total(&shared), before);
                }
            }
        }
        assert_eq!(rejected_total(&shared), rejected);
        assert!(rejected > 0 && accepted > 0, "{rejected} / {accepted}");
    }

    fn rejected_total(shared: &Shared) -> u64 {
        shared
            .stats
            .snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with("rejected."))
            .map(|(_, v)| v)
            .sum()
    }
}
