//! Stops that always end (issue 20) and end cleanly (issue 17, defect 1), against real
//! RTSP servers in processes of their own (so they can be frozen with SIGSTOP) and a
//! real Mosquitto: six cameras stop within `device.stop_timeout` whether their server
//! streams or is frozen; a second SIGTERM during a stop exits at once; a broker that
//! hangs costs the deadline and a non-zero status, not a hung process; a reload that
//! removes a frozen camera blocks nothing; a clean stop sends DISCONNECT from the agent
//! and its workers, so the broker publishes no last will.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::agent::{http_get, Agent};
use crate::common::broker::{unique, Mosquitto};
use crate::common::rtsp_process::RtspProcess;

/// `device.stop_timeout` in these tests.
const STOP: Duration = Duration::from_secs(10);
/// What an exit may take beyond the deadline: leaving the runtime, process exit.
const EXIT_SLACK: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

fn camera(id: &str, url: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\nescalation = {{ enabled = false }}\n")
}

fn write(dir: &Path, stop: Duration, transport: &str, cameras: &str) {
    let text = format!(
        "[device]\nid = \"stop-test\"\nstop_timeout = \"{}s\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n{transport}\n{cameras}",
        stop.as_secs()
    );
    std::fs::write(dir.join("agent.toml"), text).unwrap();
}

fn start(dir: &Path) -> (Agent, String) {
    let agent = Agent::start(&["--config-dir".as_ref(), dir.as_os_str()], &[]);
    let addr = agent.metrics_addr(WAIT);
    (agent, addr)
}

fn health(addr: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, "/health")).unwrap_or_default()
}

fn wait_until(agent: &Agent, what: &str, f: impl FnMut() -> bool) {
    agent.wait_until(what, WAIT, f);
}

fn frames(addr: &str, camera: &str) -> u64 {
    health(addr)["cameras"][camera]["frames"]
        .as_u64()
        .unwrap_or(0)
}

/// One /health read for all cameras: the listener allows a client 4 connections at once,
/// and a burst of reads per poll can outrun the release of the ones before.
fn streaming(addr: &str, ids: &[String]) -> bool {
    let h = health(addr);
    ids.iter().all(|id| {
        let cam = &h["cameras"][id];
        cam["state"] == "Streaming" && cam["frames"].as_u64().unwrap_or(0) > 0
    })
}

/// SIGTERM, then the exit within `within`; panics with the log when it does not come.
fn sigterm_and_exit(agent: &mut Agent, within: Duration) -> ExitStatus {
    let sent = Instant::now();
    agent.signal(libc::SIGTERM);
    match agent.wait_exit(within) {
        Some(s) => s,
        None => panic!(
            "still running {:?} after SIGTERM (bound {within:?}); log:\n{}",
            sent.elapsed(),
            agent.log_text()
        ),
    }
}

/// Every camera either stopped or was named as abandoned, and the exit status says
/// which: 0 when nothing was abandoned, 1 otherwise.
fn check_stop_report(agent: &Agent, status: ExitStatus, ids: &[String]) {
    let log = agent.log_text();
    let stopped: Vec<String> = agent
        .in_state("camera_stopped")
        .iter()
        .filter_map(|v| v["span"]["camera"].as_str().map(str::to_string))
        .collect();
    let abandoned = agent
        .in_state("stopped_unclean")
        .first()
        .map(|v| v["abandoned"].to_string())
        .unwrap_or_default();
    for id in ids {
        assert!(
            stopped.contains(id) || abandoned.contains(&format!("\"camera {id}\"")),
            "camera {id} neither stopped nor reported abandoned; log:\n{log}"
        );
    }
    if status.success() {
        assert_eq!(
            agent.in_state("stopped").len(),
            1,
            "a clean exit says so; log:\n{log}"
        );
        assert!(abandoned.is_empty(), "exit 0 with {abandoned}");
    } else {
        assert_eq!(status.code(), Some(1), "{status:?}; log:\n{log}");
        assert!(
            !abandoned.is_empty(),
            "non-zero exit without naming what was abandoned; log:\n{log}"
        );
    }
}

fn six_cameras(server: &RtspProcess) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..6).map(|i| format!("cam{i}")).collect();
    let cams = ids
        .iter()
        .enumerate()
        .map(|(i, id)| camera(id, &server.url(i)))
        .collect::<String>();
    (ids, cams)
}

#[test]
fn six_streaming_cameras_stop_within_the_deadline_on_sigterm() {
    let server = RtspProcess::start();
    let (ids, cams) = six_cameras(&server);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), STOP, "", &cams);
    let (mut agent, addr) = start(dir.path());
    wait_until(&agent, "six cameras streaming", || streaming(&addr, &ids));

    let status = sigterm_and_exit(&mut agent, STOP + EXIT_SLACK);
    assert!(status.success(), "{status:?}; log:\n{}", agent.log_text());
    check_stop_report(&agent, status, &ids);
    assert_eq!(agent.in_state("camera_stopped").len(), 6);
}

