//! SIGHUP re-reads the configuration directory without dropping healthy cameras: the
//! unchanged camera keeps its pipeline (one start, its frame count only grows), the
//! changed one restarts, the added one starts, the removed one stops; an invalid
//! configuration is refused and the agent goes on with the running one.

use std::time::Duration;

use crate::common::agent::{http_get, Agent};

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

/// Log lines with `message` logged in the span of `camera`.
fn count(agent: &Agent, message: &str, camera: &str) -> usize {
    agent
        .logged(message)
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
            .all(|c| count(&agent, "Camera streaming.", c) == 1)
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
    let r = agent.wait_log("Configuration reloaded.", 1, WAIT);
    assert_eq!(
        (&r["kept"], &r["restarted"], &r["started"], &r["stopped"]),
        (&1.into(), &1.into(), &1.into(), &1.into()),
        "{r}"
    );
    wait_until(&agent, "the changed and added cameras streaming", || {
        count(&agent, "Camera streaming.", "change") == 2
            && count(&agent, "Camera streaming.", "fresh") == 1
    });
    let h = health(&addr);
    let mut ids: Vec<&String> = h["cameras"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["change", "fresh", "keep"], "{h}");
    assert!(frames(&h, "keep") >= before, "keep restarted: {h}");
    assert_eq!(h["cameras"]["keep"]["restarts"], 0, "{h}");
    assert_eq!(count(&agent, "Camera starting.", "keep"), 1);
    assert_eq!(count(&agent, "Camera stopped.", "keep"), 0);
    assert_eq!(count(&agent, "Camera starting.", "change"), 2);
    assert_eq!(count(&agent, "Camera stopped.", "change"), 1);
    assert_eq!(count(&agent, "Camera stopped.", "drop"), 1);

    // An invalid configuration is refused; the running one goes on.
    std::fs::write(
        dir.path().join("agent.toml"),
        "[device]\nid = \"reload-test\"\n[[cameras]]\nid = \"keep\"\nurl = \"ftp://nowhere\"\nbogus = 1\n",
    )
    .unwrap();
    let after_reload = frames(&health(&addr), "keep");
    agent.signal(libc::SIGHUP);
    agent.wait_log(
        "Reload refused: the new configuration is invalid; keeping the running one.",
        1,
        WAIT,
    );
    wait_until(&agent, "keep still streaming", || {
        frames(&health(&addr), "keep") > after_reload
    });
    let h = health(&addr);
    assert_eq!(h["cameras"].as_object().unwrap().len(), 3, "{h}");
    assert_eq!(agent.logged("Configuration reloaded.").len(), 1);
    assert_eq!(count(&agent, "Camera starting.", "keep"), 1);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}
