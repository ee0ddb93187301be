//! AMQP link (lapin) for RabbitMQ.
//!
//! Topology, declared with the same arguments by every side (a second declaration with
//! other arguments would close the channel):
//! - `<frames_queue>`: durable, persistent messages, `x-message-ttl` = frame_ttl,
//!   `x-max-length` with `drop-head` overflow (backpressure drops the oldest), and
//!   `<frames_queue>.dlx` as dead-letter exchange;
//! - `<frames_queue>.dlx` (fanout) → `<frames_queue>.dead`, bounded: rejected,
//!   expired and overflowed frames;
//! - `<events_exchange>` (topic): results and events with routing key
//!   `{device}.{camera}.{kind}` (kind: motion, detections or an event class;
//!   snapshots use `{device}.{camera}.snapshot.{event_id}` so `*.*.*` skips them);
//! - the agent's results queue `<events_exchange>.<device>.results`, bound to
//!   `{device}.*.*` and `{device}.*.snapshot.*` (the workers' snapshots);
//! - the offload link's (a central GPU pool on another broker, `scaling.remote_url`):
//!   `<events_exchange>.<device>.offload-results`, bound to `{device}.*.detections` only
//!   (the pool's workers publish nothing else this agent reads, and the device's own
//!   events, uplinked to the same exchange, need not come back down);
//! - the uplink's status queue `<events_exchange>.<device>.status`, bound to
//!   `{device}.status`, holding only the latest status (`x-max-length` 1): AMQP has no
//!   last will, so this is the nearest to MQTT's retained status (see [`status_out`]).
//!
//! One task owns the connection: it publishes from the outbox with publisher confirms
//! (a window of unconfirmed messages, put back in the outbox if the link drops),
//! consumes with a prefetch limit, and reconnects with backoff. Redelivery of frames
//! whose worker died is the broker's: unacked messages return to the queue.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::TransportConfig;
use super::error::{log_link_error, TransportError};
use super::link::{Acker, Delivery, Incoming, LinkShared, ResultMessage, Role};
use super::state::Out;
use super::tls;
use crate::backoff::Backoff;
use crate::sync::lock;
use crate::telemetry::metrics::DropReason;
use crate::values::secret::redact_url;

#[derive(Clone)]
pub(crate) struct AmqpLink {
    conn: Arc<Mutex<Option<Arc<Connection>>>>,
    /// Set by [`AmqpLink::close`]: the owner task takes the end of its connection for
    /// what it is and does not connect again (a worker would take more frames).
    closing: Arc<std::sync::atomic::AtomicBool>,
}

fn amqp_err(what: impl Into<String>, e: impl std::fmt::Display) -> TransportError {
    TransportError::Amqp {
        what: what.into(),
        why: e.to_string(),
    }
}

impl AmqpLink {
    /// Ready messages and consumers of `queue` (passive declare on a channel of its
    /// own, since a failed passive declare closes the channel).
    pub async fn queue_counts(&self, queue: &str) -> Result<(u64, u64), TransportError> {
        let conn = lock(&self.conn)
            .clone()
            .ok_or_else(|| amqp_err(format!("backlog of queue {queue}"), "not connected"))?;
        let what = || format!("backlog of queue {queue}");
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| amqp_err(what(), e))?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_err(what(), e))?;
        let _ = ch.close(200, "OK".into()).await;
        Ok((q.message_count() as u64, q.consumer_count() as u64))
    }

    /// Closes the connection within `timeout`, for good: the owner task does not
    /// connect again. True when closed in time.
    pub async fn close(&self, timeout: std::time::Duration) -> bool {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        let Some(c) = lock(&self.conn).take() else {
            return true;
        };
        matches!(
            tokio::time::timeout(timeout, c.close(200, "OK".into())).await,
            Ok(Ok(()))
        )
    }
}

