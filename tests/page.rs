//! The page on the telemetry listener, in a real browser: Debian's headless Chromium,
//! driven over the DevTools protocol, against `edge-agent run` with a camera on the
//! in-process RTSP server. The frame and its overlays must be on screen (a screenshot
//! differs from one without the overlays inside the zone, and only there), clicks on
//! the frame must give TOML that `edge-agent validate` accepts, and a listener off
//! loopback must refuse the page, its frames and the clips without the token while
//! `/metrics` and `/health` answer as before. With escalation on, a worker finds the
//! square, and the incident's snapshot (read back from the broker by the agent) shows
//! on the page as an image.
//!
//! Chromium: `chromium` on PATH or `$EDGE_AGENT_CHROMIUM`; without it the tests skip
//! (and fail under `EDGE_AGENT_REQUIRE_ALL=1`). With `EDGE_AGENT_PAGE_SCREENSHOT=FILE`
//! the first test also saves its screenshot there (README's picture).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use edge_agent::image::RgbImage;
use edge_agent::ingest::synthetic::Scene;
use serde_json::{json, Value};

use crate::common::agent::{http_get, repo, Agent};
use crate::common::broker::free_port;
use crate::common::rtsp_server::RtspTestServer;
use crate::common::{skip, wait};

const ZONE: [[f64; 2]; 4] = [[0.1, 0.7], [0.45, 0.7], [0.45, 0.95], [0.1, 0.95]];
const MASK: [[f64; 2]; 4] = [[0.6, 0.05], [0.95, 0.05], [0.95, 0.3], [0.6, 0.3]];
const TOKEN: &str = "pa;ge tok=en";

/// The agent with one camera `gate` (a moving square on a textured background), its
/// zone and motion mask, on an RTSP server of its own; the page on `listen`.
struct Rig {
    agent: Agent,
    _server: RtspTestServer,
    dir: tempfile::TempDir,
    /// Where a client reaches the listener.
    addr: String,
}

impl Rig {
    fn start(listen_host: &str, token: Option<&str>) -> Rig {
        Rig::start_with(listen_host, token, Scene::sized(320, 180, 10), false)
    }

