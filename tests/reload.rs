//! SIGHUP re-reads the configuration directory without dropping healthy cameras: the
//! unchanged camera keeps its pipeline (one start, its frame count only grows), the
//! changed one restarts, the added one starts, the removed one stops; an invalid
//! configuration is refused and the agent goes on with the running one.
//!
//! Workers run on the agent's configuration, never on the files: inference settings
//! reloaded reach new workers and drain the old ones, a file edited without SIGHUP
//! reaches no worker, and what only a restart applies is listed in /health.

use std::time::Duration;

use crate::common::agent::{children_of, http_get, Agent};
use crate::common::procs::alive;

const WAIT: Duration = Duration::from_secs(30);

fn camera(id: &str, fps: u32) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nurl = \"demo://{id}?width=320&height=180&fps={fps}\"\nescalation = {{ enabled = false }}\n"
    )
}

fn write(dir: &std::path::Path, cameras: &str) {
    let text = format!(
        "[device]\nid = \"reload-test\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n{cameras}"
    );
    std::fs::write(dir.join("agent.toml"), text).unwrap();
}

/// Lifecycle lines in `state` logged in the span of `camera`.
fn count(agent: &Agent, state: &str, camera: &str) -> usize {
    agent
        .in_state(state)
        .iter()
        .filter(|v| v["span"]["camera"] == camera)
        .count()
}

fn health(addr: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, "/health")).expect("/health is JSON")
}

fn frames(h: &serde_json::Value, camera: &str) -> u64 {
    h["cameras"][camera]["frames"]
        .as_u64()
        .unwrap_or_else(|| panic!("no frames for {camera} in {h}"))
}

fn wait_until(agent: &Agent, what: &str, f: impl FnMut() -> bool) {
    agent.wait_until(what, WAIT, f);
}

#[test]
fn sighup_keeps_the_unchanged_camera_restarts_the_changed_one_and_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[camera("keep", 5), camera("change", 5), camera("drop", 5)].concat(),
    );
    let agent = Agent::start(&["--config-dir".as_ref(), dir.path().as_os_str()], &[]);
    let addr = agent.metrics_addr(WAIT);
    wait_until(&agent, "three cameras streaming", || {
        ["keep", "change", "drop"]
            .iter()
            .all(|c| count(&agent, "camera_streaming", c) == 1)
    });
    wait_until(&agent, "frames from keep", || {
        frames(&health(&addr), "keep") > 0
    });
    let before = frames(&health(&addr), "keep");

    // Change one, add one, remove one.
    write(
        dir.path(),
        &[camera("keep", 5), camera("change", 4), camera("fresh", 5)].concat(),
    );
    agent.signal(libc::SIGHUP);
    let r = agent.wait_state("reloaded", 1, WAIT);
    assert_eq!(
        (&r["kept"], &r["restarted"], &r["started"], &r["stopped"]),
        (&1.into(), &1.into(), &1.into(), &1.into()),
        "{r}"
    );
    wait_until(&agent, "the changed and added cameras streaming", || {
        count(&agent, "camera_streaming", "change") == 2
            && count(&agent, "camera_streaming", "fresh") == 1
    });
    let h = health(&addr);
    let mut ids: Vec<&String> = h["cameras"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["change", "fresh", "keep"], "{h}");
    assert!(frames(&h, "keep") >= before, "keep restarted: {h}");
    assert_eq!(h["cameras"]["keep"]["restarts"], 0, "{h}");
    assert_eq!(count(&agent, "camera_starting", "keep"), 1);
    assert_eq!(count(&agent, "camera_stopped", "keep"), 0);
    assert_eq!(count(&agent, "camera_starting", "change"), 2);
    assert_eq!(count(&agent, "camera_stopped", "change"), 1);
    assert_eq!(count(&agent, "camera_stopped", "drop"), 1);

    // An invalid configuration is refused; the running one goes on.
    std::fs::write(
        dir.path().join("agent.toml"),
        "[device]\nid = \"reload-test\"\n[[cameras]]\nid = \"keep\"\nurl = \"ftp://nowhere\"\nbogus = 1\n",
    )
    .unwrap();
    let after_reload = frames(&health(&addr), "keep");
    agent.signal(libc::SIGHUP);
    agent.wait_state("reload_refused", 1, WAIT);
    wait_until(&agent, "keep still streaming", || {
        frames(&health(&addr), "keep") > after_reload
    });
    let h = health(&addr);
    assert_eq!(h["cameras"].as_object().unwrap().len(), 3, "{h}");
    assert_eq!(agent.in_state("reloaded").len(), 1);
    assert_eq!(count(&agent, "camera_starting", "keep"), 1);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------------
// Workers and the settings a reload applies, or cannot.

/// An agent with no camera and one worker always running (`min_workers = 1`), on the
/// embedded broker; `extra` is appended.
fn write_workers(dir: &std::path::Path, extra: &str) {
    let text = format!(
        "[device]\nid = \"reload-workers\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n[scaling]\nmin_workers = 1\ngrace_period = \"5s\"\n{extra}"
    );
    std::fs::write(dir.join("agent.toml"), text).unwrap();
}

/// An agent on [`write_workers`] with its first worker ready: the directory (kept for
/// the test's edits), the agent, its /health address and the worker's pid.
fn start_with_a_worker() -> (tempfile::TempDir, Agent, String, u32) {
    let dir = tempfile::tempdir().unwrap();
    write_workers(dir.path(), "");
    let agent = Agent::start(&["--config-dir".as_ref(), dir.path().as_os_str()], &[]);
    let addr = agent.metrics_addr(WAIT);
    let first = ready_worker(&agent, &addr, &[]);
    (dir, agent, addr, first)
}