/// Reads a frames queue's counts for a scaler that is neither agent nor worker: one
/// connection, made lazily and again after any error, that declares the topology (same
/// arguments as everyone, so the queue exists before the first frame) and then answers
/// passive declares.
pub struct QueueProbe {
    cfg: TransportConfig,
    url: String,
    tls: Option<lapin::tcp::OwnedTLSConfig>,
    conn: Option<Connection>,
}

impl QueueProbe {
    pub fn new(cfg: &TransportConfig) -> Result<Self, TransportError> {
        let url = cfg.amqp_url.expose().to_string();
        let parsed = url::Url::parse(&url).map_err(|e| TransportError::Url {
            url: redact_url(&url),
            why: e.to_string(),
        })?;
        let tls = if parsed.scheme() == "amqps" {
            Some(tls::amqp_tls_config(
                cfg.ca_file.as_deref(),
                tls::identity(cfg),
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            url,
            tls,
            conn: None,
        })
    }

    /// (ready messages, consumers) of the frames queue.
    pub async fn counts(&mut self) -> Result<(u64, u64), TransportError> {
        let queue = self.cfg.frames_queue.clone();
        let what = || format!("backlog of queue {queue}");
        if self.conn.as_ref().is_none_or(|c| !c.status().connected()) {
            let props = ConnectionProperties::default()
                .with_connection_name("edge-scaler".to_string().into());
            let conn = match &self.tls {
                Some(tls) if tls.cert_chain.is_some() || tls.identity.is_some() => {
                    Connection::connect_with_config(
                        &self.url,
                        props,
                        tls.clone(),
                        lapin::runtime::default_runtime().map_err(|e| amqp_err(what(), e))?,
                    )
                    .await
                }
                _ => Connection::connect(&self.url, props).await,
            }
            .map_err(|e| amqp_err(what(), e))?;
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| amqp_err(what(), e))?;
            declare_topology(&ch, &self.cfg)
                .await
                .map_err(|e| amqp_err(format!("declare queue {queue}"), e))?;
            let _ = ch.close(200, "OK".into()).await;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(amqp_err(what(), "not connected"));
        };
        let r = async {
            let ch = conn.create_channel().await?;
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = ch.close(200, "OK".into()).await;
            lapin::Result::Ok((q.message_count() as u64, q.consumer_count() as u64))
        }
        .await;
        if r.is_err() {
            self.conn = None;
        }
        r.map_err(|e| amqp_err(what(), e))
    }

    pub async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.close(200, "OK".into()).await;
        }
    }
}

/// The dead-letter exchange and queue of a frames queue.
pub fn dead_letter_names(frames_queue: &str) -> (String, String) {
    (
        format!("{frames_queue}.dlx"),
        format!("{frames_queue}.dead"),
    )
}

/// The agent's results queue.
pub fn results_queue_name(cfg: &TransportConfig, device: &str) -> String {
    format!("{}.{device}.results", cfg.events_exchange)
}

/// The offload link's results queue (named apart from the agent's, so the two links
/// never share one when the pool is on the frames broker).
pub fn offload_results_queue_name(cfg: &TransportConfig, device: &str) -> String {
    format!("{}.{device}.offload-results", cfg.events_exchange)
}

/// The uplink's status queue of `device`: the latest status only.
pub fn status_queue_name(cfg: &TransportConfig, device: &str) -> String {
    format!("{}.{device}.status", cfg.events_exchange)
}

/// The device's status on AMQP (the uplink's): `online` at each connection, `offline`
/// at a clean close, published persistent on the events exchange with routing key
/// `{device}.status` into the status queue, which keeps only the latest. AMQP has no
/// last will: after a crash, a kill or a lost network the queue still says `online`;
/// the broker closes the connection (missed AMQP heartbeats) and the `{device}.health`
/// heartbeat stops, which is how a consumer tells.
pub(crate) fn status_out(shared: &LinkShared, status: &'static [u8]) -> Out {
    let mut out = Out::new(
        super::buffer::Class::Event,
        "status",
        shared.cfg.events_exchange.clone(),
        format!("{}.status", shared.device),
    );
    out.payload = bytes::Bytes::from_static(status);
    out
}

