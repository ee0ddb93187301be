//! What a connection's owner task and its handles share: the state under one lock,
//! counters, the recent-frames window that drops duplicates, and the deliveries handed to
//! consumers with the way each is acknowledged. amqp.rs and mqtt.rs import from here.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::ack_order::AckOrder;
use super::buffer::{Class, Unanswered};
use super::config::{TransportConfig, TransportKind};
use super::error::TransportError;
use super::state::{Resent, State};
use crate::sync::lock;
use crate::telemetry::metrics::{self, metrics, DropReason, RejectReason};
use crate::wire::frame::MessageError;
use crate::wire::frame::{self, FrameMessage};

/// Which side of the link this is: [`AgentTransport`] or [`WorkerTransport`]. Inside
/// the link only, for what differs per side (client ids, subscriptions, queues).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Publishes frames, motion and events; reads results back.
    Agent,
    /// Consumes frames; publishes detections and events.
    Worker,
    /// Publishes events to a central broker (the uplink); consumes nothing.
    Uplink,
    /// The agent's second AMQP link, to a central GPU pool (`scaling.remote_url`):
    /// publishes offloaded frames to the pool's queue and reads their detections back.
    Offload,
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
    pub(crate) shared: Arc<LinkShared>,
    /// MQTT: marks the frame as held by this worker until it is settled or dropped, so a
    /// copy published again meanwhile (see [`Transport::resend_unanswered`]) is dropped.
    pub(crate) _held: Option<HeldFrame>,
}

/// A frame this worker holds; forgotten when dropped (acked, rejected or abandoned).
pub(crate) struct HeldFrame {
    pub(crate) shared: Arc<LinkShared>,
    key: FrameKey,
}

impl HeldFrame {
    /// Marks `m` as held; `None` when this worker already holds a copy of it.
    pub(crate) fn take(shared: &Arc<LinkShared>, m: &FrameMessage) -> Option<HeldFrame> {
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
        /// The connection's acks in arrival order, and the session it came in.
        order: Arc<AckOrder>,
        session: u64,
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
        settle(self.acker, Settle::Ack).await
    }

    /// Refuses the frame for `reason` (a metric label): dead-lettered on AMQP, dropped
    /// on MQTT, counted either way.
    pub async fn reject(self, reason: RejectReason) -> Result<(), TransportError> {
        self.shared.count_rejected(reason);
        settle(self.acker, Settle::Reject).await
    }

    /// Hands the frame back for another try (its results were not handed over, or not
    /// confirmed), counted. AMQP: nacked with requeue, so the broker delivers it again
    /// (flagged redelivered) and its prefetch slot is free. MQTT: acked, in order,
    /// without being remembered as done. A QoS 1 ack cannot ask for redelivery, and a
    /// frame left unacked would hold one of the broker's in-flight slots for the whole
    /// session (and rumqttd drops a client whose next ack is then out of order); the
    /// agent publishes a frame with no answer again after `transport.redeliver_after`,
    /// and this worker takes that copy, since it was not recorded as acked.
    pub async fn requeue(self) -> Result<(), TransportError> {
        self.shared.count_requeued();
        settle(self.acker, Settle::Requeue).await
    }
}

/// How a delivery is settled with the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    /// Never again: dead-lettered on AMQP.
    Reject,
    /// Again: back in the queue on AMQP.
    Requeue,
}

