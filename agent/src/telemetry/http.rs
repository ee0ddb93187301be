//! The HTTP endpoint on `telemetry.metrics_listen`: `GET /metrics` (Prometheus) and
//! `GET /health` (JSON status). Loopback by default.
//!
//! Served by hyper through axum's router (both already in the build for rumqttd): other
//! methods get 405, unknown paths 404. At most [`MAX_CONNECTIONS`] connections are
//! served at once, and at most [`MAX_PER_CLIENT`] from one client address, so one client
//! holding idle sockets cannot lock out Prometheus or a health probe; a connection over
//! either limit is closed at once and counted
//! (`edge_agent_dropped_total{place="http",reason="connection_limit"|"client_limit"}`).
//! A client has [`HEAD_TIMEOUT`] to send its request head (an idle socket is closed then,
//! `reason="head_timeout"`) and a connection [`CONNECTION_TIMEOUT`] in all
//! (`reason="connection_timeout"`); there is no keep-alive, so no idle wait after a
//! response.
//! `/metrics` negotiates: OpenMetrics for a scraper that asks for it (Prometheus
//! does), the Prometheus text format 0.0.4 otherwise, each with its own content type.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::{drop_reason, metrics, should_log, DropReason};
use crate::sync::lock;

/// Supplies the JSON body of `/health`.
pub type HealthFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Connections served at once; Prometheus and a health probe need two or three.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections served at once from one client address: a scraper needs one or two.
pub const MAX_PER_CLIENT: usize = 4;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The listener's limits: [`serve`] uses the defaults (the constants above); tests
/// shorten the timeouts through [`serve_with`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections: usize,
    pub per_client: usize,
    pub head_timeout: Duration,
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: MAX_CONNECTIONS,
            per_client: MAX_PER_CLIENT,
            head_timeout: HEAD_TIMEOUT,
            connection_timeout: CONNECTION_TIMEOUT,
        }
    }
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds and serves until shutdown; returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    health: HealthFn,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    serve_with(listen, health, shutdown, Limits::default()).await
}

/// [`serve`] with other limits.
pub async fn serve_with(
    listen: &str,
    health: HealthFn,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .route("/healthz", get(health_page))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics or /health\n") })
        .with_state(health);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let clients = Arc::new(Clients::default());
    tokio::spawn(async move {
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: let the moment pass.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            // The client's own limit first: a client at its limit must not take one of
            // the slots that everyone else shares.
            let Some(client) = clients.take(peer.ip(), limits.per_client) else {
                dropped(DropReason::ClientLimit, peer);
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                dropped(DropReason::ConnectionLimit, peer);
                continue;
            };
            let _ = sock.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    // Counts from the accept, not from the first byte (hyper 1.x), so an
                    // idle socket is closed after it too.
                    .header_read_timeout(limits.head_timeout)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(sock), service);
                match tokio::time::timeout(limits.connection_timeout, conn).await {
                    Ok(Err(e)) if e.is_timeout() => dropped(DropReason::HeadTimeout, peer),
                    Err(_) => dropped(DropReason::ConnectionTimeout, peer),
                    Ok(_) => {}
                }
                drop((slot, client));
            });
        }
    });
    Ok(addr)
}

/// Counts a connection closed unserved, and logs it at most once a minute per reason.
fn dropped(why: DropReason, peer: SocketAddr) {
    metrics()
        .dropped
        .get_or_create(&drop_reason("http", why))
        .inc();
    if should_log(&format!("http-dropped-{why}"), Duration::from_secs(60)) {
        warn!(reason = why.as_str(), %peer, "Metrics endpoint closed a connection unserved.");
    }
}

/// Connections open per client address. Per address, not per network: an IPv6 client
/// that owns a whole prefix gets the limit once per address it uses.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One client's connection; gives its place back when dropped.
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    /// A place for a connection from `ip`, unless it already holds `max`. An IPv4
    /// client of a dual-stack listener counts as its IPv4 address.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = lock(&self.0);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.clients.0);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn metrics_page(headers: HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let m = metrics();
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], m.encode())
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.encode_text())
    }
}

async fn health_page(State(health): State<HealthFn>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        health().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_of_places_and_each_comes_back_when_dropped() {
        let clients = Arc::new(Clients::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| clients.take(a, 2).unwrap()).collect();
        assert!(clients.take(a, 2).is_none(), "a third place for a");
        // The same client over a dual-stack listener: its IPv4-mapped IPv6 address.
        assert!(clients
            .take("::ffff:127.0.0.1".parse().unwrap(), 2)
            .is_none());
        let other = clients.take(b, 2).expect("b is another client");
        drop(held);
        assert!(lock(&clients.0).get(&a).is_none(), "an empty entry stays");
        assert!(clients.take(a, 2).is_some());
        drop(other);
        assert!(lock(&clients.0).is_empty());
    }
}
