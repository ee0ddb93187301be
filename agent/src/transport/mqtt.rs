//! MQTT link (rumqttc, MQTT 3.1.1, QoS 1) for Mosquitto and the embedded broker.
//!
//! One task owns the rumqttc event loop. Publishing is ours, not rumqttc's: messages
//! go from the outbox to the event loop only while connected and within the publish
//! window; each one is tracked from its packet id to its PUBACK, and on a lost
//! connection every unacknowledged message goes back to the outbox. Each connection
//! gets a new client and event loop (rumqttc's public API only): nothing of a dead one
//! (requests still in its channel, its retransmission list, packet ids, buffered
//! events) carries over, so nothing is sent twice by two mechanisms and no later
//! packet id is paired with a message of the old connection.
//!
//! Workers share frames through `$share/<group>/<prefix>/<device>/frames` with manual
//! acks; a frame whose worker died is published again by the agent (see
//! [`super::buffer::Unanswered`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ack_order::AckOrder;
use super::buffer::Class;
use super::error::{log_link_error, TransportError};
use super::link::{Acker, Delivery, HeldFrame, Incoming, LinkShared, ResultMessage, Role};
use super::state::{Out, State};
use super::tls;
use crate::backoff::Backoff;
use crate::sync::lock;
use crate::telemetry::metrics::DropReason;
use crate::values::secret::redact_url;
use crate::wire::frame::MAX_HEADER_LEN;

/// The client of a connection's current event loop, replaced at each reconnection.
type Slot = Arc<Mutex<AsyncClient>>;

#[derive(Clone)]
pub(crate) struct MqttLink {
    client: Slot,
    window: usize,
    /// A worker's consuming connection (see [`Duty::Consume`]).
    consume: Option<Slot>,
    /// DISCONNECT packets written so far, by any of this link's connections.
    disconnects: Arc<tokio::sync::watch::Sender<usize>>,
}

impl MqttLink {
    /// Hands messages from the outbox to the event loop while the window allows.
    pub fn pump(&self, st: &mut State, shared: &LinkShared) {
        // Under the state lock (callers hold it), so a reconnection cannot swap the
        // client between our publish and the bookkeeping of it.
        let client = lock(&self.client);
        while let Some(out) = st.next_within(self.window) {
            match client.try_publish(
                out.key.clone(),
                QoS::AtLeastOnce,
                out.retain,
                out.payload.to_vec(),
            ) {
                Ok(()) => st.submitted(out),
                Err(e) => {
                    st.put_back(out);
                    if matches!(e, rumqttc::ClientError::TryRequest(_)) {
                        shared.stats.bump("publish_channel_full");
                    }
                    break;
                }
            }
        }
    }

    /// Sends DISCONNECT on every connection of this link (so the broker drops the last
    /// will) and waits, at most `timeout`, until each was written; then the owner
    /// tasks end. False when one was not written in time (the broker was unreachable).
    pub async fn disconnect(&self, timeout: Duration) -> bool {
        let clients: Vec<AsyncClient> = std::iter::once(&self.client)
            .chain(&self.consume)
            .map(|slot| lock(slot).clone())
            .collect();
        let mut sent = self.disconnects.subscribe();
        let before = *sent.borrow_and_update();
        for c in &clients {
            let _ = c.try_disconnect();
        }
        let want = before + clients.len();
        let done = tokio::time::timeout(timeout, sent.wait_for(|n| *n >= want)).await;
        matches!(done, Ok(Ok(_)))
    }
}

fn url_err(url: &str, why: impl std::fmt::Display) -> TransportError {
    TransportError::Url {
        url: redact_url(url),
        why: why.to_string(),
    }
}

/// The last will's status: the agent went away without saying `offline` (crash, kill,
/// lost network), so a dashboard tells it from a clean stop.
pub const STATUS_LOST: &[u8] = b"lost";

fn status_topic(shared: &LinkShared) -> String {
    format!("{}/{}/status", shared.cfg.topic_prefix, shared.device)
}

/// Whether a link of `role` keeps the device's status: the agent's and the uplink's,
/// not a worker's nor the offload link's (the device's status is not the pool's business).
fn says_status(role: Role) -> bool {
    matches!(role, Role::Agent | Role::Uplink)
}

/// The agent's retained status message (`online`, or `offline` at a clean close; the
/// last will says [`STATUS_LOST`] when the agent vanishes without a DISCONNECT).
pub(crate) fn status_out(shared: &LinkShared, status: &'static [u8]) -> Out {
    let mut out = Out::new(Class::Event, "status", String::new(), status_topic(shared));
    out.retain = true;
    out.payload = bytes::Bytes::from_static(status);
    out
}