pub(crate) async fn settle(acker: Acker, how: Settle) -> Result<(), TransportError> {
    match acker {
        Acker::Mqtt {
            client,
            publish,
            order,
            session,
        } => order.ack(&client, session, publish).await,
        Acker::Amqp(acker) => {
            let r = match how {
                Settle::Ack => acker.ack(lapin::options::BasicAckOptions::default()).await,
                Settle::Reject => {
                    acker
                        .reject(lapin::options::BasicRejectOptions { requeue: false })
                        .await
                }
                Settle::Requeue => {
                    acker
                        .nack(lapin::options::BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await
                }
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
    pub(crate) rx: mpsc::Receiver<T>,
}

impl<T> Inbound<T> {
    /// The next message; None once the transport is closed.
    pub async fn next(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// A message already waiting, if any (draining at stop).
    pub fn try_next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
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
    pub(crate) fn insert(&mut self, key: FrameKey) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > RECENT_CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
    pub(crate) fn contains(&self, key: &FrameKey) -> bool {
        self.set.contains(key)
    }
}

pub(crate) fn frame_key(m: &FrameMessage) -> FrameKey {
    let h = &m.header;
    (h.device.clone(), h.camera.clone(), h.seq, h.captured)
}

/// Everything the handle and the owner task share.
pub(crate) struct LinkShared {
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

impl LinkShared {
    pub(crate) fn new(cfg: &TransportConfig, device: &str, role: Role) -> LinkShared {
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
        LinkShared {
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

    pub fn count_dropped(&self, why: DropReason) {
        self.stats.bump(&format!("dropped.{why}"));
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason("transport", why))
            .inc();
        if metrics::should_log(&format!("transport-dropped-{why}"), Duration::from_secs(10)) {
            tracing::warn!(device = %self.device, reason = why.as_str(), "Transport dropped a message.");
        }
    }

    pub fn count_rejected(&self, why: RejectReason) {
        self.stats.bump(&format!("rejected.{why}"));
        metrics()
            .rejected
            .get_or_create(&metrics::reject_reason("transport", why))
            .inc();
        if metrics::should_log(
            &format!("transport-rejected-{why}"),
            Duration::from_secs(10),
        ) {
            tracing::warn!(device = %self.device, reason = %why, "Rejected a frame message.");
        }
    }

    /// Counts a frame this worker handed back for redelivery.
    pub fn count_requeued(&self) {
        self.stats.bump("requeued");
        let kind = match self.cfg.kind {
            TransportKind::Amqp => "amqp",
            TransportKind::Mqtt => "mqtt",
            TransportKind::Embedded => "embedded",
        };
        metrics().requeued.get_or_create(&metrics::kind(kind)).inc();
        if metrics::should_log("transport-requeued", Duration::from_secs(10)) {
            tracing::warn!(device = %self.device, transport = kind, "Frame handed back for redelivery.");
        }
    }

    /// Decodes an incoming frame and checks it against the recent acks.
    pub fn accept_frame(&self, data: Bytes) -> Incoming {
        match frame::decode_bytes(data, self.cfg.max_payload.as_usize()) {
            Err(e) => {
                self.count_rejected(reject_reason(&e));
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
        // A snapshot is a JPEG: no seq to read, it answers no frame.
        let seq = if kind.starts_with("snapshots/") {
            None
        } else {
            crate::wire::detections::seq_of(&payload)
        };
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
            self.count_dropped(DropReason::UnansweredExpired);
        }
        for class in &r.dropped {
            self.count_dropped(overflow_reason(*class));
        }
    }

    /// A consuming connection's subscription was acknowledged, or its connection lost.
    pub fn set_subscribed(&self, yes: bool) {
        self.subscribed.send_replace(yes);
    }

    /// Counts a message the outbox dropped to make room.
    pub(crate) fn count_overflow(&self, class: Class) {
        self.count_dropped(overflow_reason(class));
    }
}

pub(crate) fn overflow_reason(class: Class) -> DropReason {
    match class {
        Class::Frame => DropReason::FrameOverflow,
        Class::Event => DropReason::EventOverflow,
    }
}

/// The transport's side of fuzzing: whatever arrives as a frame is either accepted or
/// rejected with exactly one counted reason.
/// The counted reason for a frame message that does not decode.
fn reject_reason(e: &MessageError) -> RejectReason {
    match e {
        MessageError::BadMagic => RejectReason::BadMagic,
        MessageError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
        MessageError::Truncated { .. } => RejectReason::Truncated,
        MessageError::HeaderInvalid(_) => RejectReason::HeaderInvalid,
        MessageError::Oversized { .. } => RejectReason::Oversized,
        MessageError::NotJpeg(_) => RejectReason::NotJpeg,
        MessageError::TrailingBytes(_) => RejectReason::TrailingBytes,
    }
}

#[cfg(test)]
mod fuzz {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn every_rejected_frame_is_counted_once_with_its_reason() {
        let shared = LinkShared::new(&TransportConfig::default(), "dev-1", Role::Worker);
        let mut rng = StdRng::seed_from_u64(0xf4a3_5eed);
        let valid = frame::encode(&frame::tests::sample(1, 200)).to_vec();
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
                frame::fuzz::mutate(&mut rng, &mut data);
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

    fn rejected_total(shared: &LinkShared) -> u64 {
        shared
            .stats
            .snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with("rejected."))
            .map(|(_, v)| v)
            .sum()
    }
}