/// Declares the uplink's status queue and binds it.
async fn declare_status_queue(
    ch: &Channel,
    cfg: &TransportConfig,
    device: &str,
) -> lapin::Result<()> {
    let q = status_queue_name(cfg, device);
    ch.queue_declare(
        q.as_str().into(),
        durable_queue(),
        args(&[("x-max-length", AMQPValue::LongLongInt(1))]),
    )
    .await?;
    ch.queue_bind(
        q.as_str().into(),
        cfg.events_exchange.as_str().into(),
        format!("{device}.status").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Declares the frames queue, its dead-letter pair and the events exchange.
/// The durable topic exchange events are published to.
async fn declare_events_exchange(ch: &Channel, cfg: &TransportConfig) -> lapin::Result<()> {
    ch.exchange_declare(
        cfg.events_exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

pub async fn declare_topology(ch: &Channel, cfg: &TransportConfig) -> lapin::Result<()> {
    let durable_ex = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_events_exchange(ch, cfg).await?;
    let (dlx, dead) = dead_letter_names(&cfg.frames_queue);
    ch.exchange_declare(
        dlx.as_str().into(),
        ExchangeKind::Fanout,
        durable_ex,
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        dead.as_str().into(),
        durable_queue(),
        args(&[(
            "x-max-length",
            AMQPValue::LongLongInt(cfg.max_queue_length.get()),
        )]),
    )
    .await?;
    ch.queue_bind(
        dead.as_str().into(),
        dlx.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        cfg.frames_queue.as_str().into(),
        durable_queue(),
        args(&[
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(cfg.frame_ttl.get().as_millis() as i64),
            ),
            (
                "x-max-length",
                AMQPValue::LongLongInt(cfg.max_queue_length.get()),
            ),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString(dlx.as_str().into()),
            ),
        ]),
    )
    .await?;
    Ok(())
}

/// Deletes what [`declare_topology`] and an agent of `device` declared (tests,
/// benchmarks, decommissioning a site). Errors are ignored: some may not exist.
pub async fn delete_topology(ch: &Channel, cfg: &TransportConfig, device: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let (dlx, dead) = dead_letter_names(&cfg.frames_queue);
    let results = results_queue_name(cfg, device);
    let offload = offload_results_queue_name(cfg, device);
    let status = status_queue_name(cfg, device);
    for q in [&cfg.frames_queue, &dead, &results, &offload, &status] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [&cfg.events_exchange, &dlx] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

pub(crate) fn start(
    shared: Arc<LinkShared>,
    cancel: CancellationToken,
    frames_tx: Option<mpsc::Sender<Delivery>>,
    results_tx: Option<mpsc::Sender<ResultMessage>>,
) -> Result<AmqpLink, TransportError> {
    let url = shared.cfg.amqp_url.expose().to_string();
    let parsed = url::Url::parse(&url).map_err(|e| TransportError::Url {
        url: redact_url(&url),
        why: e.to_string(),
    })?;
    let tls = if parsed.scheme() == "amqps" {
        Some(tls::amqp_tls_config(
            shared.cfg.ca_file.as_deref(),
            tls::identity(&shared.cfg),
        )?)
    } else {
        None
    };
    let link = AmqpLink {
        conn: Arc::new(Mutex::new(None)),
        closing: Default::default(),
    };
    let owner = Owner {
        shared,
        link: link.clone(),
        url,
        tls,
        frames_tx,
        results_tx,
    };
    tokio::spawn(owner.run(cancel));
    Ok(link)
}

type Window = VecDeque<(Out, Pin<Box<PublisherConfirm>>)>;

struct Owner {
    shared: Arc<LinkShared>,
    link: AmqpLink,
    url: String,
    tls: Option<lapin::tcp::OwnedTLSConfig>,
    frames_tx: Option<mpsc::Sender<Delivery>>,
    results_tx: Option<mpsc::Sender<ResultMessage>>,
}

/// Why a session ended.
enum End {
    Cancelled,
    Lost(TransportError),
}

impl Owner {
    async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
        let redacted = redact_url(&self.url);
        let mut window: Window = VecDeque::new();
        let mut orphans = Vec::new();
        loop {
            if self.link.closing.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let end = self
                .session(&cancel, &mut window, &mut orphans, &mut backoff)
                .await;
            let was_connected = {
                let mut outs: Vec<Out> = window.drain(..).map(|(o, _)| o).collect();
                outs.append(&mut orphans);
                self.shared.state().down(outs)
            };
            let conn = lock(&self.link.conn).take();
            match end {
                End::Cancelled => {
                    if let Some(c) = conn {
                        let _ = c.close(200, "OK".into()).await;
                    }
                    return;
                }
                End::Lost(_) if self.link.closing.load(std::sync::atomic::Ordering::Acquire) => {
                    return;
                }
                End::Lost(e) => {
                    drop(conn);
                    if was_connected {
                        self.shared.stats.bump("reconnects");
                    }
                    log_link_error(&redacted, &e);
                    let delay = backoff.next_delay(e.to_string());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn connect(&self) -> lapin::Result<Connection> {
        let props = ConnectionProperties::default().with_connection_name(
            format!("edge-{:?}-{}", self.shared.role, self.shared.device).into(),
        );
        match &self.tls {
            Some(tls) if tls.cert_chain.is_some() => {
                Connection::connect_with_config(
                    &self.url,
                    props,
                    tls.clone(),
                    lapin::runtime::default_runtime()?,
                )
                .await
            }
            _ => Connection::connect(&self.url, props).await,
        }
    }

    async fn session(
        &self,
        cancel: &CancellationToken,
        window: &mut Window,
        orphans: &mut Vec<Out>,
        backoff: &mut Backoff,
    ) -> End {
        let lost = |what: &str, e: lapin::Error| End::Lost(amqp_err(what, e));
        let cfg = &self.shared.cfg;
        let conn = tokio::select! {
            _ = cancel.cancelled() => return End::Cancelled,
            c = self.connect() => match c {
                Ok(c) => Arc::new(c),
                Err(e) => return lost("connect", e),
            },
        };
        let ch = match conn.create_channel().await {
            Ok(c) => c,
            Err(e) => return lost("channel", e),
        };
        // The uplink only publishes events: the central broker's frames queue (if it
        // has one) is none of its business.
        if self.shared.role == Role::Uplink {
            if let Err(e) = declare_events_exchange(&ch, cfg).await {
                return lost(&format!("declare exchange {}", cfg.events_exchange), e);
            }
            if let Err(e) = declare_status_queue(&ch, cfg, &self.shared.device).await {
                let q = status_queue_name(cfg, &self.shared.device);
                return lost(&format!("status queue {q}"), e);
            }
        } else if let Err(e) = declare_topology(&ch, cfg).await {
            return lost(&format!("declare queue {}", cfg.frames_queue), e);
        }
        if let Err(e) = ch.confirm_select(ConfirmSelectOptions::default()).await {
            return lost("confirm_select", e);
        }
        let mut frames = None;
        let mut results = None;
        match self.shared.role {
            Role::Worker => {
                let cch = match conn.create_channel().await {
                    Ok(c) => c,
                    Err(e) => return lost("channel", e),
                };
                if let Err(e) = cch
                    .basic_qos(cfg.prefetch.get() as u16, BasicQosOptions::default())
                    .await
                {
                    return lost("basic_qos", e);
                }
                match cch
                    .basic_consume(
                        cfg.frames_queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                {
                    Ok(c) => frames = Some(c),
                    Err(e) => return lost(&format!("consume {}", cfg.frames_queue), e),
                }
            }
            Role::Uplink => {}
            Role::Agent | Role::Offload => {
                let device = &self.shared.device;
                let (q, bindings) = if self.shared.role == Role::Offload {
                    (
                        offload_results_queue_name(cfg, device),
                        vec![format!("{device}.*.detections")],
                    )
                } else {
                    (
                        results_queue_name(cfg, device),
                        vec![format!("{device}.*.*"), format!("{device}.*.snapshot.*")],
                    )
                };
                let rch = match conn.create_channel().await {
                    Ok(c) => c,
                    Err(e) => return lost("channel", e),
                };
                let declared = async {
                    rch.queue_declare(
                        q.as_str().into(),
                        durable_queue(),
                        args(&[(
                            "x-max-length",
                            AMQPValue::LongLongInt(cfg.buffer_size.get()),
                        )]),
                    )
                    .await?;
                    for key in &bindings {
                        rch.queue_bind(
                            q.as_str().into(),
                            cfg.events_exchange.as_str().into(),
                            key.as_str().into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                    }
                    rch.basic_qos(64, BasicQosOptions::default()).await?;
                    rch.basic_consume(
                        q.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                };
                match declared.await {
                    Ok(c) => results = Some(c),
                    Err(e) => return lost(&format!("results queue {q}"), e),
                }
            }
        }
        *lock(&self.link.conn) = Some(conn.clone());
        {
            let mut st = self.shared.state();
            st.up();
            if self.shared.role == Role::Uplink {
                st.put_back(status_out(&self.shared, b"online"));
            }
        }
        backoff.reset();
        tracing::info!(broker = %redact_url(&self.url), role = ?self.shared.role, "AMQP connected.");

        let limit = cfg.publish_window.as_usize();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        // After a nack, publishing waits (growing pauses while nacks go on).
        let mut nack_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut paused: Option<tokio::time::Instant> = None;
        loop {
            // Publish what the window allows.
            while paused.is_none() && window.len() < limit {
                let Some(out) = self.shared.state().next_numbered() else {
                    break;
                };
                match publish(&ch, &out).await {
                    Ok(confirm) => window.push_back((out, Box::pin(confirm))),
                    Err(e) => {
                        self.shared.state().put_back(out);
                        return lost("publish", e);
                    }
                }
            }
            self.shared.state().set_unconfirmed(window.len());
            let room = window.len() < limit;
            let resume = async {
                match paused {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let oldest = async {
                match window.front_mut() {
                    Some((_, c)) => c.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            let next_frame = async {
                match frames.as_mut() {
                    Some(c) => c.next().await,
                    None => std::future::pending().await,
                }
            };
            let next_result = async {
                match results.as_mut() {
                    Some(c) => c.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                confirm = oldest => {
                    let Some((out, _)) = window.pop_front() else { continue };
                    match confirm {
                        Ok(Confirmation::Nack(_)) => {
                            // Refused (a queue full with reject-publish, ...): not
                            // again at once, which would spin, but after a pause, and
                            // with every message published after it, so they stay in
                            // order (one the broker took already comes twice, as after
                            // a reconnect). Its confirmation waits on.
                            self.shared.stats.bump("nacked");
                            let mut back = vec![out];
                            back.extend(window.drain(..).map(|(o, _)| o));
                            {
                                let mut state = self.shared.state();
                                for o in back.into_iter().rev() {
                                    state.put_back(o);
                                }
                            }
                            let delay = nack_backoff.next_delay("publish nacked");
                            if crate::telemetry::metrics::should_log("amqp-nacked", Duration::from_secs(10)) {
                                tracing::warn!(broker = %redact_url(&self.url), retry_in = ?delay, "The broker refused a message (nack); it is sent again after a pause.");
                            }
                            paused = Some(tokio::time::Instant::now() + delay);
                        }
                        Ok(_) => {
                            nack_backoff.reset();
                            out.confirmed()
                        }
                        Err(e) => {
                            orphans.push(out);
                            return lost("publisher confirm", e);
                        }
                    }
                }
                _ = self.shared.wake.notified(), if room => {}
                _ = resume => paused = None,
                d = next_frame => match d {
                    Some(Ok(d)) => self.frame(d).await,
                    Some(Err(e)) => return lost("consume frames", e),
                    None => return End::Lost(amqp_err("consume frames", "consumer cancelled by the broker")),
                },
                d = next_result => match d {
                    Some(Ok(d)) => self.result(d).await,
                    Some(Err(e)) => return lost("consume results", e),
                    None => return End::Lost(amqp_err("consume results", "consumer cancelled by the broker")),
                },
                _ = check.tick() => {
                    if !conn.status().connected() {
                        return End::Lost(amqp_err("connection", "closed"));
                    }
                }
            }
        }
    }

    async fn frame(&self, d: lapin::message::Delivery) {
        let Some(tx) = &self.frames_tx else { return };
        let lapin::message::Delivery {
            data,
            acker,
            redelivered,
            ..
        } = d;
        match self.shared.accept_frame(bytes::Bytes::from(data)) {
            Incoming::Frame(msg) => {
                let msg = *msg;
                let d = Delivery {
                    msg,
                    redelivered,
                    acker: Acker::Amqp(acker),
                    shared: self.shared.clone(),
                    _held: None,
                };
                // Full policy: block; the prefetch limit bounds what waits here.
                let _ = tx.send(d).await;
            }
            Incoming::Rejected => {
                let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
            }
            Incoming::Duplicate => {
                let _ = acker.ack(BasicAckOptions::default()).await;
            }
        }
    }

    async fn result(&self, d: lapin::message::Delivery) {
        let key = d.routing_key.as_str().to_string();
        let parts: Vec<&str> = key.split('.').collect();
        if let Some(tx) = &self.results_tx {
            let (device, camera, kind) = match parts.as_slice() {
                [device, camera, "snapshot", id] => {
                    (*device, *camera, Some(format!("snapshots/{id}")))
                }
                [device, camera, kind] => (
                    *device,
                    *camera,
                    match *kind {
                        "motion" => None,
                        "detections" => Some("detections".to_string()),
                        class => Some(format!("events/{class}")),
                    },
                ),
                _ => ("", "", None),
            };
            if let Some(kind) = kind {
                let r = self
                    .shared
                    .accept_result(device, camera, kind, bytes::Bytes::from(d.data));
                if tx.try_send(r).is_err() {
                    self.shared.count_dropped(DropReason::ResultsOverflow);
                }
            }
        }
        let _ = d.acker.ack(BasicAckOptions::default()).await;
    }
}

/// The content type of what `out` carries.
fn content_type(out: &Out) -> &'static str {
    match out.kind {
        "frames" => "application/x-edge-frame",
        "snapshot" => "image/jpeg",
        // The device status is a word (`online`, `offline`); health is JSON.
        _ if !out.payload.trim_ascii_start().starts_with(b"{") => "text/plain",
        _ => "application/json",
    }
}

/// Persistent (delivery mode 2), typed, stamped, and for an event with a `message_id`
/// (the uplink's, and the agent's own events) that id as the AMQP `message_id`
/// property, so a consumer can dedupe without parsing the body.
async fn publish(ch: &Channel, out: &Out) -> lapin::Result<PublisherConfirm> {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(content_type(out).into())
        .with_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
    if out.class == super::buffer::Class::Event {
        if let Some(id) = crate::wire::message_id_of(&out.payload) {
            props = props.with_message_id(id.into());
        }
    }
    ch.basic_publish(
        out.exchange.as_str().into(),
        out.key.as_str().into(),
        BasicPublishOptions::default(),
        &out.payload,
        props,
    )
    .await
}