/// What one MQTT connection is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Duty {
    /// Publishes from the outbox; the agent's also reads results back.
    Publish,
    /// A worker's frames, with manual acks. A connection of its own: rumqttd 0.20
    /// holds back every ack to a client (PUBACKs, PINGRESP) while that client has
    /// its maximum of unacknowledged messages, so a worker that waits for its
    /// result's PUBACK before acking a frame would deadlock on one connection.
    Consume,
}

/// Builds the options and starts the task(s) that own the connection(s): one for an
/// agent, two for a worker (publishing, consuming).
pub(crate) fn start(
    shared: Arc<LinkShared>,
    url: &str,
    cancel: CancellationToken,
    frames_tx: Option<mpsc::Sender<Delivery>>,
    results_tx: Option<mpsc::Sender<ResultMessage>>,
) -> Result<MqttLink, TransportError> {
    let cfg = &shared.cfg;
    let window = cfg.publish_window.as_usize().min(90);
    let cap = window * 2 + 64;
    let opts = options(&shared, url, Duty::Publish, window)?;
    let consume_opts = match shared.role {
        Role::Worker => Some(options(&shared, url, Duty::Consume, window)?),
        Role::Agent | Role::Uplink | Role::Offload => None,
    };
    let (client, eventloop) = open(&opts, cap);
    let consumer = consume_opts.map(|o| {
        let (c, el) = open(&o, cap);
        (Arc::new(Mutex::new(c)), el, o)
    });
    let link = MqttLink {
        client: Arc::new(Mutex::new(client)),
        window,
        consume: consumer.as_ref().map(|(c, _, _)| c.clone()),
        disconnects: Arc::new(tokio::sync::watch::Sender::new(0)),
    };
    let subs = match shared.role {
        Role::Worker | Role::Uplink => Vec::new(),
        // Offload is AMQP only (checked at load); the same subscriptions if ever not.
        Role::Agent | Role::Offload => vec![
            format!("{}/{}/+/detections", cfg.topic_prefix, shared.device),
            format!("{}/{}/+/events/+", cfg.topic_prefix, shared.device),
            // The workers' snapshots, for the page and the uplink.
            format!("{}/{}/+/snapshots/+", cfg.topic_prefix, shared.device),
        ],
    };
    let owner = Owner {
        shared: shared.clone(),
        duty: Duty::Publish,
        link: link.clone(),
        slot: link.client.clone(),
        opts,
        cap,
        subs,
        frames_tx: None,
        results_tx,
        redacted: redact_url(url),
        acks: Arc::default(),
        connected: AtomicBool::new(false),
    };
    tokio::spawn(owner.run(eventloop, cancel.clone()));
    if let Some((slot, eventloop, opts)) = consumer {
        let owner = Owner {
            shared: shared.clone(),
            duty: Duty::Consume,
            link: link.clone(),
            slot,
            opts,
            cap,
            subs: vec![format!(
                "$share/{}/{}/{}/frames",
                cfg.worker_group, cfg.topic_prefix, shared.device
            )],
            frames_tx,
            results_tx: None,
            redacted: redact_url(url),
            acks: Arc::default(),
            connected: AtomicBool::new(false),
        };
        tokio::spawn(owner.run(eventloop, cancel));
    }
    Ok(link)
}

