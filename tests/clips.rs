//! Clips against real GStreamer: a camera served by the in-process RTSP server, its
//! pre-roll ring, and the fragmented MP4 a recorder writes for an incident, played back
//! through qtdemux and the software decoder.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::camera::CameraConfig;
use edge_agent::clips::{ClipSettings, FinishedClip, Recorder};
use edge_agent::ingest;
use edge_agent::ingest::synthetic::Scene;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::logs;
use crate::common::rtsp_server::{Codec, Media, RtspTestServer};

fn camera(id: &str, url: &str) -> CameraConfig {
    toml::from_str(&format!(
        "id = \"{id}\"\nurl = \"{url}\"\nstall_timeout = \"5s\"\n\
         [backoff]\nmin = \"100ms\"\nmax = \"1s\"\n"
    ))
    .expect("test camera config parses")
}

/// What playing a clip back shows.
#[derive(Debug)]
pub(crate) struct Played {
    /// Decoded frames.
    pub(crate) frames: usize,
    /// First to last decoded frame, plus one frame.
    pub(crate) span: Duration,
    /// The first access unit in the file is a key frame.
    pub(crate) starts_at_key: bool,
}

/// `desc` ending in an appsink (unsynchronised), and that sink.
fn to_appsink(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    let p = gst::parse::launch(&format!("{desc} ! appsink name=s sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    (p, sink)
}

/// Plays `path` to its end: demux, parse, decode.
pub(crate) fn play(path: &Path, codec: Codec) -> Played {
    gst::init().unwrap();
    let (parse, dec) = match codec {
        Codec::H264 => ("h264parse", "avdec_h264"),
        Codec::H265 => ("h265parse", "avdec_h265"),
    };
    let first_key = {
        let (p, sink) = to_appsink(&format!(
            "filesrc location=\"{}\" ! qtdemux",
            path.display()
        ));
        p.set_state(gst::State::Playing).unwrap();
        let s = sink.try_pull_sample(gst::ClockTime::from_seconds(10));
        p.set_state(gst::State::Null).unwrap();
        let buf = s.expect("the clip has a first access unit");
        !buf.buffer()
            .unwrap()
            .flags()
            .contains(gst::BufferFlags::DELTA_UNIT)
    };
    let (p, sink) = to_appsink(&format!(
        "filesrc location=\"{}\" ! qtdemux ! {parse} ! {dec}",
        path.display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    let (mut frames, mut first, mut last, mut step) = (0usize, None, None, Duration::ZERO);
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        frames += 1;
        let pts = s
            .buffer()
            .and_then(|b| b.pts())
            .map(|t| Duration::from_nanos(t.nseconds()));
        if let (Some(p), Some(l)) = (pts, last) {
            if p > l {
                step = p - l;
            }
        }
        first = first.or(pts);
        last = pts.max(last);
    }
    p.set_state(gst::State::Null).unwrap();
    let span = match (first, last) {
        (Some(a), Some(b)) => b - a + step,
        _ => Duration::ZERO,
    };
    Played {
        frames,
        span,
        starts_at_key: first_key,
    }
}

async fn waits_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_incident_gives_a_playable_clip_from_before_it_to_after_it(codec: Codec) {
    logs::capture();
    // One key frame a second (key-int-max = fps).
    let scene = Scene::sized(320, 180, 10);
    let gop = Duration::from_secs(1);
    let srv = RtspTestServer::start(Media::Scene(scene, codec));
    let id = format!("clip-{codec:?}").to_lowercase();
    let (tx, _rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let cam = Arc::new(ingest::spawn_camera(
        camera(&id, &srv.url("/clip")),
        tx,
        stop.clone(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let settings = ClipSettings {
        dir: dir.path().to_path_buf(),
        pre_capture: Duration::from_secs(2),
        post_capture: Duration::from_secs(1),
        max_duration: Duration::from_secs(120),
        preroll_max_bytes: 16 << 20,
    };
    let (done_tx, mut done) = mpsc::channel::<FinishedClip>(4);
    let rec = Recorder::spawn(cam.clone(), settings.clone(), done_tx, stop.clone()).unwrap();

    waits_for(
        "the pre-roll ring covers pre_capture",
        Duration::from_secs(30),
        || cam.preroll_size().2 >= settings.pre_capture,
    )
    .await;
    let (units, bytes, span) = cam.preroll_size();
    assert!(
        span < settings.pre_capture + gop,
        "ring spans {span:?}: more than one GOP over"
    );
    assert!(units > 0 && bytes > 0);

    let began = Instant::now();
    rec.incident_started("fire-1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A second incident overlapping the first shares its clip.
    rec.incident_started("fire-2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rec.current_file().is_some(), "a clip is being written");
    rec.incident_ended("fire-1");
    rec.incident_ended("fire-2");
    let incident = began.elapsed();

    let clip = tokio::time::timeout(settings.post_capture + Duration::from_secs(5), done.recv())
        .await
        .expect("the clip is finished within post_capture + 5 s")
        .expect("the report channel is open");
    assert_eq!(
        clip.incidents,
        vec!["fire-1".to_string(), "fire-2".to_string()]
    );
    assert!(clip.bytes > 0);
    assert_eq!(std::fs::metadata(&clip.path).unwrap().len(), clip.bytes);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), done.recv())
            .await
            .is_err(),
        "overlapping incidents made one clip"
    );

    let played = tokio::task::spawn_blocking({
        let path = clip.path.clone();
        move || play(&path, codec)
    })
    .await
    .unwrap();
    let want = settings.pre_capture + incident + settings.post_capture;
    assert!(
        played.starts_at_key,
        "the clip starts with a key frame: {played:?}"
    );
    assert!(played.frames > 0, "{played:?}");
    assert!(
        played.span + Duration::from_millis(300) >= want
            && played.span <= want + gop + Duration::from_millis(500),
        "clip plays {:?}, want {want:?} to one key-frame interval more ({played:?})",
        played.span
    );
    let reported = Duration::from_millis(clip.duration_ms);
    assert!(
        reported.abs_diff(played.span) < Duration::from_millis(300),
        "reported {reported:?}, played {:?}",
        played.span
    );

    rec.stop();
    stop.cancel();
    drop(srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_incident_gives_a_playable_clip_covering_pre_incident_and_post_capture() {
    an_incident_gives_a_playable_clip_from_before_it_to_after_it(Codec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_incident_gives_a_playable_clip_covering_pre_incident_and_post_capture() {
    an_incident_gives_a_playable_clip_from_before_it_to_after_it(Codec::H265).await;
}

/// One request over a fresh connection (the listener has no keep-alive): status line and
/// headers (lower case) and the body's bytes.
pub(crate) fn get(addr: &str, path: &str, extra: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    (head, raw[split + 4..].to_vec())
}

#[test]
fn clips_are_served_byte_exact_with_ranges_and_nothing_outside_their_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("clips");
    std::fs::create_dir(&dir).unwrap();
    // Bytes that are not text, so a body mangled anywhere shows.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("gate-1700000000000.mp4"), &data).unwrap();
    std::fs::write(root.path().join("secret.mp4"), b"not yours").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.mp4"), dir.join("link.mp4")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let health: edge_agent::telemetry::http::HealthFn =
        Arc::new(|| serde_json::json!({"status": "ok"}));
    let addr = rt
        .block_on(edge_agent::telemetry::http::serve_endpoints(
            "127.0.0.1:0",
            health,
            Some(dir.clone()),
            CancellationToken::new(),
            Default::default(),
        ))
        .unwrap()
        .to_string();

    let (head, body) = get(&addr, "/clips/gate-1700000000000.mp4", "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: video/mp4"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert_eq!(body.len(), data.len());
    assert!(body == data, "the body is the file, byte for byte");

    let (head, body) = get(
        &addr,
        "/clips/gate-1700000000000.mp4",
        "Range: bytes=1000-1999\r\n",
    );
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(
        head.contains("content-range: bytes 1000-1999/300000"),
        "{head}"
    );
    assert!(
        body == data[1000..2000],
        "the range is the file's bytes 1000-1999"
    );

    let (head, body) = get(
        &addr,
        "/clips/gate-1700000000000.mp4",
        "Range: bytes=-10\r\n",
    );
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(body == data[data.len() - 10..]);

    let (head, _) = get(
        &addr,
        "/clips/gate-1700000000000.mp4",
        "Range: bytes=300000-\r\n",
    );
    assert!(head.starts_with("http/1.1 416"), "{head}");
    assert!(head.contains("content-range: bytes */300000"), "{head}");

    for path in [
        "/clips/unknown.mp4",
        "/clips/..",
        "/clips/../secret.mp4",
        "/clips/..%2fsecret.mp4",
        "/clips/%2e%2e%2fsecret.mp4",
        "/clips/link.mp4",
        "/clips/",
    ] {
        let (head, body) = get(&addr, path, "");
        assert!(head.starts_with("http/1.1 404"), "{path}: {head}");
        assert!(
            !body.windows(9).any(|w| w == b"not yours"),
            "{path} leaked the file outside"
        );
    }
}

/// Set in the child process of the SIGKILL test: the directory to write clips in.
const KILL_CHILD_DIR: &str = "EDGE_AGENT_TEST_CLIP_CHILD_DIR";

/// Child side: a camera and a recorder with a live incident, writing until killed. A
/// `ready` file says the clip has run for a few seconds.
async fn write_a_clip_until_killed(dir: std::path::PathBuf) {
    let srv = RtspTestServer::start(Media::Scene(Scene::sized(320, 180, 10), Codec::H264));
    let (tx, _rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let cam = Arc::new(ingest::spawn_camera(
        camera("killed", &srv.url("/killed")),
        tx,
        stop.clone(),
    ));
    let settings = ClipSettings {
        dir: dir.clone(),
        pre_capture: Duration::from_secs(1),
        post_capture: Duration::from_secs(1),
        max_duration: Duration::from_secs(120),
        preroll_max_bytes: 16 << 20,
    };
    let (done_tx, _done) = mpsc::channel(4);
    let rec = Recorder::spawn(cam.clone(), settings, done_tx, stop).unwrap();
    waits_for("the ring fills", Duration::from_secs(30), || {
        cam.preroll_size().2 >= Duration::from_secs(1)
    })
    .await;
    rec.incident_started("kill-1");
    waits_for("a clip is being written", Duration::from_secs(10), || {
        rec.current_file().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::write(dir.join("ready"), rec.current_file().unwrap()).unwrap();
    // Killed here.
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("the child was not killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_writer_killed_mid_clip_leaves_a_playable_file() {
    if let Some(dir) = std::env::var_os(KILL_CHILD_DIR) {
        return write_a_clip_until_killed(dir.into()).await;
    }
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    // This same test in a child process, which writes the clip and is SIGKILLed.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "clips::a_clip_writer_killed_mid_clip_leaves_a_playable_file",
            "--nocapture",
        ])
        .env(KILL_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the clip-writing child ended early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the child wrote no clip within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Child::kill is SIGKILL on Unix: no destructor, no end of stream, no flush.
    child.kill().unwrap();
    child.wait().unwrap();
    let file = std::fs::read_to_string(&ready).unwrap();
    let path = dir.path().join(file.trim());
    let played = tokio::task::spawn_blocking(move || play(&path, Codec::H264))
        .await
        .unwrap();
    assert!(played.starts_at_key, "{played:?}");
    // About 1-2 s of pre-roll plus 4 s written; fragments of a second, the last one
    // possibly lost.
    assert!(
        played.span >= Duration::from_secs(3),
        "a killed clip plays up to its last whole fragment: {played:?}"
    );
}
