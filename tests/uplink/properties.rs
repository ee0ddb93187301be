//! The uplink on RabbitMQ: what an AMQP consumer at the central sees. Events carry the
//! AMQP `message_id` (the JSON one), their content type and persistent delivery; the
//! device's status lives in a one-message status queue (AMQP has no last will); and
//! `uplink.detections` sends each detections message up, or none. Frames stay on the
//! embedded broker.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicRejectOptions};

use super::central::{Central, Got};
use crate::common::agent::Agent;
use crate::common::broker::{amqp_url, unique};
use crate::common::wait;

const LONG: Duration = Duration::from_secs(60);

/// The newest status in the device's status queue, read without taking it away
/// (fetched, then rejected with requeue), as the README tells a consumer to.
async fn status(queue: &str) -> Option<String> {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .ok()
        .flatten();
    let text = match got {
        Some(m) => {
            let text = String::from_utf8_lossy(&m.delivery.data).to_string();
            m.delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await
                .unwrap();
            Some(text)
        }
        None => None,
    };
    let _ = conn.close(200, "OK".into()).await;
    text
}

/// Waits until the status queue holds `want`.
async fn status_becomes(queue: &str, want: &str) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let now = status(queue).await;
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{queue} says {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A box with its frames on the embedded broker and an AMQP uplink to the test
/// RabbitMQ. `cameras`: TOML of its cameras; `extra`: more `[uplink]` lines.
fn config(
    device: &str,
    exchange: &str,
    spool: &std::path::Path,
    cameras: &str,
    extra: &str,
) -> String {
    format!(
        "[device]\nid = \"{device}\"\nstop_timeout = \"5s\"\n{cameras}\
         [telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nheartbeat_interval = \"1s\"\n\
         [uplink]\nkind = \"amqp\"\nurl = \"{}\"\nexchange = \"{exchange}\"\n{extra}\
         [uplink.spool]\ndir = \"{}\"\n",
        amqp_url(),
        spool.display()
    )
}

/// A demo camera that gives motion events and escalates nothing (no worker needed).
fn motion_camera(id: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"demo://{id}?width=160&height=90&fps=10\"\nescalation = {{ enabled = false }}\n")
}

/// A demo camera whose moving square is escalated to the (demo) model: a burst of
/// `budget` frames.
fn escalating_camera(id: &str, budget: u32) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"demo://moving-square\"\n[cameras.escalation]\nbudget = {budget}\nbudget_window = \"10m\"\nmin_interval = \"100ms\"\n")
}

fn start(file: &std::path::Path) -> Agent {
    let agent = Agent::start(&["--config".as_ref(), file.as_os_str()], &[]);
    agent.metrics_addr(LONG);
    agent
}

