//! Clips of incidents, end to end: the `edge-agent run` binary watches an in-process
//! RTSP camera (H.264 and H.265) whose square moves once and is detected as `fire` by
//! the test model. Its incident's `start` names the clip being written, its `end` the
//! finished file, and the `clips` topic announces it; the file plays from a key frame,
//! covers pre-capture, the incident and post-capture, and `/clips` serves the same
//! bytes. Then the storage budget (oldest first, snapshots included) and a full
//! filesystem (a small tmpfs: a counted error, a playable partial clip, events go on).

use std::path::Path;
use std::time::{Duration, SystemTime};

use edge_agent::ingest::synthetic::Scene;
use sha2::{Digest, Sha256};

use crate::clips::{get, play};
use crate::common::agent::{http_get, metric, Agent};
use crate::common::broker::{mqtt_url, unique};
use crate::common::rtsp_server::{Codec, Media, RtspTestServer};
use crate::common::{schema, wait, SmallFs};
use crate::full_cycle::{json, mqtt_subscribe, Inbox, Seen};

/// The square rests for 4 s, moves for 3 s, then rests for hours: one incident.
#[allow(clippy::single_range_in_vec_init)]
fn scene() -> Scene {
    Scene {
        width: 640,
        height: 360,
        fps: 10,
        period: 1_000_000,
        moves: vec![40..70],
        objects: Vec::new(),
    }
}

/// A scene that never moves: no motion, no incident.
fn still() -> Scene {
    Scene {
        moves: Vec::new(),
        ..scene()
    }
}

/// Key frames come once a second (the server's `key-int-max` is the frame rate).
const GOP: Duration = Duration::from_secs(1);
const PRE: Duration = Duration::from_secs(2);
const POST: Duration = Duration::from_secs(2);

fn config(device: &str, prefix: &str, camera_url: &str, clips: &str) -> String {
    format!(
        r#"
[device]
id = "{device}"

[[cameras]]
id = "gate"
url = "{camera_url}"

[transport]
kind = "mqtt"
mqtt_url = "{mqtt}"
topic_prefix = "{prefix}"
redeliver_after = "10m"

[scaling]
max_workers = 1
prewarm_on_motion = false
cooldown_period = "3s"
polling_interval = "250ms"

[events.tracks]
forget_after = "3s"

[events.clips]
enabled = true
pre_capture = "{pre}s"
post_capture = "{post}s"
{clips}

[telemetry]
metrics_listen = "127.0.0.1:0"
"#,
        mqtt = mqtt_url(),
        pre = PRE.as_secs(),
        post = POST.as_secs(),
    )
}

/// Subscribes to the device's topics on Mosquitto; resolves once acknowledged.
async fn subscribe(prefix: &str, device: &str) -> (Inbox, rumqttc::AsyncClient) {
    let url = url::Url::parse(&mqtt_url()).unwrap();
    mqtt_subscribe(url.port().unwrap_or(1883), prefix, device).await
}

/// When the agent logged the lifecycle line `state` whose `field` is `value`, in ms
/// since the Unix epoch.
fn logged_at(agent: &Agent, state: &str, field: &str, value: &str) -> u64 {
    let line = agent
        .in_state(state)
        .into_iter()
        .find(|l| l[field] == value)
        .unwrap_or_else(|| panic!("no {state} line with {field} = {value}"));
    let t = humantime::parse_rfc3339(line["timestamp"].as_str().unwrap()).unwrap();
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The first message of `kind` whose payload satisfies `f`.
fn find(inbox: &Inbox, kind: &str, f: impl Fn(&serde_json::Value) -> bool) -> Option<Seen> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.kind == kind && f(&json(&s.payload)))
        .cloned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `gst-discoverer-1.0` reads the file and finds its duration.