/// The options of one connection, checked once: every reconnection uses them again.
fn options(
    shared: &LinkShared,
    url: &str,
    duty: Duty,
    window: usize,
) -> Result<MqttOptions, TransportError> {
    let parsed = url::Url::parse(url).map_err(|e| url_err(url, e))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(url_err(url, format!("scheme {other:?} is not MQTT"))),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| url_err(url, "no host"))?
        .to_string();
    let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
    let cfg = &shared.cfg;
    let client_id = match (shared.role, duty) {
        // Unique per agent and prefix: two agents with one id would take over each
        // other's session in a loop.
        (Role::Agent, _) => format!("edge-agent-{}-{}", cfg.topic_prefix, shared.device),
        (Role::Uplink, _) => format!("edge-uplink-{}-{}", cfg.topic_prefix, shared.device),
        (Role::Offload, _) => format!("edge-offload-{}-{}", cfg.topic_prefix, shared.device),
        (Role::Worker, _) => format!(
            "edge-worker-{}-{}-{:08x}-{}",
            shared.device.replace('+', "any"),
            std::process::id(),
            rand::random::<u32>(),
            if duty == Duty::Consume { "c" } else { "p" }
        ),
    };
    let mut opts = MqttOptions::new(client_id, host, port);
    // Long enough for a worker busy with a full in-flight window on rumqttd (which
    // answers no PINGREQ meanwhile, see `Duty::Consume`).
    opts.set_keep_alive(Duration::from_secs(30));
    // The agent's session survives reconnects (results queued meanwhile); workers are
    // ephemeral (scaled to zero), the agent redelivers what they lose.
    opts.set_clean_session(shared.role == Role::Worker);
    let max = cfg.max_payload.as_usize();
    // Incoming room above the cap, so an oversized frame is read and rejected with a
    // reason instead of breaking the connection.
    opts.set_max_packet_size(2 * max + MAX_HEADER_LEN + 4096, max + MAX_HEADER_LEN + 4096);
    opts.set_inflight(100);
    opts.set_request_channel_capacity(window * 2 + 64);
    opts.set_manual_acks(duty == Duty::Consume);
    if !parsed.username().is_empty() {
        let user = userinfo_decode(parsed.username());
        let pass = userinfo_decode(parsed.password().unwrap_or(""));
        opts.set_credentials(user, pass);
    }
    if says_status(shared.role) {
        opts.set_last_will(LastWill::new(
            status_topic(shared),
            STATUS_LOST,
            QoS::AtLeastOnce,
            true,
        ));
    }
    if tls {
        let config = tls::rustls_client_config(cfg.ca_file.as_deref(), tls::identity(cfg))?;
        opts.set_transport(rumqttc::Transport::tls_with_config(
            TlsConfiguration::Rustls(config),
        ));
    }
    Ok(opts)
}

