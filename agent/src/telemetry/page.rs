//! The page on the telemetry listener: what each camera sees (its newest frame as a
//! JPEG, with motion boxes, motion masks and zones drawn over it), its state, and a
//! polygon tool that turns clicks on the frame into the TOML of a motion mask or a zone.
//! The page only reads; it never writes configuration.
//!
//! - `GET /` the page (HTML, CSS and JavaScript built into the binary, no framework);
//!   `GET /page/app.js`, `/page/app.css` its parts.
//! - `GET /page/cameras.json` every camera as [`PageSource::cameras`] describes it.
//! - `GET /page/frame/{camera}` the camera's newest frame as a JPEG. Encoded only when
//!   asked, at most once per camera per [`FRAME_EVERY`]: a request within that gets
//!   the same bytes. Nothing is converted or encoded while nobody looks.
//! - `GET /page/snapshot/{id}` the snapshot JPEG a worker published under `id` (named
//!   by an incident), as [`PageSource::snapshot`] keeps it; 404 for an id it does not
//!   hold or one that is not a snapshot id (letters, digits, `-`, `_`).
//!
//! Access ([`Access`]): with `telemetry.page_token_file` the page, its frames, its
//! snapshots and `/clips` need the token (401 without it), offered once as `/?token=...` (answered
//! with a cookie and a redirect that drops it from the address), as a cookie or as
//! `Authorization: Bearer`. Without a token they are open on a loopback listener and
//! refused (403) on any other. `/metrics` and `/health` never need it. The token is
//! compared in constant time and never written into the page.
//!
//! The data comes from a [`PageSource`] the agent implements (telemetry comes before
//! the cameras in the import order, so it sees them only through this trait).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::config::PageToken;
use crate::sync::lock;

/// A frame is encoded at most this often per camera.
pub const FRAME_EVERY: Duration = Duration::from_secs(1);
/// JPEG quality of the page's frames: a picture to look at, not to detect on.
pub const JPEG_QUALITY: u8 = 75;
/// The cookie that carries the token after `/?token=...`.
pub const COOKIE: &str = "edge_agent_page";

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// A camera's newest frame, packed RGB.
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// What the page shows, from the agent's cameras.
pub trait PageSource: Send + Sync {
    /// Every camera: `{"cameras": [{"id", "state", "decoder", "frames", "restarts",
    /// "source_size", "motion": {"boxes": [[x, y, w, h]], "at_ms"}, "masks": [polygon],
    /// "zones": {name: polygon}}]}`, polygons and boxes in fractions of the frame. No
    /// URL and no secret.
    fn cameras(&self) -> serde_json::Value;
    /// The camera's newest frame; `None` for an unknown camera or before its first
    /// frame. Blocking: it converts a decoded frame.
    fn frame(&self, camera: &str) -> Option<RgbFrame>;
    /// The snapshot JPEG with `id` (already checked by [`snapshot_id_ok`]); `None`
    /// when not kept. May block (it may read a file).
    fn snapshot(&self, id: &str) -> Option<Bytes>;
}

/// True for an id a worker gives a snapshot (`[A-Za-z0-9_-]`, at most 200 characters):
/// nothing else is looked up, so no id reaches outside the snapshots.
pub fn snapshot_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Who may see the page, its frames and the clips.
#[derive(Clone, Debug)]
pub enum Access {
    /// A loopback listener without a token.
    Open,
    /// The token is needed.
    Token(PageToken),
    /// Not on loopback and no token set: refused to everyone.
    Closed,
}

impl Access {
    /// The rule for a listener bound to `addr`.
    pub fn for_listener(addr: SocketAddr, token: Option<PageToken>) -> Access {
        match token {
            Some(t) => Access::Token(t),
            None if addr.ip().to_canonical().is_loopback() => Access::Open,
            None => Access::Closed,
        }
    }

    /// The refusal of a request that may not be served; `None` when it may.
    pub fn refusal(&self, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
        match self {
            Access::Open => None,
            Access::Closed => Some(
                (
                    StatusCode::FORBIDDEN,
                    "the page is off on a listener that is not on loopback until \
                 telemetry.page_token_file is set\n",
                )
                    .into_response(),
            ),
            Access::Token(t) => {
                if offered_tokens(headers, uri).any(|o| t.matches(&o)) {
                    None
                } else {
                    Some(
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "this page needs its token: open /?token=TOKEN\n",
                        )
                            .into_response(),
                    )
                }
            }
        }
    }
}

/// Every token a request offers: its `Authorization: Bearer`, its cookie, its
/// `token` query parameter.
fn offered_tokens<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> impl Iterator<Item = String> + 'a {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(decode);
    bearer.chain(cookies).chain(query_token(uri))
}

/// The `token` query parameter, decoded.
fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(|v| decode(&v.replace('+', " ")))
}

