//! Ingest against real GStreamer: an in-process RTSP server, files, the synthetic scene.
//! Backoffs and stall timeouts are short so that the whole module runs in about a minute.

use std::time::{Duration, Instant, SystemTime};

use edge_agent::camera::CameraConfig;
use edge_agent::ingest::synthetic::Scene;
use edge_agent::ingest::{self, CameraHandle, CameraState, GreyFrame};
use edge_agent::values::IntIn;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::common::rtsp_server::{Codec, Media, RtspTestServer};
use crate::common::{self, logs, wait};

/// A camera with test-sized timings: retries from 100 ms, capped at 1 s.
fn camera(id: &str, url: &str) -> CameraConfig {
    toml::from_str(&format!(
        "id = \"{id}\"\nurl = \"{url}\"\nstall_timeout = \"3s\"\n\
         [backoff]\nmin = \"100ms\"\nmax = \"1s\"\n"
    ))
    .expect("test camera config parses")
}

const BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn next(rx: &mut mpsc::Receiver<GreyFrame>, within: Duration) -> GreyFrame {
    timeout(within, rx.recv())
        .await
        .expect("a grey frame arrives in time")
        .expect("the grey channel is open")
}

/// Frames received during `span`.
async fn collect(rx: &mut mpsc::Receiver<GreyFrame>, span: Duration) -> Vec<GreyFrame> {
    let end = tokio::time::Instant::now() + span;
    let mut out = Vec::new();
    while let Ok(Some(f)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(f);
    }
    out
}

