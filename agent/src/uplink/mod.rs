//! The uplink: events to a central broker, apart from the frames. Frames stay on the
//! local transport (usually the embedded broker); incidents, snapshots (read back from
//! the frames transport), clip notices, motion and, with `detections = true`, each
//! detections message received go up through a disk spool (`spool.rs`) to a central MQTT or AMQP broker, so they
//! survive an outage of hours, a SIGKILL and a power cut; status and health (state:
//! the latest value counts) go up retained, without the spool. The connection is the
//! transport module's ([`UplinkTransport`]); this module owns the spool, the message
//! ids and the forwarder that empties the spool in order.
//!
//! Delivery is at least once and in order per camera: an event is committed before
//! [`Events::publish`] returns, leaves the spool only on the broker's confirmation
//! (MQTT PUBACK, AMQP publisher confirm), and what is left is sent again in spool order
//! after a reconnect or a restart, under the `message_id` it got when it was spooled.
//! With `uplink.kind = "none"` events go on the frames transport as before, with a
//! `message_id` as well (stable across the transport's own resends, not restarts).

pub mod config;
pub mod spool;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{SpoolConfig, UplinkConfig, UplinkKind};
use spool::{Opened, Spool, SpoolError};

use crate::telemetry::metrics::{self, metrics, DropReason};
use crate::transport::{AgentTransport, TransportError, UplinkTransport};

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Where the agent's events go: the frames transport (`uplink.kind = "none"`) or the
/// spooled uplink. Shared by every publisher (results, escalator, telemetry).
pub struct Events {
    route: Route,
    /// `uplink.detections`: each detections message received goes up as well.
    detections: bool,
    /// Message ids when there is no spool: a random epoch per run and a counter.
    local_ids: (u64, AtomicU64),
}

enum Route {
    Local(Arc<AgentTransport>),
    Up(Arc<Uplink>),
}

/// The spooled uplink: the spool, the connection, and the forwarder's wake-up.
pub struct Uplink {
    spool: Spool,
    transport: UplinkTransport,
    wake: Notify,
    kind: UplinkKind,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
}

impl Events {
    /// Events on the frames transport, as without an uplink.
    pub fn local(transport: Arc<AgentTransport>) -> Events {
        Events {
            route: Route::Local(transport),
            detections: false,
            local_ids: (rand::random(), AtomicU64::new(0)),
        }
    }

    /// Events as `cfg` says: `kind = "none"` on `local`; otherwise the spool is opened
    /// (a corrupt one moved aside and reported) and the uplink connects in the
    /// background, its forwarder a task under `parent`.
    pub async fn start(
        cfg: &UplinkConfig,
        local: Arc<AgentTransport>,
        device: &str,
        parent: &CancellationToken,
    ) -> Result<Events, UplinkError> {
        let Some(tcfg) = cfg.transport() else {
            return Ok(Events::local(local));
        };
        let dir = cfg.spool_dir();
        let d = dir.clone();
        let limits = cfg.spool_limits();
        let (spool, opened) = tokio::task::spawn_blocking(move || Spool::open(&d, limits))
            .await
            .map_err(|e| SpoolError::Dir {
                dir: dir.clone(),
                why: e.to_string(),
            })??;
        let depth = spool.depth();
        match &opened {
            Opened::MovedAside { to, why } => {
                error!(lifecycle = "spool_moved_aside", spool = %spool.path().display(), moved_to = %to.display(), error = %why, "Uplink spool was corrupt: moved aside, a fresh one started; events in it are not sent.");
            }
            _ => {
                info!(lifecycle = "spool_opened", spool = %spool.path().display(), messages = depth.messages, bytes = depth.bytes, "Uplink spool opened.");
            }
        }
        let transport = UplinkTransport::connect(&tcfg, device, parent).await?;
        let up = Arc::new(Uplink {
            spool,
            transport,
            wake: Notify::new(),
            kind: cfg.kind,
            counts: Counts::default(),
        });
        up.gauges();
        tokio::spawn(forward(up.clone(), parent.child_token()));
        Ok(Events {
            route: Route::Up(up),
            detections: cfg.detections,
            local_ids: (0, AtomicU64::new(0)),
        })
    }

