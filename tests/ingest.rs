//! Ingest against real GStreamer: an in-process RTSP server, files, the synthetic scene.
//! Backoffs and stall timeouts are short so that the whole module runs in about a minute.

use std::time::{Duration, Instant, SystemTime};

use edge_agent::config::types::IntIn;
use edge_agent::ingest::synthetic::Scene;
use edge_agent::ingest::{self, CameraConfig, CameraHandle, CameraState, GreyFrame};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::common::rtsp_server::{Codec, Media, RtspTestServer};
use crate::common::{self, logs};

/// A camera with test-sized timings: retries from 100 ms, capped at 1 s.
fn camera(id: &str, url: &str) -> CameraConfig {
    toml::from_str(&format!(
        "id = \"{id}\"\nurl = \"{url}\"\nstall_timeout = \"3s\"\n\
         [backoff]\nmin = \"100ms\"\nmax = \"1s\"\n"
    ))
    .expect("test camera config parses")
}

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
    // 4 s at 5 fps; generous bounds for a busy 2-core machine.
    assert!(
        (14..=26).contains(&frames.len()),
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
async fn replaying_the_synthetic_scene_shows_motion_exactly_at_the_known_frames() {
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