fn decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// One camera's newest JPEG and when it was encoded; requests wait on its lock.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Bytes)>>>;

/// The newest JPEG of each camera, and when it was encoded.
#[derive(Default)]
pub struct FrameCache {
    cameras: Mutex<HashMap<String, Slot>>,
}

impl FrameCache {
    /// The camera's JPEG: the one encoded within [`FRAME_EVERY`] of `now`, else a new
    /// one from `encode` (run off the runtime's threads). Requests for one camera wait
    /// for each other, so two at once cost one encode.
    pub async fn get<F>(&self, camera: &str, now: Instant, encode: F) -> Option<Bytes>
    where
        F: FnOnce() -> Option<Vec<u8>> + Send + 'static,
    {
        let slot = lock(&self.cameras)
            .entry(camera.to_string())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some((at, jpeg)) = &*held {
            if now.saturating_duration_since(*at) < FRAME_EVERY {
                return Some(jpeg.clone());
            }
        }
        let fresh = tokio::task::spawn_blocking(encode).await.ok().flatten();
        match fresh {
            Some(jpeg) => {
                let jpeg = Bytes::from(jpeg);
                *held = Some((now, jpeg.clone()));
                Some(jpeg)
            }
            None => {
                // An unknown camera (or one without a frame yet) leaves no entry behind.
                if held.is_none() {
                    lock(&self.cameras).remove(camera);
                }
                None
            }
        }
    }
}