    /// Publishes an event about `camera` (`kind`: `motion`, `events/<class>`,
    /// `clips/...`-style result kinds, see the transport). A JSON object payload gets a
    /// `message_id` first. With an uplink it returns once the event is committed to
    /// the spool; without, once it is in the transport's outbox.
    pub fn publish(&self, camera: &str, kind: &str, payload: Bytes) -> Result<(), UplinkError> {
        crate::transport::connection::result_kind(kind)?;
        match &self.route {
            Route::Local(t) => {
                let (epoch, n) = &self.local_ids;
                let id = format!("{epoch:016x}-{:x}", n.fetch_add(1, Ordering::Relaxed));
                t.publish_result(camera, kind, with_message_id(&payload, &id))?;
                Ok(())
            }
            Route::Up(up) => up.append(camera, kind, payload),
        }
    }

    /// A snapshot a worker published on the frames transport, read back by the agent:
    /// with an uplink it goes up through the spool (same topic or routing key scheme,
    /// the JPEG as it is, its bytes counted in `uplink.spool.max_bytes`), in spool
    /// order, so before the incident that names it. Without an uplink it is already
    /// where events go: nothing to do.
    pub fn forward_snapshot(&self, camera: &str, id: &str, jpeg: Bytes) -> Result<(), UplinkError> {
        match &self.route {
            Route::Local(_) => Ok(()),
            Route::Up(_) => self.publish(camera, &format!("snapshots/{id}"), jpeg),
        }
    }

