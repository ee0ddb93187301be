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
//! `GET /clips/{file}` serves a finished clip file from the clips directory (when one is
//! given) with single-range `Range` requests (206, or 416 when unsatisfiable); a name
//! that is not a plain file name in that directory (a path, `..`, a hidden file, a link
//! leading out) gets 404, as does an unknown one. A download must fit in
//! [`CONNECTION_TIMEOUT`]: a slow client takes a large clip in ranges.
//! With a [`PageSource`], `/` serves the page ([`super::page`]), which with `/clips`
//! follows the page's [`Access`] rule.
//! `/metrics` negotiates: OpenMetrics for a scraper that asks for it (Prometheus
//! does), the Prometheus text format 0.0.4 otherwise, each with its own content type.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::PageToken;
use super::metrics::{drop_reason, metrics, should_log, DropReason};
use super::page::{self, Access, PageSource};
use crate::sync::lock;

/// The directory `/clips` serves, shared with whoever may change it (a reload of
/// `events.clips.dir`): each request reads it anew.
#[derive(Clone, Debug)]
pub struct ClipsDir(Arc<Mutex<PathBuf>>);

impl ClipsDir {
    pub fn new(dir: PathBuf) -> Self {
        Self(Arc::new(Mutex::new(dir)))
    }

    pub fn get(&self) -> PathBuf {
        lock(&self.0).clone()
    }

    /// From the next request on, `/clips` serves `dir`.
    pub fn set(&self, dir: PathBuf) {
        *lock(&self.0) = dir;
    }
}

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
    serve_endpoints(listen, health, None, shutdown, limits).await
}

/// [`serve_with`], also serving the clip files of `clips_dir` on `/clips/{file}`.
pub async fn serve_endpoints(
    listen: &str,
    health: HealthFn,
    clips_dir: Option<PathBuf>,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let endpoints = Endpoints {
        health,
        clips_dir: clips_dir.map(ClipsDir::new),
        page: None,
        page_token: None,
    };
    serve_all(listen, endpoints, shutdown, limits).await
}

/// What the listener serves besides `/metrics`.
pub struct Endpoints {
    pub health: HealthFn,
    /// Clip files on `/clips/{file}`.
    pub clips_dir: Option<ClipsDir>,
    /// The page on `/` (see [`super::page`]).
    pub page: Option<Arc<dyn PageSource>>,
    /// The token the page and the clips need.
    pub page_token: Option<PageToken>,
}

/// Serves `endpoints` until shutdown; the page and the clips under the
/// [`Access`] rule for the address bound.
pub async fn serve_all(
    listen: &str,
    endpoints: Endpoints,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let access = Access::for_listener(addr, endpoints.page_token);
    let clips = endpoints.clips_dir;
    let clip_access = access.clone();
    let mut app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .route("/healthz", get(health_page))
        .with_state(endpoints.health)
        .route(
            "/clips/:file",
            get(
                move |UrlPath(file): UrlPath<String>, headers: HeaderMap, uri: Uri| {
                    let (clips, access) = (clips.clone(), clip_access.clone());
                    async move {
                        if let Some(refused) = access.refusal(&headers, &uri) {
                            return refused;
                        }
                        let dir = clips.as_ref().map(ClipsDir::get);
                        clip_file(dir.as_deref(), &file, &headers).await
                    }
                },
            ),
        );
    if let Some(source) = endpoints.page {
        app = app.merge(page::routes(source, access));
    }
    let app = app.fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics or /health\n") });
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

/// A clip file name as the agent makes them: letters, digits, `-`, `_` and `.`, not
/// starting with a dot, ending in `.mp4`. Anything else is not a clip.
pub fn is_clip_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.ends_with(".mp4")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a `Range` header asks of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// The whole file: no header, or one this server does not take (several ranges,
    /// other units), which HTTP lets it ignore.
    Whole,
    /// Bytes `.0` to `.1`, both included.
    Part(u64, u64),
    /// Nothing of the file (416).
    Unsatisfiable,
}

/// The byte range a `Range` header asks of a `len`-byte file.
pub fn byte_range(header: Option<&str>, len: u64) -> Ranged {
    parse_range(header, len).unwrap_or(Ranged::Unsatisfiable)
}

fn parse_range(header: Option<&str>, len: u64) -> Option<Ranged> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Some(Ranged::Whole);
    };
    if spec.contains(',') {
        return Some(Ranged::Whole);
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return None;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return None;
        }
        (start, end)
    };
    Some(Ranged::Part(range.0, range.1))
}

async fn clip_file(dir: Option<&Path>, name: &str, headers: &HeaderMap) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such clip\n").into_response();
    let Some(dir) = dir else { return not_found() };
    if !is_clip_name(name) {
        return not_found();
    }
    // A link in the directory must not lead out of it.
    let (Ok(root), Ok(path)) = (
        tokio::fs::canonicalize(dir).await,
        tokio::fs::canonicalize(dir.join(name)).await,
    ) else {
        return not_found();
    };
    if path.parent() != Some(root.as_path()) {
        return not_found();
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let Ok(meta) = file.metadata().await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let len = meta.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match byte_range(range, len) {
        Ranged::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        Ranged::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ranged::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return not_found();
    }
    let reader = file.take(count);
    let body = futures::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("video/mp4"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_clip_file_names_are_served() {
        let rows = [
            ("gate-1700000000000.mp4", true),
            ("cam_2.part-3.mp4", true),
            ("..", false),
            ("../secret.mp4", false),
            ("a/b.mp4", false),
            (".hidden.mp4", false),
            ("clip.mp4\0", false),
            ("clip.txt", false),
            ("", false),
            ("%2e%2e.mp4", false),
        ];
        for (name, ok) in rows {
            assert_eq!(is_clip_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn range_headers_give_the_bytes_asked_or_an_error() {
        // (header, file length, expected)
        use Ranged::*;
        let rows = [
            (None, 100, Whole),
            (Some("bytes=0-9"), 100, Part(0, 9)),
            (Some("bytes=90-"), 100, Part(90, 99)),
            (Some("bytes=-10"), 100, Part(90, 99)),
            (Some("bytes=50-500"), 100, Part(50, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=9-3"), 100, Unsatisfiable),
            (Some("bytes=x-3"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, Whole),
            (Some("items=0-1"), 100, Whole),
        ];
        for (h, len, want) in rows {
            assert_eq!(byte_range(h, len), want, "{h:?} of {len}");
        }
    }

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