    /// [`Rig::start`] with its scene, and with escalation on or off.
    fn start_with(listen_host: &str, token: Option<&str>, scene: Scene, escalate: bool) -> Rig {
        let server = RtspTestServer::start(scene);
        let dir = tempfile::tempdir().unwrap();
        let token_line = match token {
            Some(t) => {
                std::fs::write(dir.path().join("page-token"), format!("{t}\n")).unwrap();
                format!("page_token_file = {:?}\n", dir.path().join("page-token"))
            }
            None => String::new(),
        };
        let text = format!(
            "{}\n[transport]\nkind = \"embedded\"\nembedded_port = {}\n\n\
             [telemetry]\nmetrics_listen = \"{listen_host}:0\"\nheartbeat_interval = \"0s\"\n{token_line}",
            base_config(&server.url("/gate"), escalate),
            free_port(),
        );
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, text).unwrap();
        let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
        let bound = agent.metrics_addr(Duration::from_secs(30));
        let port = bound.rsplit(':').next().unwrap();
        let addr = format!("127.0.0.1:{port}");
        Rig {
            agent,
            _server: server,
            dir,
            addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until the camera streams and its newest frame is served.
    fn wait_streaming(&self, headers: &[(&str, &str)]) {
        self.agent
            .wait_until("the camera streaming", Duration::from_secs(60), || {
                let h: Value =
                    serde_json::from_str(&http_get(&self.addr, "/health")).unwrap_or(Value::Null);
                h["cameras"]["gate"]["state"] == "Streaming"
                    && h["cameras"]["gate"]["frames"].as_u64() > Some(0)
            });
        self.agent.wait_until(
            "a frame on /page/frame/gate",
            Duration::from_secs(30),
            || request(&self.addr, "/page/frame/gate", headers).0 == 200,
        );
    }
}

/// The device and camera part of the configuration; the test's TOML goes on top.
fn base_config(camera_url: &str, escalate: bool) -> String {
    let poly = |p: &[[f64; 2]]| {
        let pts: Vec<String> = p.iter().map(|[x, y]| format!("[{x:?}, {y:?}]")).collect();
        format!("[{}]", pts.join(", "))
    };
    format!(
        "[device]\nid = \"page-test\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"{camera_url}\"\n\
         analysis_fps = 5\n\n[cameras.escalation]\nenabled = {escalate}\n\n[cameras.motion]\nmasks = [{}]\n\n[cameras.zones.lawn]\npoints = {}{}",
        poly(&MASK),
        poly(&ZONE),
        if escalate {
            "\n[scaling]\nmax_workers = 1\n"
        } else {
            ""
        }
    )
}

/// `GET path` with `headers`: the status and the body.
fn request(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // Chromium's DevTools answers only a Host that is an address or localhost.
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let status = std::str::from_utf8(&out[..out.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Headless Chromium with one tab, driven over the DevTools protocol.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (after [`skip`]) when Chromium is not installed.
    fn start() -> Option<Browser> {
        let exe = std::env::var_os("EDGE_AGENT_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find_on_path("chromium"));
        let Some(exe) = exe else {
            skip("chromium not found (apt-get install chromium, or set EDGE_AGENT_CHROMIUM)");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=900,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        // Chromium writes the port it took into its profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait::value("Chromium's DevTools port", Duration::from_secs(60), || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        });
        let devtools = format!("127.0.0.1:{port}");
        let ws_url = wait::value("a page target", Duration::from_secs(30), || {
            let list: Value =
                serde_json::from_slice(&request(&devtools, "/json/list", &[]).1).ok()?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        });
        let stream = TcpStream::connect(&devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools WebSocket");
        let mut b = Browser {
            child,
            ws,
            next: 0,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        Some(b)
    }

    /// Calls `method` and returns its result (events in between are passed over).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to Chromium");
        loop {
            let m = self.ws.read().expect("an answer from Chromium");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (a promise is awaited).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        wait::until("the page loaded", Duration::from_secs(30), || {
            self.eval("document.readyState") == "complete"
        });
    }

    fn click(&mut self, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    fn screenshot(&mut self) -> (Vec<u8>, RgbImage) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        let img = edge_agent::image::decode_png(&png).expect("a PNG screenshot");
        (png, img)
    }

    /// The frame's place on the page, in CSS pixels: left, top, width, height.
    fn view_rect(&mut self) -> [f64; 4] {
        let r = self.eval(
            "(() => { const r = document.querySelector('[data-camera=\"gate\"] .view')\
             .getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()",
        );
        let n: Vec<f64> = r
            .as_array()
            .expect("the camera's view")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        [n[0], n[1], n[2], n[3]]
    }

    /// Waits until the camera's frame is loaded and its overlay drawn.
    fn wait_drawn(&mut self) {
        wait::until(
            "the frame and the zone on the page",
            Duration::from_secs(30),
            || {
                self.eval(
                    "(() => { const c = document.querySelector('[data-camera=\"gate\"]');\
                     return !!c && c.querySelector('.frame').naturalWidth > 0 &&\
                     c.querySelectorAll('.overlay polygon.zone').length === 1 &&\
                     c.querySelectorAll('.overlay polygon.mask').length === 1; })()",
                ) == true
            },
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Mean absolute difference per channel of two screenshots over a box of the frame
/// (fractions of the `view` rectangle, CSS pixels scaled to the image's).
fn mean_diff(a: &RgbImage, b: &RgbImage, view: [f64; 4], scale: f64, area: [f64; 4]) -> f64 {
    let [l, t, w, h] = view;
    let px = |fx: f64, fy: f64| (((l + fx * w) * scale) as u32, ((t + fy * h) * scale) as u32);
    let (x0, y0) = px(area[0], area[1]);
    let (x1, y1) = px(area[2], area[3]);
    let (mut sum, mut n) = (0u64, 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            let i = (y * a.width + x) as usize * 3;
            for c in 0..3 {
                sum += (i32::from(a.data[i + c]) - i32::from(b.data[i + c])).unsigned_abs() as u64;
                n += 1;
            }
        }
    }
    sum as f64 / n.max(1) as f64
}

/// Mean grey level and its spread over a box of the frame.
fn brightness(img: &RgbImage, view: [f64; 4], scale: f64, area: [f64; 4]) -> (f64, f64) {
    let [l, t, w, h] = view;
    let mut vals = Vec::new();
    let (x0, x1) = (
        ((l + area[0] * w) * scale) as u32,
        ((l + area[2] * w) * scale) as u32,
    );
    let (y0, y1) = (
        ((t + area[1] * h) * scale) as u32,
        ((t + area[3] * h) * scale) as u32,
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let i = (y * img.width + x) as usize * 3;
            vals.push(
                img.data[i..i + 3]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>()
                    / 3.0,
            );
        }
    }
    let mean = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len().max(1) as f64;
    (mean, var.sqrt())
}

#[test]
fn the_page_shows_the_frame_with_its_zone_mask_motion_boxes_and_clicked_polygon_drawn_over_it() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let rig = Rig::start("127.0.0.1", None);
    rig.wait_streaming(&[]);
    browser.navigate(&rig.url("/"));
    browser.wait_drawn();
    // The square moves two seconds in five: its motion boxes reach the page.
    wait::until("a motion box on the page", Duration::from_secs(30), || {
        browser
            .eval("document.querySelectorAll('[data-camera=\"gate\"] .overlay rect.motion').length")
            .as_u64()
            > Some(0)
    });
    let state = browser.eval("document.querySelector('[data-camera=\"gate\"] .state').innerText");
    let state = state.as_str().unwrap_or_default();
    assert!(state.contains("Streaming"), "state shown: {state}");

    // A polygon being drawn, clear of the zone, the mask and the square's path.
    let view = browser.view_rect();
    let [l, t, w, h] = view;
    for (fx, fy) in [(0.6, 0.65), (0.92, 0.6), (0.9, 0.92), (0.62, 0.9)] {
        browser.click((l + fx * w).round(), (t + fy * h).round());
    }
    let (png, with) = browser.screenshot();
    if let Some(out) = std::env::var_os("EDGE_AGENT_PAGE_SCREENSHOT") {
        std::fs::write(&out, &png).unwrap();
    }
    browser.eval(
        "document.querySelectorAll('.overlay, .labels').forEach(e => e.style.visibility = 'hidden'); true",
    );
    let (_, without) = browser.screenshot();
    let scale = f64::from(with.width) / browser.eval("window.innerWidth").as_f64().unwrap();

    // Inside the zone, the mask and the polygon drawn (clear of their edges and the
    // square's path) the overlay tints the frame; where nothing is drawn it changes
    // nothing.
    let inside_zone = mean_diff(&with, &without, view, scale, [0.15, 0.75, 0.4, 0.9]);
    let inside_mask = mean_diff(&with, &without, view, scale, [0.65, 0.1, 0.9, 0.25]);
    let inside_draft = mean_diff(&with, &without, view, scale, [0.68, 0.7, 0.85, 0.85]);
    let nothing = mean_diff(&with, &without, view, scale, [0.05, 0.05, 0.4, 0.3]);
    assert!(
        inside_zone > 15.0,
        "the zone is not drawn: {inside_zone:.1}"
    );
    assert!(
        inside_draft > 15.0,
        "the polygon drawn is not: {inside_draft:.1}"
    );
    assert!(
        inside_mask > 15.0,
        "the mask is not drawn: {inside_mask:.1}"
    );
    assert!(
        nothing < 5.0,
        "the frame changed where nothing is drawn: {nothing:.1}"
    );
    // The frame itself: the scene's textured background, not the empty black view.
    let (mean, spread) = brightness(&without, view, scale, [0.05, 0.05, 0.4, 0.3]);
    assert!(
        mean > 40.0 && spread > 10.0,
        "no frame: mean {mean:.0}, spread {spread:.0}"
    );
    // Nothing of a secret: the camera URL is not in what the page reads.
    let cameras = http_get(&rig.addr, "/page/cameras.json");
    assert!(!cameras.contains("rtsp://"), "{cameras}");
}

#[test]
fn clicks_on_the_frame_give_zone_and_mask_toml_that_validate_accepts() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let rig = Rig::start("127.0.0.1", None);
    rig.wait_streaming(&[]);
    browser.navigate(&rig.url("/"));
    browser.wait_drawn();
    let [l, t, w, h] = browser.view_rect();
    let toml = |b: &mut Browser| {
        b.eval("document.querySelector('[data-camera=\"gate\"] .toml').textContent")
            .as_str()
            .unwrap()
            .to_string()
    };
    // Whole pixels, as a mouse gives; the corners are where they fall in the frame, in
    // thousandths as the page writes them.
    let round3 = |v: f64| (v.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    let mut corners = Vec::new();
    for (fx, fy) in [(0.2, 0.25), (0.8, 0.25), (0.8, 0.75)] {
        let (x, y) = ((l + fx * w).round(), (t + fy * h).round());
        browser.click(x, y);
        let c = [round3((x - l) / w), round3((y - t) / h)];
        assert!(
            (c[0] - fx).abs() < 0.005 && (c[1] - fy).abs() < 0.005,
            "{c:?}"
        );
        corners.push(c);
    }
    let drawn = format!(
        "[{}]",
        corners
            .iter()
            .map(|[x, y]| format!("[{x:?}, {y:?}]"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    browser.eval(
        "(() => { const n = document.querySelector('[data-camera=\"gate\"] .name');\
         n.value = 'drive way'; n.dispatchEvent(new Event('input')); return true; })()",
    );
    let zone = toml(&mut browser);
    assert_eq!(
        zone,
        format!("[[cameras]]\nid = \"gate\"\n\n[cameras.zones.drive_way]\npoints = {drawn}\n")
    );
    // The same corners as a motion mask: the camera's mask stays, the new one is added.
    browser.eval(
        "(() => { const k = document.querySelector('[data-camera=\"gate\"] .kind');\
         k.value = 'mask'; k.dispatchEvent(new Event('change')); return true; })()",
    );
    let mask = toml(&mut browser);
    assert_eq!(
        mask,
        format!(
            "[[cameras]]\nid = \"gate\"\n\n[cameras.motion]\nmasks = [\n  \
             [[0.6, 0.05], [0.95, 0.05], [0.95, 0.3], [0.6, 0.3]],\n  {drawn},\n]\n"
        )
    );

    // Pasted into a device file on top of the box's configuration, both validate.
    for (name, text) in [("zone", &zone), ("mask", &mask)] {
        let base = rig.dir.path().join("base.toml");
        std::fs::write(&base, base_config("rtsp://127.0.0.1:1/gate", false)).unwrap();
        let device = rig.dir.path().join(format!("{name}.toml"));
        std::fs::write(&device, text).unwrap();
        let out = validate(&[&base, &device]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let effective: toml::Value =
            toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("validate prints TOML");
        let camera = &effective["cameras"][0];
        let drawn = json!(corners);
        let got = match name {
            "zone" => camera["zones"]["drive_way"]["points"].clone(),
            _ => camera["motion"]["masks"][1].clone(),
        };
        assert_eq!(serde_json::to_value(&got).unwrap(), drawn, "{name}");
        if name == "mask" {
            let kept = serde_json::to_value(&camera["motion"]["masks"][0]).unwrap();
            assert_eq!(kept, json!(MASK), "the camera's own mask");
        }
    }
}

fn validate(files: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    cmd.arg("validate").current_dir(repo());
    for f in files {
        cmd.arg("--config").arg(f);
    }
    cmd.output().expect("edge-agent validate runs")
}

#[test]
fn off_loopback_the_page_frames_and_clips_need_the_token_and_metrics_and_health_do_not() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let rig = Rig::start("0.0.0.0", Some(TOKEN));
    let bearer = format!("Bearer {TOKEN}");
    rig.wait_streaming(&[("Authorization", &bearer)]);
    for path in [
        "/",
        "/page/cameras.json",
        "/page/frame/gate",
        "/page/app.js",
        "/clips/gate-1.mp4",
    ] {
        let (status, body) = request(&rig.addr, path, &[]);
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = request(&rig.addr, path, &[("Authorization", "Bearer pa;ge")]);
        assert_eq!(status, 401, "{path} with a wrong token");
        assert!(!String::from_utf8_lossy(&body).contains(TOKEN));
    }
    for path in ["/metrics", "/health"] {
        assert_eq!(
            request(&rig.addr, path, &[]).0,
            200,
            "{path} needs no token"
        );
    }
    let (status, jpeg) = request(&rig.addr, "/page/frame/gate", &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    let frame = edge_agent::image::decode_jpeg(&jpeg).expect("the frame is a JPEG");
    // The camera's picture at detection size: 16:9 like the camera.
    assert!(
        frame.width >= 160 && (frame.width * 9).abs_diff(frame.height * 16) <= 16,
        "{}x{}",
        frame.width,
        frame.height
    );

    // In the browser: refused without the token; with it once in the address, the
    // page loads, drops the token from the address and draws the frame.
    browser.navigate(&rig.url("/"));
    let text = browser.eval("document.body.innerText");
    assert!(
        text.as_str()
            .unwrap_or_default()
            .contains("needs its token"),
        "{text}"
    );
    let encoded: String = TOKEN
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    browser.navigate(&rig.url(&format!("/?token={encoded}")));
    browser.wait_drawn();
    let address = browser.eval("location.href");
    assert_eq!(
        address,
        json!(rig.url("/")),
        "the token stays in the address"
    );
    let html = browser.eval("document.documentElement.outerHTML");
    assert!(
        !html.as_str().unwrap().contains("tok=en"),
        "the token is in the page"
    );
    let cookie = browser.eval("document.cookie");
    assert_eq!(cookie, "", "the cookie is readable by the page's scripts");
}

#[test]
fn an_incidents_snapshot_shows_on_the_page_as_an_image() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    // The red square a worker finds as `fire`, at a size the test model sees whole.
    let rig = Rig::start_with("127.0.0.1", None, Scene::sized(640, 360, 10), true);
    rig.wait_streaming(&[]);
    // An incident that names a snapshot the agent holds.
    let id = wait::value_explained(
        "an incident with its snapshot on the page",
        Duration::from_secs(180),
        || {
            let cameras: Value =
                serde_json::from_slice(&request(&rig.addr, "/page/cameras.json", &[]).1).ok()?;
            let incidents = cameras["cameras"][0]["incidents"].as_array()?.clone();
            incidents.iter().find_map(|i| {
                let id = i["snapshot"].as_str()?;
                let path = format!("/page/snapshot/{id}");
                (request(&rig.addr, &path, &[]).0 == 200).then(|| id.to_string())
            })
        },
        || format!("; log:\n{}", rig.agent.log_text()),
    );
    let (status, jpeg) = request(&rig.addr, &format!("/page/snapshot/{id}"), &[]);
    assert_eq!(status, 200);
    let img = edge_agent::image::decode_jpeg(&jpeg).expect("the snapshot is a JPEG");
    assert_eq!(
        (img.width, img.height),
        (640, 360),
        "the whole camera frame"
    );
    // Unknown ids and anything that is not a snapshot id: 404, nothing read.
    for path in [
        "/page/snapshot/gate-1-1",
        "/page/snapshot/..%2F..%2Fetc%2Fpasswd",
        "/page/snapshot/%2Fetc%2Fpasswd",
        "/page/snapshot/a.jpg",
    ] {
        assert_eq!(request(&rig.addr, path, &[]).0, 404, "{path}");
    }

    // In the browser: the incident's thumbnail is an image that loaded.
    browser.navigate(&rig.url("/"));
    let probe = format!(
        "(() => {{ const i = document.querySelector('[data-camera=\"gate\"] .incidents \
         img.snapshot[src=\"/page/snapshot/{id}\"]'); \
         return !!i && i.complete && i.naturalWidth; }})()"
    );
    let width = wait::value(
        "the snapshot loaded on the page",
        Duration::from_secs(30),
        || browser.eval(&probe).as_u64().filter(|w| *w > 0),
    );
    assert_eq!(width, 640, "the snapshot's own width");
}