    /// A detections message this agent received (the first answer to one of its
    /// frames, as the worker published it): with `uplink.detections` on, it goes up
    /// through the spool like an event, with a `message_id`; otherwise (or without an
    /// uplink, where the workers' detections already are on the frames transport)
    /// nothing happens. True when it was spooled.
    pub fn forward_detections(&self, camera: &str, payload: Bytes) -> Result<bool, UplinkError> {
        match &self.route {
            Route::Up(up) if self.detections => {
                up.append(camera, "detections", payload)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Device state (`health`): retained, the latest value counts, never spooled.
    pub fn publish_device(&self, name: &str, payload: Bytes) -> Result<(), UplinkError> {
        match &self.route {
            Route::Local(t) => t.publish_device(name, payload)?,
            Route::Up(up) => up.transport.publish_device(name, payload)?,
        }
        Ok(())
    }

    /// The uplink's part of `/health`.
    pub fn health(&self) -> serde_json::Value {
        let Route::Up(up) = &self.route else {
            return serde_json::json!({ "kind": "none" });
        };
        let d = up.spool.depth();
        let c = &up.counts;
        serde_json::json!({
            "kind": format!("{:?}", up.kind).to_lowercase(),
            "connected": up.transport.is_connected(),
            "spool": {
                "path": up.spool.path().display().to_string(),
                "messages": d.messages,
                "bytes": d.bytes,
                "oldest_age_s": oldest_age_s(d.oldest_ms),
            },
            "sent": c.sent.load(Ordering::Relaxed),
            "evicted": c.evicted.load(Ordering::Relaxed),
            "expired": c.expired.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
        })
    }

    /// Says `offline` and flushes what the uplink holds within `timeout`; what is not
    /// confirmed by then stays in the spool for the next start. True without an uplink.
    pub async fn close(&self, timeout: Duration) -> bool {
        match &self.route {
            Route::Local(_) => true,
            Route::Up(up) => up.transport.close(timeout).await,
        }
    }
}

/// Runs `f`, an fsynced spool commit, telling a multi-threaded tokio runtime that this
/// worker blocks, so its other tasks (the broker links' I/O, keep-alives, `/health`)
/// move to another worker meanwhile. A commit on a busy disk took seconds here, and
/// with two cameras' events the runtime's workers sat in fsync while the uplink's
/// AMQP handshake and confirmations waited a minute.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn now_ms() -> u64 {
    crate::clock::unix_ns_now() / 1_000_000
}

fn oldest_age_s(oldest_ms: Option<u64>) -> f64 {
    oldest_ms.map_or(0.0, |o| now_ms().saturating_sub(o) as f64 / 1e3)
}

impl Uplink {
    fn append(&self, camera: &str, kind: &str, payload: Bytes) -> Result<(), UplinkError> {
        crate::transport::connection::check_name("camera", camera, false)?;
        let r = blocking(|| {
            self.spool
                .append_with(camera, kind, now_ms(), |id| with_message_id(&payload, id))
        });
        match r {
            Ok(a) => {
                self.count(DropReason::SpoolEvicted, &self.counts.evicted, a.evicted);
                self.gauges();
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                self.count(DropReason::SpoolFailed, &self.counts.failed, 1);
                if metrics::should_log("uplink-spool-failed", Duration::from_secs(10)) {
                    error!(camera, kind, error = %e, "Event not committed to the uplink spool; it is lost.");
                }
                Err(e.into())
            }
        }
    }

    fn count(&self, why: DropReason, counter: &AtomicU64, n: u64) {
        if n == 0 {
            return;
        }
        counter.fetch_add(n, Ordering::Relaxed);
        metrics()
            .dropped
            .get_or_create(&metrics::drop_reason("uplink", why))
            .inc_by(n);
        if metrics::should_log(&format!("uplink-{why}"), Duration::from_secs(10)) {
            warn!(events = n, reason = why.as_str(), spool = %self.spool.path().display(), "Uplink spool dropped events.");
        }
    }

    fn gauges(&self) {
        let d = self.spool.depth();
        let m = metrics();
        m.uplink_spool_messages.set(d.messages as i64);
        m.uplink_spool_bytes.set(d.bytes as i64);
        m.uplink_spool_oldest_seconds.set(oldest_age_s(d.oldest_ms));
        m.uplink_connected
            .set(i64::from(self.transport.is_connected()));
    }
}

type Confirm = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>;

/// Records in flight at most: under the uplink outbox's size, so the outbox never
/// drops one to make room.
fn window(up: &Uplink) -> usize {
    (up.transport.capacity() / 2).clamp(1, 128)
}

/// Empties the spool in order: reads what follows the last record handed over, hands
/// it to the uplink connection (which keeps order and sends again what a dropped
/// connection left unconfirmed), and removes each record once confirmed. A failed
/// confirmation starts over from the first record left (duplicates, same ids).
async fn forward(up: Arc<Uplink>, cancel: CancellationToken) {
    let mut cursor: Option<u64> = None;
    let mut inflight: VecDeque<(u64, Confirm)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window = window(&up);
    loop {
        // Only while connected: an event handed to a link that is down would wait in the
        // link's own outbox, where a spool eviction cannot reach it (and would count it
        // evicted, then deliver it all the same).
        if inflight.len() < window && up.transport.is_connected() {
            match up.spool.read_after(cursor, window - inflight.len()) {
                Ok(records) => {
                    for r in records {
                        cursor = Some(r.seq);
                        match up
                            .transport
                            .publish_event_then(&r.camera, &r.kind, r.payload)
                        {
                            Ok(c) => inflight.push_back((r.seq, Box::pin(c))),
                            Err(e) => {
                                // Checked at append: only a spool from another
                                // version could hold one. Never sendable: dropped.
                                warn!(seq = r.seq, error = %e, "Spooled event cannot be sent; dropped.");
                                up.count(DropReason::SpoolFailed, &up.counts.failed, 1);
                                let _ = up.spool.remove(&[r.seq]);
                            }
                        }
                    }
                }
                Err(e) => {
                    if metrics::should_log("uplink-spool-read", Duration::from_secs(30)) {
                        error!(error = %e, "Uplink spool not readable; retrying.");
                    }
                }
            }
        }
        let front = async {
            match inflight.front_mut() {
                Some((_, c)) => c.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = front => {
                let mut done = Vec::new();
                let mut failed = r.is_err();
                if !failed {
                    done.push(inflight.pop_front().map(|(s, _)| s).unwrap_or_default());
                    // Every other confirmation already in, in one removal.
                    while let Some((_, c)) = inflight.front_mut() {
                        match c.now_or_never() {
                            Some(Ok(())) => done.extend(inflight.pop_front().map(|(s, _)| s)),
                            Some(Err(_)) => { failed = true; break; }
                            None => break,
                        }
                    }
                }
                if let Err(e) = up.spool.remove(&done) {
                    warn!(error = %e, "Confirmed events not removed from the uplink spool; they will be sent again.");
                }
                up.counts.sent.fetch_add(done.len() as u64, Ordering::Relaxed);
                metrics().uplink_sent.inc_by(done.len() as u64);
                if failed {
                    inflight.clear();
                    cursor = None;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                up.gauges();
            }
            _ = up.wake.notified() => {}
            _ = tick.tick() => {
                match up.spool.evict_expired(now_ms()) {
                    Ok(n) => up.count(DropReason::SpoolExpired, &up.counts.expired, n),
                    Err(e) => warn!(error = %e, "Expired events not evicted from the uplink spool."),
                }
                up.gauges();
            }
        }
    }
}

/// The escalator's way out with an uplink in the picture: frames to the frames
/// transport, motion where events go.
pub struct Outlet {
    pub frames: Arc<AgentTransport>,
    pub events: Arc<Events>,
}

impl crate::escalate::escalator::Publish for Outlet {
    type Error = UplinkError;
    fn publish_motion(&self, camera: &str, payload: Bytes) -> Result<(), UplinkError> {
        self.events.publish(camera, "motion", payload)
    }
    fn publish_frame(
        &self,
        msg: crate::wire::frame::FrameMessage,
        queue: Option<&str>,
    ) -> Result<(), UplinkError> {
        Ok(self.frames.publish_frame_to(msg, queue)?)
    }
}

/// `payload` with `"message_id": id` as its first member when it is a JSON object
/// without one; anything else (a JPEG snapshot) as it is: its id is in its topic.
pub fn with_message_id(payload: &Bytes, id: &str) -> Bytes {
    let trimmed = payload.trim_ascii_start();
    let Some(rest) = trimmed.strip_prefix(b"{") else {
        return payload.clone();
    };
    // A quick look first; parse only when the text mentions the key.
    if memchr_key(rest) {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(trimmed) {
            if m.contains_key("message_id") {
                return payload.clone();
            }
        }
    }
    let empty = rest.trim_ascii_start().starts_with(b"}");
    let mut out = Vec::with_capacity(payload.len() + id.len() + 20);
    out.extend_from_slice(b"{\"message_id\":");
    out.extend_from_slice(serde_json::to_string(id).unwrap_or_default().as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

fn memchr_key(s: &[u8]) -> bool {
    s.windows(b"\"message_id\"".len())
        .any(|w| w == b"\"message_id\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_goes_first_into_json_objects_and_nowhere_else() {
        let rows: [(&str, &str); 5] = [
            (r#"{"a":1}"#, r#"{"message_id":"x-1","a":1}"#),
            (r#"  { }"#, r#"{"message_id":"x-1" }"#),
            (
                r#"{"message_id":"kept","a":1}"#,
                r#"{"message_id":"kept","a":1}"#,
            ),
            (
                r#"{"note":"\"message_id\""}"#,
                r#"{"message_id":"x-1","note":"\"message_id\""}"#,
            ),
            ("\u{ff}\u{d8}jpeg", "\u{ff}\u{d8}jpeg"),
        ];
        for (input, want) in rows {
            let got = with_message_id(&Bytes::from(input.to_string()), "x-1");
            assert_eq!(String::from_utf8_lossy(&got), want, "{input}");
            if want.starts_with('{') {
                serde_json::from_slice::<serde_json::Value>(&got).unwrap();
            }
        }
    }
}