/// A new client and event loop for one connection (made by its first poll).
fn open(opts: &MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(opts.clone(), cap);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// The user name or password as written in a URL's userinfo: `%XX` escapes decoded,
/// nothing else touched (`+` and `&` are themselves there, not form encoding).
pub(crate) fn userinfo_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

struct Owner {
    shared: Arc<LinkShared>,
    duty: Duty,
    link: MqttLink,
    /// This connection's client (the link's publishing or consuming one).
    slot: Slot,
    opts: MqttOptions,
    /// The request channel's capacity.
    cap: usize,
    subs: Vec<String>,
    frames_tx: Option<mpsc::Sender<Delivery>>,
    results_tx: Option<mpsc::Sender<ResultMessage>>,
    redacted: String,
    /// The consumed frames' acks, in arrival order; a new connection starts a new
    /// session, whose acks for an older one's frames are not sent (that session is
    /// gone; rumqttd would drop us for an unknown packet id).
    acks: Arc<AckOrder>,
    /// Up state of a consuming connection (a publishing one keeps it in `State`).
    connected: AtomicBool,
}

impl Owner {
    async fn run(self, mut eventloop: EventLoop, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                // Written and flushed: the broker drops the last will. Ending here
                // closes the socket before rumqttc reads the broker's close as an error.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.link.disconnects.send_modify(|n| *n += 1);
                    break;
                }
                Ok(ev) => {
                    if let Event::Incoming(Packet::ConnAck(_)) = ev {
                        backoff.reset();
                    }
                    self.handle(ev);
                }
                Err(e) => {
                    eventloop = self.lost(&e);
                    let delay = backoff.next_delay(e.to_string());
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if self.duty == Duty::Publish {
            self.shared.state().ended();
        }
    }

    /// The connection dropped: everything not acknowledged goes back to the outbox,
    /// and the next connection gets a new client and event loop (returned).
    fn lost(&self, e: &ConnectionError) -> EventLoop {
        let (eventloop, was_connected) = match self.duty {
            Duty::Consume => {
                self.shared.set_subscribed(false);
                let eventloop = self.renew();
                (eventloop, self.connected.swap(false, Ordering::AcqRel))
            }
            Duty::Publish => {
                // Under the lock, so no publish slips into the old client between the
                // swap and the requeue (it would be lost with the old event loop
                // without going back to the outbox).
                let mut st = self.shared.state();
                let eventloop = self.renew();
                (eventloop, st.down(Vec::new()))
            }
        };
        // A link that never came up (broker down, refused credentials, untrusted
        // certificate) is logged too, or a wrong password looks like a slow broker.
        self.shared.stats.bump(if was_connected {
            "reconnects"
        } else {
            "connect_failures"
        });
        log_link_error(&self.redacted, e);
        eventloop
    }

    /// Replaces this connection's client and event loop with new ones.
    fn renew(&self) -> EventLoop {
        let (client, eventloop) = open(&self.opts, self.cap);
        *lock(&self.slot) = client;
        eventloop
    }

    fn handle(&self, ev: Event) {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                {
                    let client = lock(&self.slot);
                    for s in &self.subs {
                        let _ = client.try_subscribe(s.clone(), QoS::AtLeastOnce);
                    }
                }
                self.acks.reset();
                if self.duty == Duty::Consume {
                    self.connected.store(true, Ordering::Release);
                } else {
                    let mut st = self.shared.state();
                    st.up();
                    if says_status(self.shared.role) {
                        st.put_back(status_out(&self.shared, b"online"));
                    }
                    self.link.pump(&mut st, &self.shared);
                }
                tracing::info!(broker = %self.redacted, duty = ?self.duty, "MQTT connected.");
            }
            Event::Incoming(Packet::SubAck(_)) if self.duty == Duty::Consume => {
                self.shared.set_subscribed(true);
            }
            // Only a publishing connection publishes (its PUBACKs settle the outbox).
            _ if self.duty == Duty::Consume => {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    self.incoming(p);
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.shared.state().sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                let mut st = self.shared.state();
                if let Some(out) = st.acked(ack.pkid) {
                    out.confirmed();
                }
                self.link.pump(&mut st, &self.shared);
            }
            Event::Incoming(Packet::Publish(p)) => self.incoming(p),
            _ => {}
        }
    }

    fn incoming(&self, p: rumqttc::Publish) {
        let prefix = &self.shared.cfg.topic_prefix;
        let Some(rest) = p
            .topic
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let client = lock(&self.slot).clone();
        match (parts.as_slice(), &self.frames_tx, &self.results_tx) {
            ([_device, "frames"], Some(tx), _) => {
                // Every ack of this connection goes in arrival order, the ones given
                // at once here included (see `ack_order`).
                let session = self.acks.arrived(&p);
                let ack_now = |p: rumqttc::Publish| {
                    let (acks, client) = (self.acks.clone(), client.clone());
                    tokio::spawn(async move { acks.ack(&client, session, p).await });
                };
                let acker = Acker::Mqtt {
                    client: client.clone(),
                    publish: p.clone(),
                    order: self.acks.clone(),
                    session,
                };
                match self.shared.accept_frame(p.payload.clone()) {
                    Incoming::Frame(msg) => {
                        let msg = *msg;
                        let Some(held) = HeldFrame::take(&self.shared, &msg) else {
                            // A copy of a frame this worker is working on.
                            self.shared.stats.bump("duplicate_frame");
                            ack_now(p);
                            return;
                        };
                        let d = Delivery {
                            msg,
                            redelivered: p.dup,
                            acker,
                            shared: self.shared.clone(),
                            _held: Some(held),
                        };
                        // Full policy: drop, ack and count; the agent publishes an
                        // unanswered frame again. The broker's in-flight window (20 on
                        // Mosquitto, 100 on rumqttd) keeps it from filling.
                        if let Err(mpsc::error::TrySendError::Full(d)) = tx.try_send(d) {
                            let Acker::Mqtt { publish, .. } = d.acker else {
                                return;
                            };
                            ack_now(publish);
                            self.shared.count_dropped(DropReason::WorkerInboxFull);
                        }
                    }
                    Incoming::Rejected | Incoming::Duplicate => ack_now(p),
                }
            }
            ([device, camera, "detections"], _, Some(tx)) => {
                let r = self
                    .shared
                    .accept_result(device, camera, "detections".into(), p.payload);
                self.forward(tx, r);
            }
            ([device, camera, "snapshots", id], _, Some(tx)) => {
                let r =
                    self.shared
                        .accept_result(device, camera, format!("snapshots/{id}"), p.payload);
                self.forward(tx, r);
            }
            ([device, camera, "events", class], _, Some(tx)) => {
                let r =
                    self.shared
                        .accept_result(device, camera, format!("events/{class}"), p.payload);
                self.forward(tx, r);
            }
            _ => {}
        }
    }

    fn forward(&self, tx: &mpsc::Sender<ResultMessage>, r: ResultMessage) {
        // Full policy: drop the newest and count (the agent stopped reading).
        if tx.try_send(r).is_err() {
            self.shared.count_dropped(DropReason::ResultsOverflow);
        }
    }
}