/// Stops the camera and checks its pipeline is gone: the appsink callback owned a
/// sender, so the channel closes only once the pipeline was disposed.
async fn stop_and_check_closed(cam: CameraHandle, mut rx: mpsc::Receiver<GreyFrame>) {
    let id = cam.id().clone();
    timeout(Duration::from_secs(10), cam.stopped())
        .await
        .expect("camera stops within 10 s");
    let closed = timeout(Duration::from_secs(5), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "camera {id}: grey channel still open after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grey_frames_arrive_with_the_configured_size_and_rate_and_colour_frames_on_demand() {
    logs::capture();
    let srv = RtspTestServer::start(Scene::default());
    let mut cfg = camera("cam-rate", &srv.url("/rate"));
    cfg.analysis_width = IntIn::new(160).unwrap();
    cfg.analysis_fps = IntIn::new(5).unwrap();
    cfg.detect_width = IntIn::new(320).unwrap();
    let (tx, mut rx) = mpsc::channel(32);
    let cam = ingest::spawn_camera(cfg, tx, CancellationToken::new());

    let first = next(&mut rx, Duration::from_secs(20)).await;
    let frames = collect(&mut rx, Duration::from_secs(4)).await;
    for f in std::iter::once(&first).chain(&frames) {
        assert_eq!(&*f.camera, "cam-rate");
        assert_eq!((f.width, f.height), (160, 90), "analysis size keeps 16:9");
        assert_eq!(f.data.len(), 160 * 90, "tightly packed luma");
        let age = SystemTime::now().duration_since(f.captured).unwrap();
        assert!(age < Duration::from_secs(10), "capture time is wall clock");
    }
    // The rate is checked by the source's own frame numbers below (one in six of a
    // 30 fps source), not by how many arrive in 4 s of wall time: that count is
    // GStreamer's real time and only bounded widely, at what a machine at load 10
    // still meets (fewer when the encoder falls behind, never many more than 20).
    assert!(
        (5..=30).contains(&frames.len()),
        "{} frames in 4 s at analysis_fps 5",
        frames.len()
    );
    let gaps: Vec<u64> = frames.windows(2).map(|w| w[1].seq - w[0].seq).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    assert_eq!(
        sorted[sorted.len() / 2],
        6,
        "30 fps source sampled to 5 fps: {gaps:?}"
    );
    let mean = first.data.iter().map(|&p| p as u64).sum::<u64>() / first.data.len() as u64;
    assert!(
        (60..200).contains(&mean),
        "scene brightness, got mean {mean}"
    );

    let st = cam.status();
    assert_eq!(st.state, CameraState::Streaming);
    assert_eq!(st.decoder.as_deref(), Some("avdec_h264"));
    assert_eq!(st.source_size, Some((640, 360)));
    assert!(st.frames > st.sampled && st.sampled_out > 0, "{st:?}");

    let last = frames.last().unwrap();
    let colour = cam
        .colour_frame(last.seq)
        .expect("the newest sampled frame is kept");
    assert!(colour.seq >= last.seq);
    assert_eq!((colour.width, colour.height), (320, 180));
    assert_eq!(colour.rgb.len(), 320 * 180 * 3);
    let red = colour
        .rgb
        .chunks_exact(3)
        .filter(|p| p[0] > 150 && p[1] < 90 && p[2] < 90)
        .count();
    // The 60x60 red square is 30x30 at detection size.
    assert!((500..=1400).contains(&red), "{red} red pixels");
    let latest = cam.latest_colour().expect("latest colour frame");
    assert!(latest.seq >= colour.seq);

    stop_and_check_closed(cam, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_streams_are_decoded() {
    logs::capture();
    let srv = RtspTestServer::start(Media::Scene(Scene::sized(320, 180, 15), Codec::H265));
    let (tx, mut rx) = mpsc::channel(32);
    let cam = ingest::spawn_camera(
        camera("cam-h265", &srv.url("/h265")),
        tx,
        CancellationToken::new(),
    );
    let f = next(&mut rx, Duration::from_secs(20)).await;
    assert_eq!((f.width, f.height), (320, 180));
    assert_eq!(cam.status().decoder.as_deref(), Some("avdec_h265"));
    stop_and_check_closed(cam, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_nvidia_decoder_where_there_is_none_is_a_clear_error() {
    logs::capture();
    // Alone (a filtered run) nothing else has initialised GStreamer yet.
    gstreamer::init().unwrap();
    if gstreamer::ElementFactory::find("nvv4l2decoder").is_some() {
        common::skip("this machine has nvv4l2decoder, so it cannot be missing");
        return;
    }
    let mut cfg = camera("cam-nv", "rtsp://127.0.0.1:9/none");
    cfg.decode = ingest::Decode::Nvidia;
    let (tx, rx) = mpsc::channel(4);
    let cam = ingest::spawn_camera(cfg, tx, CancellationToken::new());
    wait::until_async("a restart", Duration::from_secs(10), || {
        cam.status().restarts >= 1
    })
    .await;
    assert_eq!(
        cam.status().last_reason.as_deref(),
        Some("camera cam-nv: decode = \"nvidia\" but nvv4l2decoder/nvvidconv are not installed")
    );
    stop_and_check_closed(cam, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_transport_is_selectable() {
    logs::capture();
    let srv = RtspTestServer::start(Scene::sized(320, 180, 15));
    let mut cfg = camera("cam-udp", &srv.url("/udp"));
    cfg.protocol = ingest::RtspProtocol::Udp;
    let (tx, mut rx) = mpsc::channel(32);
    let cam = ingest::spawn_camera(cfg, tx, CancellationToken::new());
    let f = next(&mut rx, Duration::from_secs(20)).await;
    assert_eq!((f.width, f.height), (320, 180));
    stop_and_check_closed(cam, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_synthetic_scene_shows_motion_exactly_at_the_known_frames() {
    logs::capture();
    let scene = Scene::default();
    let cfg = camera("demo-replay", "demo://moving-square");
    let (tx, mut rx) = mpsc::channel(4);
    let run = tokio::spawn(ingest::replay(cfg, false, tx, CancellationToken::new()));
    let mut frames = Vec::new();
    while let Some(f) = timeout(Duration::from_secs(30), rx.recv()).await.unwrap() {
        frames.push(f);
    }
    let summary = run.await.unwrap().expect("replay ends at EOS");
    assert_eq!(summary.frames, scene.period);
    assert_eq!(frames.len() as u64, scene.period, "every frame delivered");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64);
        assert_eq!((f.width, f.height), (320, 180));
    }
    for w in frames.windows(2) {
        let changed = w[0].data != w[1].data;
        assert_eq!(changed, scene.moving_at(w[1].seq), "frame {}", w[1].seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bikes_clip_replays_every_frame_and_reports_its_end() {
    logs::capture();
    let Some(bikes) = common::bikes_mp4() else {
        return;
    };
    let cfg = camera("bikes-replay", &format!("file://{}", bikes.display()));
    let (tx, mut rx) = mpsc::channel(4);
    let run = tokio::spawn(ingest::replay(cfg, false, tx, CancellationToken::new()));
    let mut n = 0u64;
    let mut last_pts = None;
    while let Some(f) = timeout(Duration::from_secs(30), rx.recv()).await.unwrap() {
        assert_eq!((f.width, f.height), (320, 136), "640x272 scaled to 320");
        assert_eq!(f.seq, n);
        last_pts = f.pts;
        n += 1;
    }
    let summary = run.await.unwrap().expect("replay ends at EOS");
    assert_eq!(summary.frames, 250, "bikes.mp4 has 250 frames");
    assert_eq!(n, 250);
    assert_eq!(summary.source_size, Some((640, 272)));
    let last = last_pts.expect("file frames carry stream time");
    assert!(
        last > Duration::from_millis(9_800),
        "last frame at {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bikes_clip_plays_as_a_camera_by_file_and_through_rtsp() {
    logs::capture();
    let Some(bikes) = common::bikes_mp4() else {
        return;
    };
    let srv = RtspTestServer::start(Media::File(bikes.clone()));
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let by_file = ingest::spawn_camera(
        camera("bikes-file", &format!("file://{}", bikes.display())),
        tx.clone(),
        stop.clone(),
    );
    let by_rtsp = ingest::spawn_camera(camera("bikes-rtsp", &srv.url("/bikes")), tx, stop.clone());
    let frames = collect(&mut rx, Duration::from_secs(5)).await;
    for id in ["bikes-file", "bikes-rtsp"] {
        let mine: Vec<&GreyFrame> = frames.iter().filter(|f| &*f.camera == id).collect();
        assert!(mine.len() >= 8, "{id}: {} frames in 5 s", mine.len());
        assert!(
            mine.iter().all(|f| (f.width, f.height) == (320, 136)),
            "{id}"
        );
    }
    assert_eq!(by_file.status().source_size, Some((640, 272)));
    assert_eq!(by_rtsp.status().source_size, Some((640, 272)));
    stop.cancel();
    by_file.stopped().await;
    by_rtsp.stopped().await;
    drop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_where_nothing_listens_gives_a_clear_error_and_is_retried() {
    logs::capture();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (tx, rx) = mpsc::channel(4);
    let cam = ingest::spawn_camera(
        camera("cam-nobody", &format!("rtsp://127.0.0.1:{port}/none")),
        tx,
        CancellationToken::new(),
    );
    let started = Instant::now();
    while cam.status().restarts < 3 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = cam.status();
    assert!(st.restarts >= 3, "retried: {st:?}");
    assert_ne!(st.state, CameraState::Streaming);
    assert_eq!(st.frames, 0);
    let reason = st.last_reason.unwrap();
    assert!(
        reason.contains("cam-nobody") && reason.contains("Could not open resource"),
        "{reason}"
    );
    assert!(logs::text().contains("cam-nobody"));
    stop_and_check_closed(cam, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_not_video_is_reported_naming_the_camera() {
    logs::capture();
    let srv = RtspTestServer::start(Media::AudioOnly);
    let (tx, rx) = mpsc::channel(4);
    let cam = ingest::spawn_camera(
        camera("cam-audio", &srv.url("/audio")),
        tx,
        CancellationToken::new(),
    );
    let started = Instant::now();
    while cam.status().restarts < 1 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = cam.status().last_reason.expect("a restart reason");
    assert_eq!(
        reason,
        "camera cam-audio: the stream has no video (found audio/PCMU)"
    );
    let logged = logs::text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("cam-audio") && l.contains("the stream has no video")),
        "not in the log"
    );
    stop_and_check_closed(cam, rx).await;
}

/// A stream far taller than wide (16x16384 on a real camera: a 105 MB grey frame 15
/// times a second) fails the camera with a clear error before any frame is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_beyond_the_frame_limit_fails_the_camera_naming_its_size() {
    logs::capture();
    let (tx, mut rx) = mpsc::channel(4);
    let cam = ingest::spawn_camera(
        camera("cam-tall", "demo://x?width=64&height=1024"),
        tx,
        CancellationToken::new(),
    );
    wait::until_async("a restart", Duration::from_secs(15), || {
        cam.status().restarts >= 1
    })
    .await;
    assert_eq!(
        cam.status().last_reason.as_deref(),
        Some("camera cam-tall: frame size 64x1024 is more elongated than frame_limit.aspect = 4")
    );
    assert!(rx.try_recv().is_err(), "no frame of that size is delivered");
    stop_and_check_closed(cam, rx).await;
}

/// Arrival times of one camera's grey frames, recorded by a task that drains its channel.
fn record_arrivals(
    mut rx: mpsc::Receiver<GreyFrame>,
) -> std::sync::Arc<std::sync::Mutex<Vec<Instant>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            s.lock().unwrap().push(Instant::now());
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_cameras_stream_at_once_and_one_resumes_by_itself_after_a_five_second_outage() {
    logs::capture();
    let flaky = RtspTestServer::start(Scene::sized(320, 180, 15));
    let steady = RtspTestServer::start(Scene::sized(320, 180, 15));
    let stop = CancellationToken::new();
    let mut cams = Vec::new();
    let mut arrivals = Vec::new();
    for (i, url) in [
        flaky.url("/flaky"),
        steady.url("/steady"),
        steady.url("/steady"),
        steady.url("/steady"),
    ]
    .iter()
    .enumerate()
    {
        let (tx, rx) = mpsc::channel(16);
        cams.push(ingest::spawn_camera(
            camera(&format!("cam{i}"), url),
            tx,
            stop.clone(),
        ));
        arrivals.push(record_arrivals(rx));
    }
    wait::until_async(
        "all four cameras to stream",
        Duration::from_secs(20),
        || arrivals.iter().all(|a| a.lock().unwrap().len() >= 3),
    )
    .await;
    assert!(cams
        .iter()
        .all(|c| c.status().state == CameraState::Streaming));

    flaky.stop();
    let stopped_at = Instant::now();
    wait::until_async("cam0 to notice the outage", Duration::from_secs(5), || {
        cams[0].status().restarts >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(stopped_at.elapsed())).await;
    let st = cams[0].status();
    assert_ne!(st.state, CameraState::Streaming, "{st:?}");
    assert!(st.restarts >= 2, "retried during the outage: {st:?}");
    flaky.restart();
    let restarted_at = Instant::now();

    // Resumes within its backoff cap plus the time to connect and see a key frame (1 s).
    wait::until_async(
        "cam0 to resume",
        BACKOFF_MAX + Duration::from_secs(5),
        || {
            arrivals[0]
                .lock()
                .unwrap()
                .last()
                .is_some_and(|t| *t > restarted_at)
        },
    )
    .await;
    let resumed_after = arrivals[0]
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .duration_since(restarted_at);
    eprintln!("cam0 resumed {resumed_after:?} after the server came back");
    assert_eq!(cams[0].status().state, CameraState::Streaming);
    assert!(cams[0].status().last_reason.is_some());

    // The other three never stopped: no restart, and no gap a stall would make. The gap
    // is GStreamer's real time, so its bound is what a machine at load 10 still meets
    // (3 s: the `stall_timeout` here, past which the camera would restart); 200 ms is
    // the gap at 5 fps.
    for (i, a) in arrivals.iter().enumerate().skip(1) {
        let times = a.lock().unwrap().clone();
        let window: Vec<&Instant> = times
            .iter()
            .filter(|t| **t > stopped_at - Duration::from_secs(1))
            .collect();
        let max_gap = window
            .windows(2)
            .map(|w| w[1].duration_since(*w[0]))
            .max()
            .unwrap();
        assert!(window.len() >= 10, "cam{i}: {} frames", window.len());
        assert!(
            max_gap < Duration::from_secs(3),
            "cam{i} paused {max_gap:?}"
        );
        assert_eq!(cams[i].status().restarts, 0, "cam{i}");
    }

    stop.cancel();
    for c in cams {
        timeout(Duration::from_secs(10), c.stopped())
            .await
            .expect("cameras stop within 10 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_offline_at_start_is_retried_and_never_delays_another() {
    logs::capture();
    let srv = RtspTestServer::start(Scene::sized(320, 180, 15));
    let url = srv.url("/later");
    srv.stop();
    let stop = CancellationToken::new();
    let (tx_off, rx_off) = mpsc::channel(16);
    let (tx_on, rx_on) = mpsc::channel(16);
    let offline = ingest::spawn_camera(camera("cam-later", &url), tx_off, stop.clone());
    let online = ingest::spawn_camera(
        camera("cam-now", "demo://x?width=320&height=180"),
        tx_on,
        stop.clone(),
    );
    let (later, now) = (record_arrivals(rx_off), record_arrivals(rx_on));
    wait::until_async("the online camera", Duration::from_secs(10), || {
        now.lock().unwrap().len() >= 5
    })
    .await;
    wait::until_async(
        "retries of the offline one",
        Duration::from_secs(10),
        || offline.status().restarts >= 3,
    )
    .await;
    assert!(later.lock().unwrap().is_empty());
    srv.restart();
    let back = Instant::now();
    wait::until_async(
        "the offline camera to come up",
        BACKOFF_MAX + Duration::from_secs(5),
        || !later.lock().unwrap().is_empty(),
    )
    .await;
    eprintln!("cam-later up {:?} after its server started", back.elapsed());
    assert_eq!(online.status().restarts, 0);
    stop.cancel();
    offline.stopped().await;
    online.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_stream_is_restarted_by_the_stall_watchdog_and_resumes() {
    logs::capture();
    let srv = RtspTestServer::start(Scene::sized(320, 180, 15));
    let mut cfg = camera("cam-freeze", &srv.url("/freeze"));
    cfg.stall_timeout = edge_agent::values::Dur::secs(1);
    let (tx, rx) = mpsc::channel(16);
    let cam = ingest::spawn_camera(cfg, tx, CancellationToken::new());
    let arrivals = record_arrivals(rx);
    wait::until_async("streaming", Duration::from_secs(20), || {
        arrivals.lock().unwrap().len() >= 3
    })
    .await;
    srv.freeze(true);
    wait::until_async("a stall restart", Duration::from_secs(10), || {
        cam.status().restarts >= 1
    })
    .await;
    let reason = cam.status().last_reason.unwrap();
    assert!(
        reason.starts_with("camera cam-freeze: stalled, no frame for"),
        "{reason}"
    );
    srv.freeze(false);
    let thawed = Instant::now();
    wait::until_async("frames after the thaw", Duration::from_secs(10), || {
        arrivals.lock().unwrap().last().is_some_and(|t| *t > thawed)
    })
    .await;
    cam.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_motion_queue_drops_and_counts_frames_without_stalling_the_camera() {
    logs::capture();
    let (tx, rx) = mpsc::channel(1);
    let cam = ingest::spawn_camera(
        camera("cam-full", "demo://moving-square"),
        tx,
        CancellationToken::new(),
    );
    wait::until_async("drops", Duration::from_secs(15), || {
        cam.status().dropped >= 5
    })
    .await;
    // The counter's value, not only its name: nothing reads the queue of one, so every
    // frame handed to motion after the first is a drop and counted as one.
    let counted = || {
        let text = edge_agent::telemetry::metrics::metrics().encode();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "edge_agent_dropped_total{place=\"cam-full\",reason=\"motion_queue_full\"} ",
                )
            })
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or_else(|| panic!("no motion_queue_full counter for cam-full:\n{text}"))
    };
    let st = cam.status();
    assert_eq!(st.state, CameraState::Streaming);
    assert_eq!(st.decoder.as_deref(), Some("none (synthetic scene)"));
    let (frames, sampled, dropped) = (st.frames, st.sampled, counted());
    assert!(dropped >= 1, "{st:?}");
    wait::until_async("frames keep coming", Duration::from_secs(5), || {
        cam.status().frames > frames + 10
    })
    .await;
    let more = cam.status().sampled - sampled;
    let counted_more = counted() - dropped;
    // Counters read one after the other while frames flow: a frame or two apart.
    assert!(
        more >= 5 && counted_more + 2 >= more && counted_more <= more + 2,
        "{more} frames handed to a full queue, {counted_more} drops counted"
    );
    drop(rx);
    cam.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_never_appears_in_logs_errors_or_status() {
    logs::capture();
    const SECRET: &str = "hunter2secret";
    let srv = RtspTestServer::start(Scene::sized(320, 180, 15));
    let good = srv
        .url("/pw")
        .replace("rtsp://", &format!("rtsp://admin:{SECRET}@"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("rtsp://admin:{SECRET}@127.0.0.1:{port}/pw");
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let ok_cam = ingest::spawn_camera(camera("cam-pw-ok", &good), tx.clone(), stop.clone());
    let dead_cam = ingest::spawn_camera(camera("cam-pw-dead", &dead), tx, stop.clone());
    next(&mut rx, Duration::from_secs(20)).await;
    wait::until_async("retries", Duration::from_secs(10), || {
        dead_cam.status().restarts >= 2
    })
    .await;
    srv.stop();
    wait::until_async(
        "the lost stream to be noticed",
        Duration::from_secs(10),
        || ok_cam.status().restarts >= 1,
    )
    .await;

    let statuses = format!("{:?} {:?}", ok_cam.status(), dead_cam.status());
    let logged = logs::text();
    for (what, text) in [("status", &statuses), ("logs", &logged)] {
        assert!(!text.contains(SECRET), "password in {what}: {text}");
    }
    assert!(
        logged.contains("admin:***@127.0.0.1"),
        "the URL is logged, redacted"
    );
    assert!(ok_cam.status().url.contains("admin:***@"));
    stop.cancel();
    ok_cam.stopped().await;
    dead_cam.stopped().await;
}

/// `idle_decode = "keyframes"`: once the scene has been still for the quiet period,
/// only key frames are decoded (one a second here); when the object starts moving the
/// camera leaves idle at a key frame, decodes every frame again and the event starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::single_range_in_vec_init)] // one window of motion
async fn idle_decode_keeps_key_frames_only_while_still_and_wakes_at_motion() {
    use edge_agent::camera::analysis as camera_loop;
    use edge_agent::escalate::escalator::Escalation;
    use edge_agent::motion::MotionTransition;
    use edge_agent::telemetry::metrics::{self, metrics};

    const FPS: u64 = 15;
    // Still for 7 s, then moving for 7 s; one key frame a second (key-int-max = fps).
    let scene = Scene {
        period: 16 * FPS,
        moves: vec![7 * FPS..14 * FPS],
        ..Scene::sized(320, 180, FPS as u32)
    };
    let srv = RtspTestServer::start(scene);
    let id = format!("idle-{}", std::process::id());
    let url = srv.url("/idle");
    let mut cfg = camera(&id, &url);
    cfg.idle_decode = ingest::IdleDecode::Keyframes;
    cfg.motion.quiet_period = edge_agent::values::Dur::secs(1);
    let stop = CancellationToken::new();
    let (grey_tx, grey_rx) = mpsc::channel(4);
    let handle = std::sync::Arc::new(ingest::spawn_camera(cfg.clone(), grey_tx, stop.clone()));
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let motion = tokio::spawn(camera_loop::run(
        cfg,
        handle.clone(),
        grey_rx,
        out_tx,
        stop.clone(),
    ));
    let idle = || {
        metrics()
            .camera_idle
            .get_or_create(&metrics::camera(&id))
            .get()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while idle() != 1 {
        assert!(
            Instant::now() < deadline,
            "the still camera never went idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The gate closes at the next key frame (within a second); from then on about one
    // decoded frame a second instead of fifteen.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = handle.status().frames;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_frames = handle.status().frames - before;
    assert!(
        (1..=4).contains(&idle_frames),
        "{idle_frames} frames decoded in 2 s of idle (15 fps source, one key frame a second)"
    );
    // The object moves from 7 s to 14 s: the event starts and full decoding is back.
    let started = timeout(Duration::from_secs(15), async {
        loop {
            match out_rx.recv().await {
                Some(Escalation::Motion(MotionTransition::Started(e))) => return e,
                Some(_) => {}
                None => panic!("the motion loop ended"),
            }
        }
    })
    .await
    .expect("the event starts after the object moves");
    assert_eq!(idle(), 0, "not idle while the event runs");
    let before = handle.status().frames;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy_frames = handle.status().frames - before;
    assert!(
        busy_frames >= 10,
        "{busy_frames} frames decoded in 1 s of motion: full decoding should be back"
    );
    assert!(started.frames >= 2);
    stop.cancel();
    let _ = motion.await;
    if let Ok(h) = std::sync::Arc::try_unwrap(handle) {
        h.stopped().await;
    }
}
