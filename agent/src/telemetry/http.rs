//! The HTTP endpoint on `telemetry.metrics_listen`: `GET /metrics` (Prometheus) and
//! `GET /health` (JSON status). Loopback by default.
//!
//! Served by hyper through axum's router (both already in the build for rumqttd): other
//! methods get 405, unknown paths 404. At most [`MAX_CONNECTIONS`] connections are
//! served at once; one over the limit is closed at once and counted
//! (`edge_agent_dropped_total{place="http",reason="connection_limit"}`), and each
//! connection has a time limit, so a stuck client holds a slot only briefly.
//! `/metrics` negotiates: OpenMetrics for a scraper that asks for it (Prometheus
//! does), the Prometheus text format 0.0.4 otherwise, each with its own content type.

use std::net::SocketAddr;
use std::sync::Arc;
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

use super::metrics::{metrics, reason};

/// Supplies the JSON body of `/health`.
pub type HealthFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Connections served at once; Prometheus and a health probe need two or three.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds and serves until shutdown; returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    health: HealthFn,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .route("/healthz", get(health_page))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics or /health\n") })
        .with_state(health);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let sock = tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => sock,
                    // Out of file descriptors and the like: let the moment pass.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics()
                    .dropped
                    .get_or_create(&reason("http", "connection_limit"))
                    .inc();
                drop(sock);
                continue;
            };
            let _ = sock.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(sock), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                drop(slot);
            });
        }
    });
    Ok(addr)
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