fn discovered_duration(path: &Path) -> Duration {
    let out = std::process::Command::new("gst-discoverer-1.0")
        .arg(path)
        .output()
        .expect("gst-discoverer-1.0 runs (gstreamer1.0-tools)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "gst-discoverer-1.0 failed: {text}");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .unwrap_or_else(|| panic!("no duration in: {text}"));
    // H:MM:SS.nnnnnnnnn
    let mut parts = line.trim().split(':');
    let (h, m, s) = (
        parts.next().unwrap().parse::<f64>().unwrap(),
        parts.next().unwrap().parse::<f64>().unwrap(),
        parts.next().unwrap().parse::<f64>().unwrap(),
    );
    Duration::from_secs_f64(h * 3600.0 + m * 60.0 + s)
}

/// An RTSP camera in `codec` and an agent watching it with clips in `clips`, its
/// configuration written in `dir` (after `edit`); the device's messages in the inbox.
struct Run {
    inbox: Inbox,
    _client: rumqttc::AsyncClient,
    srv: RtspTestServer,
    agent: Agent,
}

async fn start_agent(
    codec: Codec,
    dir: &Path,
    clips: &Path,
    edit: impl FnOnce(String) -> String,
) -> Run {
    let device = unique("clipev");
    let prefix = unique("edge");
    let (inbox, client) = subscribe(&prefix, &device).await;
    let srv = RtspTestServer::start(Media::Scene(scene(), codec));
    let file = dir.join("agent.toml");
    let extra = format!("dir = \"{}\"\nmin_free = 0", clips.display());
    std::fs::write(
        &file,
        edit(config(&device, &prefix, &srv.url("/gate"), &extra)),
    )
    .unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    Run {
        inbox,
        _client: client,
        srv,
        agent,
    }
}

impl Run {
    /// The first incident message in `state`, waited for.
    fn wait_incident(&self, state: &str, within: Duration) -> Seen {
        wait::value_explained(
            &format!("the fire incident's {state}"),
            within,
            || find(&self.inbox, "events/fire", |v| v["state"] == state),
            || self.agent.log_text(),
        )
    }
}

async fn an_incident_gives_an_announced_clip_that_plays_and_is_served(codec: Codec) {
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    let run = start_agent(codec, dir.path(), &clips, |t| t).await;
    let (agent, inbox) = (&run.agent, &run.inbox);
    let addr = agent.metrics_addr(Duration::from_secs(30));
    let end = run.wait_incident("end", Duration::from_secs(180));
    let start = find(inbox, "events/fire", |v| v["state"] == "start").expect("a start");
    let (sv, ev) = (json(&start.payload), json(&end.payload));
    schema::check("event.v3.json", &sv);
    schema::check("event.v3.json", &ev);
    // The start names the clip being written; the end the finished file that shows
    // its end (the same one, unless the camera's stream broke off in between).
    let first_name = sv["clip"]["file"].as_str().unwrap().to_string();
    let name = ev["clip"]["file"].as_str().unwrap().to_string();
    let log = || {
        agent
            .logs()
            .iter()
            .filter(|l| l["target"] == "edge_agent::clips" || l["lifecycle"] == "incident")
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let announced_as = |file: &str| {
        let seen = find(inbox, "clips", |v| v["file"] == file).unwrap_or_else(|| {
            panic!("clip {file} is not announced on the clips topic\n{}", log())
        });
        let v = json(&seen.payload);
        schema::check("clip.v1.json", &v);
        assert!(
            v["incidents"].as_array().unwrap().contains(&sv["incident"]),
            "{v}"
        );
        (seen, v)
    };
    let (_, first) = announced_as(&first_name);
    let (_, av) = announced_as(&name);
    let announced = logged_at(agent, "clip_announced", "file", &name);
    for key in ["start", "duration_ms", "bytes", "sha256"] {
        assert_eq!(ev["clip"][key], av[key], "{key}");
    }

    // The file on disk is the one announced, and /clips serves the same bytes.
    let path = clips.join(&name);
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(disk.len() as u64, av["bytes"].as_u64().unwrap());
    assert_eq!(sha256_hex(&disk), av["sha256"].as_str().unwrap());
    let (head, body) = get(&addr, &format!("/clips/{name}"), "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(sha256_hex(&body), av["sha256"].as_str().unwrap());
    let (head, part) = get(&addr, &format!("/clips/{name}"), "Range: bytes=100-199\r\n");
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert_eq!(part, disk[100..200]);
    let (head, _) = get(&addr, "/clips/..%2Fagent.toml", "");
    assert!(head.starts_with("http/1.1 404"), "{head}");

    // Each file plays from a key frame for its announced duration (within a key-frame
    // interval), and together they cover pre-capture, the incident and post-capture.
    let near = |a: Duration, b: Duration| a.abs_diff(b) <= GOP;
    for v in [&first, &av] {
        let path = clips.join(v["file"].as_str().unwrap());
        let discovered = discovered_duration(&path);
        let played = tokio::task::spawn_blocking(move || play(&path, codec))
            .await
            .unwrap();
        assert!(played.starts_at_key, "{v}: {played:?}");
        let duration = Duration::from_millis(v["duration_ms"].as_u64().unwrap());
        assert!(near(played.span, duration), "{played:?} vs {duration:?}");
        assert!(near(discovered, duration), "{discovered:?} vs {duration:?}");
    }
    let clip_start = first["start"].as_u64().unwrap();
    let clip_end = av["start"].as_u64().unwrap() + av["duration_ms"].as_u64().unwrap();
    // The recorder heard of the incident at about the start's arrival; its ring went
    // back `pre_capture`, to the key frame at or before.
    let told = logged_at(agent, "incident", "state", "start");
    let pre = PRE.as_millis() as u64;
    let gop = GOP.as_millis() as u64;
    assert!(
        clip_start <= told - pre + 500 && clip_start + pre + gop + 1500 >= told,
        "the clip starts pre_capture before the incident: clip {clip_start}, start told {told}\n{}",
        log()
    );
    let ended = ev["ended_ms"].as_u64().unwrap();
    assert!(
        clip_end + gop >= ended + POST.as_millis() as u64,
        "the clip runs post_capture past the end: clip ends {clip_end}, incident ended {ended}\n{}",
        log()
    );
    eprintln!(
        "{codec:?}: {} file(s), the last {} ms and {} bytes, announced {} ms after the incident ended (post_capture {POST:?})",
        1 + (first_name != name) as usize,
        av["duration_ms"],
        disk.len(),
        announced as i64 - ended as i64
    );
    // Announced within post_capture + 1 s of the incident's end (plus the finish).
    assert!(
        announced <= ended + POST.as_millis() as u64 + 1000,
        "announced at {announced}, ended {ended}"
    );
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_incident_gives_an_announced_clip_that_plays_and_is_served_byte_exact() {
    an_incident_gives_an_announced_clip_that_plays_and_is_served(Codec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_incident_gives_an_announced_clip_that_plays_and_is_served_byte_exact() {
    an_incident_gives_an_announced_clip_that_plays_and_is_served(Codec::H265).await;
}

/// Writes `bytes` zeros to `path`, last modified `age` ago.
fn old_file(path: &Path, bytes: usize, age: Duration) {
    std::fs::write(path, vec![0u8; bytes]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_budget_removes_the_oldest_clips_and_snapshots_first() {
    let device = unique("clipbudget");
    let srv = RtspTestServer::start(Media::Scene(still(), Codec::H264));
    let dir = tempfile::tempdir().unwrap();
    let (clips, snaps) = (dir.path().join("clips"), dir.path().join("snaps"));
    std::fs::create_dir_all(&clips).unwrap();
    std::fs::create_dir_all(&snaps).unwrap();
    let k = 1024;
    // 1500 KiB against a 1 MiB budget: the snapshot and the oldest clip must go.
    old_file(&snaps.join("gate-1.jpg"), 300 * k, Duration::from_secs(400));
    old_file(&clips.join("gate-a.mp4"), 400 * k, Duration::from_secs(300));
    old_file(&clips.join("gate-b.mp4"), 400 * k, Duration::from_secs(200));
    old_file(&clips.join("gate-c.mp4"), 400 * k, Duration::from_secs(100));
    let file = dir.path().join("agent.toml");
    let extra = format!(
        "dir = \"{}\"\nmin_free = 0\nmax_bytes = \"1MiB\"",
        clips.display()
    );
    let text = config(&device, "edge", &srv.url("/gate"), &extra).replace(
        "[events.tracks]",
        &format!(
            "[events]\nsnapshot_dir = \"{}\"\n\n[events.tracks]",
            snaps.display()
        ),
    );
    std::fs::write(&file, text).unwrap();
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let addr = agent.metrics_addr(Duration::from_secs(30));
    let removed = |kind: &str| {
        metric(
            &http_get(&addr, "/metrics"),
            &format!("edge_agent_storage_removed_total{{kind=\"{kind}\",reason=\"max_bytes\"}}"),
        )
        .unwrap_or(0.0)
    };
    wait::until(
        "the budget removed a snapshot and a clip",
        Duration::from_secs(30),
        || removed("snapshot") >= 1.0 && removed("clip") >= 1.0,
    );
    assert!(!snaps.join("gate-1.jpg").exists());
    assert!(!clips.join("gate-a.mp4").exists());
    assert!(
        clips.join("gate-b.mp4").exists(),
        "a newer clip was removed"
    );
    assert!(
        clips.join("gate-c.mp4").exists(),
        "the newest clip was removed"
    );
    assert_eq!(removed("clip"), 1.0);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_clips_directory_moves_recording_and_serving_there() {
    let device = unique("cliphup");
    let srv = RtspTestServer::start(Media::Scene(still(), Codec::H264));
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let file = dir.path().join("agent.toml");
    let write = |clips: &Path| {
        let extra = format!("dir = \"{}\"\nmin_free = 0", clips.display());
        std::fs::write(&file, config(&device, "edge", &srv.url("/gate"), &extra)).unwrap();
    };
    write(&first);
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    let addr = agent.metrics_addr(Duration::from_secs(30));
    let status = |path: &str| {
        let (head, body) = get(&addr, path, "");
        (head.get(9..12).unwrap_or("").to_string(), body)
    };
    wait::until(
        "the recorder makes its directory",
        Duration::from_secs(30),
        || first.is_dir(),
    );
    let name = "gate-1700000000000.mp4";
    std::fs::write(first.join(name), b"a clip in the first directory").unwrap();
    assert_eq!(status(&format!("/clips/{name}")).0, "200");

    write(&second);
    agent.signal(libc::SIGHUP);
    let r = agent.wait_state("reloaded", 1, Duration::from_secs(30));
    assert_eq!(r["restart_needed"], 0, "{r}");
    // The recorder restarted on the new directory (it makes it), and /clips serves it.
    wait::until(
        "the recorder makes the new directory",
        Duration::from_secs(30),
        || second.is_dir(),
    );
    std::fs::write(second.join(name), b"a clip in the second directory").unwrap();
    let (code, body) = status(&format!("/clips/{name}"));
    assert_eq!(code, "200", "/clips serves the new directory");
    assert_eq!(body, b"a clip in the second directory");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_leaves_a_playable_partial_clip_and_a_counted_error() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(root.path(), "2m") else {
        crate::common::skip("cannot mount a small tmpfs (needs root)");
        return;
    };
    let clips = fs.0.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    // Leave room for a few seconds of video only.
    let free = edge_agent::clips::budget::free_space(&clips).unwrap();
    let room = 120 * 1024;
    std::fs::write(fs.0.join("filler"), vec![1u8; (free - room) as usize]).unwrap();

    let run = start_agent(Codec::H264, root.path(), &clips, |t| t).await;
    let addr = run.agent.metrics_addr(Duration::from_secs(30));
    // Detection and events go on: the incident ends.
    let end = run.wait_incident("end", Duration::from_secs(180));
    let errors = metric(
        &http_get(&addr, "/metrics"),
        "edge_agent_clip_errors_total{camera=\"gate\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "the full disk was counted: {errors}");
    let start = find(&run.inbox, "events/fire", |v| v["state"] == "start").expect("a start");
    let name = json(&start.payload)["clip"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let path = clips.join(&name);
    let played = tokio::task::spawn_blocking(move || play(&path, Codec::H264))
        .await
        .unwrap();
    assert!(played.starts_at_key, "{played:?}");
    assert!(
        played.span >= GOP,
        "the partial clip plays up to where the disk filled: {played:?}"
    );
    // The end went out (it may name a later try, made when the disk was still full).
    assert_eq!(json(&end.payload)["state"], "end");
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_drops_mid_incident_ends_its_clip_and_starts_a_new_one_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    // The incident outlives the camera's absence; the camera comes back quickly.
    let run = start_agent(Codec::H264, dir.path(), &clips, |t| {
        t.replace("forget_after = \"3s\"", "forget_after = \"10s\"")
            .replace(
                "[transport]",
                "[cameras.backoff]\nmin = \"100ms\"\nmax = \"1s\"\n\n[transport]",
            )
    })
    .await;
    let (agent, inbox, srv) = (&run.agent, &run.inbox, &run.srv);
    let start = run.wait_incident("start", Duration::from_secs(120));
    let incident = json(&start.payload)["incident"].clone();
    let shows = |v: &serde_json::Value| v["incidents"].as_array().unwrap().contains(&incident);
    srv.stop();
    let first = wait::value_explained(
        "the clip ended by the camera's drop",
        Duration::from_secs(30),
        || find(inbox, "clips", shows),
        || agent.log_text(),
    );
    assert!(
        find(inbox, "events/fire", |v| v["state"] == "end").is_none(),
        "the incident is still alive"
    );
    srv.restart();
    let first_file = json(&first.payload)["file"].clone();
    // The next clip of the same incident, once the camera is back.
    agent.wait_until(
        "a clip is being written again",
        Duration::from_secs(60),
        || agent.in_state("clip_started").len() >= 2,
    );
    let second = wait::value_explained(
        "the second clip of the incident",
        Duration::from_secs(150),
        || find(inbox, "clips", |v| shows(v) && v["file"] != first_file),
        || agent.log_text(),
    );
    for seen in [&first, &second] {
        let v = json(&seen.payload);
        let path = clips.join(v["file"].as_str().unwrap());
        let played = tokio::task::spawn_blocking(move || play(&path, Codec::H264))
            .await
            .unwrap();
        assert!(played.starts_at_key, "{v}: {played:?}");
        assert!(played.span >= GOP, "{v}: {played:?}");
    }
    drop(run);
}
