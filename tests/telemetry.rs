//! systemd notification and the metrics endpoint of a running agent: READY=1 and
//! WATCHDOG=1 arrive on a NOTIFY_SOCKET the test owns, and /metrics parses as
//! Prometheus text with the agent's prefixed names.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn agent_sends_ready_and_watchdog_pings_and_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "[device]\nid = \"notify-test\"\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("EDGE_AGENT_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let (mut ready, mut pings) = (false, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while (!ready || pings < 3) && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            ready |= text.lines().any(|l| l == "READY=1");
            pings += text.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    // The metrics address is in the log.
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Metrics on"))
                {
                    addr = v["addr"].as_str().map(str::to_string);
                }
            }
        }
    }
    let body = addr.as_deref().map(|a| {
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(ready, "no READY=1");
    assert!(pings >= 3, "only {pings} watchdog pings");
    let body = body.expect("metrics address logged");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let text = body.split("\r\n\r\n").nth(1).unwrap_or("");
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP edge_agent_")
                    || line.starts_with("# TYPE edge_agent_")
                    || line == "# EOF",
                "{line}"
            );
        } else {
            let (name, value) = line.rsplit_once(' ').unwrap_or(("", ""));
            assert!(name.starts_with("edge_agent_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        }
    }
    assert!(text.contains("edge_agent_workers "), "{text}");
    assert!(status.success(), "{status:?}");
}