/// The page's routes, each behind `access`.
pub fn routes(source: Arc<dyn PageSource>, access: Access) -> Router {
    let cache = Arc::new(FrameCache::default());
    let a = access.clone();
    let index = move |headers: HeaderMap, uri: Uri| {
        let access = a.clone();
        async move { index(&access, &headers, &uri) }
    };
    let asset = |body: &'static str, kind: &'static str| {
        let access = access.clone();
        move |headers: HeaderMap, uri: Uri| {
            let access = access.clone();
            async move {
                if let Some(refused) = access.refusal(&headers, &uri) {
                    return refused;
                }
                ([(header::CONTENT_TYPE, kind)], body).into_response()
            }
        }
    };
    let (a, s) = (access.clone(), source.clone());
    let cameras = move |headers: HeaderMap, uri: Uri| {
        let (access, source) = (a.clone(), s.clone());
        async move {
            if let Some(refused) = access.refusal(&headers, &uri) {
                return refused;
            }
            let body = tokio::task::spawn_blocking(move || source.cameras().to_string())
                .await
                .unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response()
        }
    };
    let (a, s) = (access.clone(), source.clone());
    let snapshot = move |UrlPath(id): UrlPath<String>, headers: HeaderMap, uri: Uri| {
        let (access, source) = (a.clone(), s.clone());
        async move {
            if let Some(refused) = access.refusal(&headers, &uri) {
                return refused;
            }
            let jpeg = if snapshot_id_ok(&id) {
                tokio::task::spawn_blocking(move || source.snapshot(&id))
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            match jpeg {
                // A snapshot never changes under its id.
                Some(jpeg) => (
                    [
                        (header::CONTENT_TYPE, "image/jpeg"),
                        (header::CACHE_CONTROL, "private, max-age=3600"),
                    ],
                    jpeg,
                )
                    .into_response(),
                None => (StatusCode::NOT_FOUND, "no such snapshot here\n").into_response(),
            }
        }
    };
    let a = access.clone();
    let frame = move |UrlPath(camera): UrlPath<String>, headers: HeaderMap, uri: Uri| {
        let (access, source, cache) = (a.clone(), source.clone(), cache.clone());
        async move {
            if let Some(refused) = access.refusal(&headers, &uri) {
                return refused;
            }
            let id = camera.clone();
            let encode = move || {
                let f = source.frame(&id)?;
                crate::image::encode_rgb(&f.rgb, f.width, f.height, JPEG_QUALITY).ok()
            };
            match cache.get(&camera, Instant::now(), encode).await {
                Some(jpeg) => (
                    [
                        (header::CONTENT_TYPE, "image/jpeg"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    jpeg,
                )
                    .into_response(),
                None => (StatusCode::NOT_FOUND, "no frame from this camera yet\n").into_response(),
            }
        }
    };
    Router::new()
        .route("/", get(index))
        .route(
            "/page/app.js",
            get(asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/page/app.css",
            get(asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/page/cameras.json", get(cameras))
        .route("/page/frame/:camera", get(frame))
        .route("/page/snapshot/:id", get(snapshot))
}

/// `/`: the page; `/?token=` with the right token sets the cookie and redirects to `/`,
/// so the token does not stay in the address bar or the history.
fn index(access: &Access, headers: &HeaderMap, uri: &Uri) -> Response {
    if let Some(refused) = access.refusal(headers, uri) {
        return refused;
    }
    if let (Access::Token(t), Some(_)) = (access, query_token(uri)) {
        let value =
            percent_encoding::utf8_percent_encode(t.expose(), percent_encoding::NON_ALPHANUMERIC);
        let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, cookie),
            ],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(header::HeaderName, &str)], uri: &str) -> (HeaderMap, Uri) {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, v.parse().unwrap());
        }
        (h, uri.parse().unwrap())
    }

    #[test]
    fn the_token_is_taken_from_a_bearer_header_a_cookie_or_the_query_and_nothing_else() {
        let access = Access::Token(PageToken::new("s3cr et;=".into()));
        // (headers, uri, allowed)
        type Row<'a> = (Vec<(header::HeaderName, &'a str)>, &'a str, bool);
        let rows: Vec<Row> = vec![
            (vec![], "/", false),
            (vec![(header::AUTHORIZATION, "Bearer s3cr et;=")], "/", true),
            (vec![(header::AUTHORIZATION, "Bearer s3cr et")], "/", false),
            (vec![(header::AUTHORIZATION, "Basic s3cr et;=")], "/", false),
            (
                vec![(header::COOKIE, "a=b; edge_agent_page=s3cr%20et%3B%3D")],
                "/",
                true,
            ),
            (vec![(header::COOKIE, "edge_agent_page=wrong")], "/", false),
            (
                vec![(header::COOKIE, "other_edge_agent_page=s3cr%20et%3B%3D")],
                "/",
                false,
            ),
            (vec![], "/?token=s3cr%20et%3B%3D", true),
            (vec![], "/?x=1&token=s3cr+et%3B%3D", true),
            (vec![], "/?token=s3cr", false),
            (vec![], "/?tokens=s3cr%20et%3B%3D", false),
        ];
        for (headers, uri, allowed) in rows {
            let (h, u) = req(&headers, uri);
            let got = access.refusal(&h, &u);
            assert_eq!(got.is_none(), allowed, "{headers:?} {uri}");
            if let Some(r) = got {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            }
        }
    }

    #[test]
    fn without_a_token_only_a_loopback_listener_serves_the_page() {
        let (h, u) = req(&[], "/");
        for (addr, open) in [
            ("127.0.0.1:9464", true),
            ("[::1]:9464", true),
            ("[::ffff:127.0.0.1]:9464", true),
            ("0.0.0.0:9464", false),
            ("10.0.0.5:9464", false),
            ("[::]:9464", false),
        ] {
            let access = Access::for_listener(addr.parse().unwrap(), None);
            match access.refusal(&h, &u) {
                None => assert!(open, "{addr} served the page"),
                Some(r) => {
                    assert!(!open, "{addr} refused the page");
                    assert_eq!(r.status(), StatusCode::FORBIDDEN);
                }
            }
        }
        let token = Access::for_listener(
            "127.0.0.1:1".parse().unwrap(),
            Some(PageToken::new("t".into())),
        );
        assert!(
            token.refusal(&h, &u).is_some(),
            "a token set is needed on loopback too"
        );
    }

    #[test]
    fn only_snapshot_ids_are_looked_up() {
        for (id, ok) in [
            ("gate-1795651688342-52", true),
            ("a_b-C9", true),
            ("", false),
            ("..", false),
            ("../etc/passwd", false),
            ("a/b", false),
            ("a.jpg", false),
            ("a%2Fb", false),
            ("a b", false),
            ("\u{e9}", false),
        ] {
            assert_eq!(snapshot_id_ok(id), ok, "{id:?}");
        }
        assert!(!snapshot_id_ok(&"a".repeat(201)));
    }

    #[test]
    fn a_token_reads_as_stars() {
        let t = PageToken::new("hunter2".into());
        assert_eq!(format!("{t:?}"), "PageToken(***)");
        assert!(!format!("{:?}", Access::Token(t)).contains("hunter2"));
    }

    #[tokio::test]
    async fn a_frame_is_encoded_at_most_once_a_second_per_camera() {
        let cache = FrameCache::default();
        let encodes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let encoder = |n: u8| {
            let e = encodes.clone();
            move || {
                e.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(vec![n])
            }
        };
        let t0 = Instant::now();
        assert_eq!(cache.get("a", t0, encoder(1)).await.unwrap()[..], [1]);
        let later = t0 + Duration::from_millis(900);
        assert_eq!(cache.get("a", later, encoder(2)).await.unwrap()[..], [1]);
        assert_eq!(cache.get("b", later, encoder(3)).await.unwrap()[..], [3]);
        let after = t0 + FRAME_EVERY;
        assert_eq!(cache.get("a", after, encoder(4)).await.unwrap()[..], [4]);
        assert_eq!(encodes.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(cache.get("gone", after, || None).await.is_none());
        assert!(
            !lock(&cache.cameras).contains_key("gone"),
            "no entry for an unknown camera"
        );
    }
}