/// One box's test set-up: a device of its own, a consumer at the central on a new
/// exchange, and the box's configuration file (see [`config`]).
struct Setup {
    status_queue: String,
    central: Central,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(name: &str, cameras: &str, extra: &str) -> Setup {
    let device = unique(name);
    let exchange = unique("central");
    let central = Central::start(&exchange, &format!("{device}.#"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        config(
            &device,
            &exchange,
            &dir.path().join("spool"),
            cameras,
            extra,
        ),
    )
    .unwrap();
    Setup {
        status_queue: format!("{exchange}.{device}.status"),
        central,
        file,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_uplink_events_carry_their_message_id_and_the_status_queue_holds_the_latest_status() {
    let Setup {
        status_queue,
        central,
        file,
        _dir,
    } = setup("amqp-up", &motion_camera("gate"), "").await;
    let mut agent = start(&file);

    wait::until_async("three motion events at the central", LONG, || {
        central.with_suffix(".gate.motion").len() >= 3
    })
    .await;
    for g in central.with_suffix(".gate.motion") {
        let id = g.body["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{g:?}"));
        assert_eq!(g.message_id.as_deref(), Some(id), "AMQP message_id: {g:?}");
        assert_eq!(g.content_type.as_deref(), Some("application/json"), "{g:?}");
        assert_eq!(g.delivery_mode, Some(2), "persistent: {g:?}");
    }
    // The status: `online` in the queue, also seen as a message on `{device}.status`.
    assert_eq!(status(&status_queue).await.as_deref(), Some("online"));
    let said: Vec<Got> = central.with_suffix(".status");
    assert!(
        said.iter().any(|g| g.body == "online"
            && g.content_type.as_deref() == Some("text/plain")
            && g.delivery_mode == Some(2)),
        "{said:?}"
    );
    // Health is JSON, not spooled, no message id of its own.
    wait::until_async("a heartbeat", LONG, || {
        !central.with_suffix(".health").is_empty()
    })
    .await;

    // A clean stop says `offline`; only the latest is kept.
    assert!(agent.stop_and_wait().success());
    status_becomes(&status_queue, "offline").await;
    // Again `online` after a restart; a SIGKILL can say nothing (AMQP has no last
    // will): the queue keeps `online`, and the heartbeats stop.
    let mut agent = start(&file);
    status_becomes(&status_queue, "online").await;
    agent.signal(libc::SIGKILL);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some());
    let beats = central.with_suffix(".health").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        central.with_suffix(".health").len(),
        beats,
        "heartbeats after the kill"
    );
    assert_eq!(status(&status_queue).await.as_deref(), Some("online"));
    central.delete(&[&status_queue]).await;
}

/// Runs a box escalating to the demo model with `uplink.detections = on` until the
/// agent has tracked `want` detections and motion went up; returns the detections and
/// motion messages the central got, and the (camera, seq) the agent tracked.
async fn detections_run(on: bool, want: usize) -> (Vec<Got>, Vec<Got>, Vec<(String, u64)>) {
    let Setup {
        status_queue,
        central,
        file,
        _dir,
    } = setup(
        "dets",
        &escalating_camera("cam1", want as u32),
        &format!("detections = {on}\n"),
    )
    .await;
    let mut agent = start(&file);
    let tracked = |agent: &Agent| -> Vec<(String, u64)> {
        agent
            .lines()
            .into_iter()
            .filter(|l| l.worker.is_none() && l.lifecycle() == "detections")
            .map(|l| {
                (
                    l.v["camera"].as_str().unwrap_or("").to_string(),
                    l.v["seq"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    wait::until_async(
        "the camera's burst answered",
        Duration::from_secs(120),
        || tracked(&agent).len() >= want && !central.with_suffix(".motion").is_empty(),
    )
    .await;
    // A clean stop flushes what the spool holds.
    assert!(agent.stop_and_wait().success());
    let seen = tracked(&agent);
    if on {
        wait::until_async("every detections message up", LONG, || {
            central.with_suffix(".detections").len() >= seen.len()
        })
        .await;
    }
    let out = (
        central.with_suffix(".detections"),
        central.with_suffix(".motion"),
        seen,
    );
    central.delete(&[&status_queue]).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_uplink_detections_on_each_detections_message_goes_up_with_a_message_id() {
    let (dets, motion, tracked) = detections_run(true, 5).await;
    assert!(!motion.is_empty());
    assert!(tracked.len() >= 5, "{tracked:?}");
    let mut up: Vec<(String, u64)> = dets
        .iter()
        .map(|g| {
            (
                g.body["camera"].as_str().unwrap_or("").to_string(),
                g.body["seq"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    up.sort();
    up.dedup();
    let mut want = tracked.clone();
    want.sort();
    assert_eq!(
        up, want,
        "each detections message the agent tracked went up"
    );
    let mut ids = std::collections::BTreeSet::new();
    for g in &dets {
        let id = g.body["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{g:?}"));
        assert_eq!(g.message_id.as_deref(), Some(id), "{g:?}");
        assert_eq!(g.delivery_mode, Some(2));
        crate::common::schema::check("detections.v2.json", &g.body);
        ids.insert(id.to_string());
    }
    // A copy sent twice (a reconnect) keeps its id: distinct ids, distinct frames.
    assert_eq!(ids.len(), up.len(), "{dets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_uplink_detections_off_no_detections_message_goes_up() {
    let (dets, motion, tracked) = detections_run(false, 3).await;
    assert!(tracked.len() >= 3, "the workers answered: {tracked:?}");
    assert!(!motion.is_empty(), "the uplink works");
    assert!(dets.is_empty(), "detections went up: {dets:?}");
}