#[test]
fn six_cameras_of_a_frozen_server_stop_within_the_deadline_on_sigterm() {
    let server = RtspProcess::start();
    let (ids, cams) = six_cameras(&server);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), STOP, "", &cams);
    let (mut agent, addr) = start(dir.path());
    wait_until(&agent, "six cameras streaming", || streaming(&addr, &ids));

    // The server hangs with every connection open: no data, no TEARDOWN reply.
    server.freeze();
    let status = sigterm_and_exit(&mut agent, STOP + EXIT_SLACK);
    check_stop_report(&agent, status, &ids);
}

/// A stop held up by a hung broker (the transport waits for the broker to confirm
/// `offline`), so that there is a stop in progress to interrupt.
fn agent_on_a_frozen_broker(stop: Duration) -> (Agent, Mosquitto, tempfile::TempDir) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let transport = format!(
        "[transport]\nkind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{}\"",
        broker.url(),
        unique("stop")
    );
    write(
        dir.path(),
        stop,
        &transport,
        &camera("demo", "demo://x?width=160&height=90&fps=5"),
    );
    let (agent, addr) = start(dir.path());
    wait_until(&agent, "the broker connection", || {
        health(&addr)["broker_connected"] == true
    });
    broker.freeze(true);
    (agent, broker, dir)
}

#[test]
fn a_second_sigterm_during_a_stop_exits_at_once() {
    // A long deadline, so that an exit soon after the second signal can only be it.
    let stop = Duration::from_secs(120);
    let (mut agent, _broker, _dir) = agent_on_a_frozen_broker(stop);
    agent.signal(libc::SIGTERM);
    agent.wait_state("stopping", 1, WAIT);
    assert!(
        agent.wait_exit(Duration::from_millis(500)).is_none(),
        "the stop did not wait for the frozen broker; log:\n{}",
        agent.log_text()
    );
    let status = sigterm_and_exit(&mut agent, EXIT_SLACK);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(agent.in_state("exiting").len(), 1);
}

#[test]
fn a_hung_broker_costs_the_deadline_and_a_non_zero_status_not_a_hung_process() {
    let stop = Duration::from_secs(4);
    let (mut agent, _broker, _dir) = agent_on_a_frozen_broker(stop);
    let status = sigterm_and_exit(&mut agent, stop + EXIT_SLACK);
    check_stop_report(&agent, status, &["demo".to_string()]);
    assert_eq!(status.code(), Some(1), "{status:?}");
    let line = agent.wait_state("stopped_unclean", 1, WAIT);
    assert!(
        line["abandoned"].to_string().contains("transport"),
        "{line}"
    );
}

#[test]
fn a_reload_that_removes_a_frozen_camera_blocks_nothing_and_the_others_keep_streaming() {
    let (frozen, live) = (RtspProcess::start(), RtspProcess::start());
    let dir = tempfile::tempdir().unwrap();
    let both = [
        camera("frozen", &frozen.url(0)),
        camera("live", &live.url(0)),
    ]
    .concat();
    write(dir.path(), STOP, "", &both);
    let (mut agent, addr) = start(dir.path());
    let ids = ["frozen".to_string(), "live".to_string()];
    wait_until(&agent, "both cameras streaming", || streaming(&addr, &ids));

    frozen.freeze();
    write(dir.path(), STOP, "", &camera("live", &live.url(0)));
    agent.signal(libc::SIGHUP);
    let r = agent.wait_state("reloaded", 1, WAIT);
    assert_eq!((&r["kept"], &r["stopped"]), (&1.into(), &1.into()), "{r}");
    // The main loop answers and the other camera streams on while the frozen one stops.
    let before = frames(&addr, "live");
    wait_until(&agent, "live camera frames after the reload", || {
        frames(&addr, "live") > before + 10
    });
    let h = health(&addr);
    assert_eq!(
        h["cameras"].as_object().map(|c| c.len()),
        Some(1),
        "the removed camera is still reported: {h}"
    );
    assert_eq!(h["cameras"]["live"]["restarts"], 0, "{h}");

    let status = sigterm_and_exit(&mut agent, STOP + EXIT_SLACK);
    assert!(status.success(), "{status:?}; log:\n{}", agent.log_text());
}