/// Waits for exactly one worker process, ready and not one of `not`; its pid.
fn ready_worker(agent: &Agent, addr: &str, not: &[u32]) -> u32 {
    let mut pid = 0;
    wait_until(agent, "one ready worker", || {
        let h = health(addr);
        // One child: no worker still draining either.
        let kids = children_of(agent.pid);
        if h["workers"]["ready"] == 1 && kids.len() == 1 && !not.contains(&kids[0]) {
            pid = kids[0];
            true
        } else {
            false
        }
    });
    pid
}

/// The provider the ready workers run on, when they all run on one.
fn provider_in_use(h: &serde_json::Value) -> Option<String> {
    let p = h["workers"]["providers"].as_object()?;
    match p
        .iter()
        .filter(|(_, n)| n.as_u64() > Some(0))
        .collect::<Vec<_>>()[..]
    {
        [(name, _)] => Some(name.clone()),
        _ => None,
    }
}

fn last_failure(h: &serde_json::Value) -> String {
    h["workers"]["last_failure"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sighup_with_new_inference_settings_drains_the_running_worker_and_starts_new_ones_with_them() {
    let (dir, agent, addr, first) = start_with_a_worker();

    // A setting the worker acts on at start: its successor refuses the CPU. Without
    // a GPU it does not start, saying why; with one it runs on a GPU provider.
    write_workers(dir.path(), "[inference]\nrequire_gpu = true\n");
    agent.signal(libc::SIGHUP);
    let mut on_gpu_pid = None;
    wait_until(
        &agent,
        "the first worker drained and its successor refusing the CPU",
        || {
            let h = health(&addr);
            let refused = h["workers"]["ready"] == 0
                && last_failure(&h).contains("inference.require_gpu is set");
            let on_gpu = h["workers"]["ready"] == 1
                && provider_in_use(&h).is_some_and(|p| p == "cuda" || p == "tensorrt");
            if on_gpu {
                on_gpu_pid = children_of(agent.pid).first().copied();
            }
            !alive(first) && (refused || on_gpu)
        },
    );
    let h = health(&addr);
    assert_eq!(h["restart_needed"], serde_json::json!([]), "{h}");

    // And back: the very next worker runs again, on a provider the default list
    // allows (the CPU here; TensorRT or CUDA on a machine with a GPU).
    write_workers(dir.path(), "[inference]\nrequire_gpu = false\n");
    agent.signal(libc::SIGHUP);
    let before: Vec<u32> = [first].into_iter().chain(on_gpu_pid).collect();
    let third = ready_worker(&agent, &addr, &before);
    assert_ne!(third, first);
    let h = health(&addr);
    assert!(
        provider_in_use(&h).is_some_and(|p| ["tensorrt", "cuda", "cpu"].contains(&p.as_str())),
        "{h}"
    );
    // The drained worker finished cleanly: no crash counted for it.
    assert!(
        !last_failure(&h).contains("crashed"),
        "{}",
        last_failure(&h)
    );
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_worker_started_after_a_file_edit_without_sighup_runs_on_the_agents_configuration() {
    let (dir, agent, addr, first) = start_with_a_worker();

    // Edited, not reloaded: a worker that read it could not start without a GPU. (On a
    // machine with one it would start either way; the command line check below
    // still holds there.)
    write_workers(dir.path(), "[inference]\nrequire_gpu = true\n");
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let second = ready_worker(&agent, &addr, &[first]);
    assert_ne!(second, first);
    let h = health(&addr);
    assert!(
        !last_failure(&h).contains("require_gpu"),
        "a worker read the edited file: {h}"
    );
    // It reads no file at all: its configuration comes from the agent, on stdin.
    let cmdline = std::fs::read(format!("/proc/{second}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains(dir.path().to_str().unwrap()),
        "worker command line names the configuration files: {cmdline}"
    );
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sighup_with_a_transport_change_reports_it_in_health_and_keeps_the_running_transport() {
    let (dir, agent, addr, first) = start_with_a_worker();
    let h = health(&addr);
    assert_eq!(h["restart_needed"], serde_json::json!([]), "{h}");

    // A broker nobody listens on: neither the agent nor a worker may switch to it.
    let port = crate::common::broker::free_port();
    write_workers(
        dir.path(),
        &format!("[transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://127.0.0.1:{port}\"\n"),
    );
    agent.signal(libc::SIGHUP);
    wait_until(
        &agent,
        "the transport change listed as needing a restart",
        || {
            health(&addr)["restart_needed"]
                == serde_json::json!(["transport.kind", "transport.mqtt_url"])
        },
    );
    let r = agent.wait_state("restart_needed", 1, WAIT);
    assert_eq!(
        r["keys"].as_str().unwrap_or_default(),
        r#"["transport.kind", "transport.mqtt_url"]"#,
        "{r}"
    );
    // The worker was not replaced for it, and one started now still gets the running
    // transport (the embedded broker) and becomes ready.
    assert!(
        alive(first),
        "the worker was stopped for a setting it cannot take"
    );
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    ready_worker(&agent, &addr, &[first]);
    let h = health(&addr);
    assert_eq!(h["broker_connected"], true, "{h}");

    // The files back as they run: nothing needs a restart any more.
    write_workers(dir.path(), "");
    agent.signal(libc::SIGHUP);
    wait_until(&agent, "nothing left needing a restart", || {
        health(&addr)["restart_needed"] == serde_json::json!([])
    });
    assert_eq!(agent.in_state("restart_needed").len(), 1);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}
