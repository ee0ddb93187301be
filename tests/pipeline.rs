//! The whole agent as a user runs it: `edge-agent run` with no configuration (the
//! embedded demo: synthetic camera, in-process MQTT broker, generated model on CPU).
//! Motion starts a worker from zero, detections and a fire incident come back, and after
//! the cooldown no worker process is left (counted in /proc, not read from a flag).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::procs::children_of;

#[test]
fn demo_runs_the_full_cycle_motion_worker_from_zero_detections_and_back_to_zero() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("run")
        .current_dir(repo)
        .env("EDGE_AGENT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,rumqttd=warn")
        .env("EDGE_AGENT__SCALING__COOLDOWN_PERIOD", "3s")
        // The demo square moves every 5 s and escalation lasts as long as motion does:
        // a small budget leaves the worker idle long enough to scale in.
        .env("EDGE_AGENT__CAMERAS__DEMO__ESCALATION__BUDGET", "3")
        .env(
            "EDGE_AGENT__CAMERAS__DEMO__ESCALATION__BUDGET_WINDOW",
            "60s",
        )
        .env("EDGE_AGENT__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let want = [
        "motion_started",
        "worker_ready",
        "detections",
        "incident",
        "worker_draining",
        "worker_stopped",
    ];
    let mut seen: Vec<&str> = Vec::new();
    let mut detections = 0;
    let mut peak_workers = 0;
    let mut metrics_addr: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < want.len() && Instant::now() < deadline {
        peak_workers = peak_workers.max(children_of(pid).len());
        let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let state = v["lifecycle"].as_str().unwrap_or("");
        if state == "serving" {
            metrics_addr = v["addr"].as_str().map(str::to_string);
        }
        if state == "detections" {
            detections += v["detections"].as_u64().unwrap_or(0);
        }
        if let Some(w) = want.iter().find(|w| **w == state) {
            if !seen.contains(w) {
                seen.push(w);
            }
        }
    }
    let missing: Vec<&&str> = want.iter().filter(|w| !seen.contains(w)).collect();
    let leftover = children_of(pid);
    let scraped = metrics_addr.as_deref().map(scrape).unwrap_or_default();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(missing.is_empty(), "never saw {missing:?} (saw {seen:?})");
    assert!(
        detections > 0,
        "the demo model finds the red square as fire"
    );
    assert_eq!(peak_workers, 1, "one worker started from zero");
    assert!(
        leftover.is_empty(),
        "worker processes left after the cooldown: {leftover:?}"
    );
    assert!(status.success(), "agent exit on SIGTERM: {status:?}");
    // The metrics moved with the frames.
    for name in [
        "edge_agent_frames_total{camera=\"demo\"}",
        "edge_agent_escalations_total{camera=\"demo\"}",
        "edge_agent_motion_events_total{camera=\"demo\"}",
    ] {
        let value = scraped
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(value > 0.0, "{name} = {value} in:\n{scraped}");
    }
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