/// Client ids the broker saw connect, from its log.
fn clients(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("New client connected from ")?
                .1
                .split_once(" as ")
        })
        .filter_map(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_clean_stop_disconnects_the_agent_and_its_workers_so_mosquitto_sends_no_will() {
    let broker = Mosquitto::start_logging();
    let dir = tempfile::tempdir().unwrap();
    let transport = format!(
        "[transport]\nkind = \"mqtt\"\nmqtt_url = \"{}\"\ntopic_prefix = \"{}\"\n[scaling]\nmin_workers = 1",
        broker.url(),
        unique("stop")
    );
    write(
        dir.path(),
        STOP,
        &transport,
        &camera("demo", "demo://x?width=160&height=90&fps=5"),
    );
    let (mut agent, addr) = start(dir.path());
    wait_until(&agent, "a ready worker and the broker connection", || {
        let h = health(&addr);
        h["broker_connected"] == true && h["workers"]["ready"].as_u64() >= Some(1)
    });
    let status = sigterm_and_exit(&mut agent, STOP + EXIT_SLACK);
    assert!(status.success(), "{status:?}; log:\n{}", agent.log_text());

    // The broker's view: each client either sent DISCONNECT ("disconnected") or just
    // went away ("closed its connection", and the agent's will is published).
    let ids = clients(&broker.log());
    assert!(
        ids.iter().any(|c| c.starts_with("edge-agent-"))
            && ids.iter().filter(|c| c.starts_with("edge-worker-")).count() >= 2,
        "agent and worker connections expected: {ids:?}\n{}",
        broker.log()
    );
    let deadline = Instant::now() + WAIT;
    let ended = |log: &str, id: &str| {
        log.contains(&format!("Client {id} disconnected."))
            || log.contains(&format!("Client {id} closed its connection."))
    };
    while !ids.iter().all(|id| ended(&broker.log(), id)) {
        assert!(
            Instant::now() < deadline,
            "connections still open:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = broker.log();
    for id in &ids {
        // The last connection of each id (a client may have reconnected meanwhile).
        let last = log.lines().rfind(|l| ended(l, id)).unwrap_or_default();
        assert!(
            last.ends_with(&format!("Client {id} disconnected.")),
            "{id} went away without DISCONNECT ({last:?}); broker log:\n{log}\nagent log:\n{}",
            agent.log_text()
        );
    }
}

/// `TimeoutStopSec=` of a unit file, in seconds.
fn timeout_stop_sec(unit: &str) -> u64 {
    let path = crate::common::agent::repo().join("systemd").join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap_or_else(|| panic!("no TimeoutStopSec in {}", path.display()));
    value
        .strip_suffix('s')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("TimeoutStopSec={value} is not whole seconds"))
}

#[test]
fn systemd_waits_longer_than_the_agent_and_the_scaler_take_to_stop() {
    let cfg = edge_agent::config::Config::from_toml_str(
        "defaults",
        "[device]\nid = \"x\"\n[[cameras]]\nid = \"c\"\nurl = \"demo://x\"\n",
    )
    .unwrap();
    let agent = cfg.device.stop_timeout.get() + EXIT_SLACK;
    let scaler = cfg.scaling.grace_period.get() + Duration::from_secs(2) + EXIT_SLACK;
    assert!(
        Duration::from_secs(timeout_stop_sec("edge-agent.service")) > agent,
        "edge-agent.service must wait longer than {agent:?}"
    );
    assert!(
        Duration::from_secs(timeout_stop_sec("edge-agent-scaler.service")) > scaler,
        "edge-agent-scaler.service must wait longer than {scaler:?}"
    );
}

#[test]
fn systemd_hears_ready_watchdog_pings_while_stages_progress_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write(
        dir.path(),
        STOP,
        "",
        &camera("demo", "demo://x?width=160&height=90&fps=5"),
    );
    let mut agent = Agent::start(
        &["--config-dir".as_ref(), dir.path().as_os_str()],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            // Pings every 0.5 s.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut heard: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv = |heard: &mut Vec<String>| {
        if let Ok(n) = sock.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let pings = |heard: &[String]| heard.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let addr = agent.metrics_addr(WAIT);
    // The camera's frame count when the first and the last ping were heard: the pings
    // must come while the stages move, not merely while the process lives.
    let mut frames_at_pings = Vec::new();
    let deadline = Instant::now() + WAIT;
    while pings(&heard) < 4 {
        assert!(
            Instant::now() < deadline,
            "systemd heard {heard:?}; log:\n{}",
            agent.log_text()
        );
        let before = pings(&heard);
        recv(&mut heard);
        if pings(&heard) > before && (before == 0 || pings(&heard) == 4) {
            frames_at_pings.push(frames(&addr, "demo"));
        }
    }
    let ready = heard.iter().position(|m| m.contains("READY=1"));
    let first_ping = heard.iter().position(|m| m.contains("WATCHDOG=1"));
    assert!(
        ready.is_some() && ready < first_ping,
        "READY=1 must come before the first ping: {heard:?}"
    );
    assert!(
        frames_at_pings.len() == 2 && frames_at_pings[0] < frames_at_pings[1],
        "the camera made no progress between the first and the fourth ping: frames {frames_at_pings:?}"
    );
    assert!(agent.in_state("stalled").is_empty());
    let status = sigterm_and_exit(&mut agent, STOP + EXIT_SLACK);
    assert!(status.success(), "{status:?}");
    // Everything the agent sent is queued on our socket by now.
    loop {
        let n = heard.len();
        recv(&mut heard);
        if heard.len() == n {
            break;
        }
    }
    assert!(
        heard.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 at the stop: {heard:?}"
    );
}
