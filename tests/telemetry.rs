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
                if v["lifecycle"] == "serving" {
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

/// One raw HTTP/1.1 exchange; the whole response ("" when the server closed at once).
fn raw_request(addr: &str, request: &str) -> String {
    exchange(std::net::TcpStream::connect(addr).unwrap(), request)
}

/// [`raw_request`] from the loopback address `local` (all of 127/8 is loopback on Linux),
/// so that the server sees another client.
fn raw_request_from(local: &str, addr: &str, request: &str) -> String {
    exchange(connect_from(local, addr), request)
}

fn exchange(mut s: std::net::TcpStream, request: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A blocking TCP connection to `addr` from the address `local` (std cannot bind a
/// client socket before connecting; tokio's TcpSocket can).
fn connect_from(local: &str, addr: &str) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let s = sock.connect(addr.parse().unwrap()).await.unwrap();
        s.into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s
}

/// Whether the server closed `s` within `wait` (end of stream or a reset), as opposed
/// to keeping it open and silent.
fn closed_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The value of `edge_agent_dropped_total{place="http",reason=REASON}` on `addr`'s
/// /metrics (asked from `local`), 0 when absent.
fn http_drops(local: &str, addr: &str, why: &str) -> f64 {
    let (_, body) = head_and_body(&raw_request_from(
        local,
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    let series = format!("edge_agent_dropped_total{{place=\"http\",reason=\"{why}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Serves the real listener in this process with `limits`, on a runtime of its own (the
/// test thread blocks on sockets); returns the runtime (keep it) and the address.
fn listener(limits: edge_agent::telemetry::http::Limits) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let health: edge_agent::telemetry::http::HealthFn =
        std::sync::Arc::new(|| serde_json::json!({"status": "ok"}));
    let addr = rt
        .block_on(edge_agent::telemetry::http::serve_with(
            "127.0.0.1:0",
            health,
            tokio_util::sync::CancellationToken::new(),
            limits,
        ))
        .unwrap();
    (rt, addr.to_string())
}

fn head_and_body(response: &str) -> (String, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

/// `/metrics` says the format it sends: Prometheus text (checked by `promtool check
/// metrics`, the real Prometheus parser and linter) by default, OpenMetrics when asked
/// for; methods other than GET get 405; connections over the limit are closed and
/// counted.
#[test]
fn metrics_pass_promtool_in_the_format_their_content_type_names() {
    let agent = crate::common::agent::Agent::command(&["run"], &[]);
    let addr = agent.metrics_addr(Duration::from_secs(30));

    let (head, body) = head_and_body(&raw_request(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(!body.contains("# EOF"), "text format has no EOF line");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus: scripts/setup.sh --test)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        body.contains("# TYPE edge_agent_frames_total counter"),
        "{body}"
    );

    let (head, body) = head_and_body(&raw_request(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    ));
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    for method in ["POST", "PUT", "DELETE"] {
        let (head, _) = head_and_body(&raw_request(
            &addr,
            &format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        ));
        assert!(head.starts_with("http/1.1 405"), "{method}: {head}");
    }
    let (head, _) = head_and_body(&raw_request(&addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(head.starts_with("http/1.1 404"), "{head}");

    // Idle connections from several clients, each within its own limit, fill every slot:
    // the next one, from yet another client, is closed unanswered and counted.
    use edge_agent::telemetry::http::{MAX_CONNECTIONS, MAX_PER_CLIENT};
    let held: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|i| connect_from(&format!("127.0.1.{}", 1 + i / MAX_PER_CLIENT), &addr))
        .collect();
    let refused = raw_request_from(
        "127.0.2.1",
        &addr,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(refused, "", "a connection over the limit is closed");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let (_, body) = head_and_body(&raw_request(
            &addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        ));
        let line = body
            .lines()
            .find(|l| {
                l.starts_with(
                    "edge_agent_dropped_total{place=\"http\",reason=\"connection_limit\"}",
                )
            })
            .map(str::to_string);
        if let Some(l) = line {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "slots never freed or drop not counted:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The refused one, and any retry above that came before the slots were free.
    let n: f64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{dropped}");
}

/// The first log line of `edge-agent run --config FILE EXTRA...` with no log format in
/// the environment.
fn first_log_line(config_text: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, config_text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(extra)
        .env_remove("EDGE_AGENT_LOG_FORMAT")
        .env_remove("EDGE_AGENT__TELEMETRY__LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    line
}

#[test]
fn telemetry_log_format_in_the_config_chooses_the_log_format_and_the_flag_wins() {
    let json =
        "[device]\nid = \"fmt\"\n[telemetry]\nmetrics_listen = \"\"\nlog_format = \"json\"\n";
    let line = first_log_line(json, &[]);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert!(v["message"].is_string(), "{line}");
    let line = first_log_line(json, &["--log-format", "text"]);
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err() && line.contains("INFO"),
        "--log-format text wins over the config: {line}"
    );
}

/// The demo as a new user runs it (embedded broker, a worker from zero and back to
/// zero, then a SIGTERM) logs no ERROR from start to stop: an ERROR must mean
/// something is wrong. The stop is in: the agent closes its transport before its
/// broker goes (issue 17, defect 1, shown fixed in stop.rs).
#[test]
fn a_healthy_demo_run_logs_no_error_from_start_through_scale_in() {
    let mut agent = crate::common::agent::Agent::command(
        &["run"],
        &[("EDGE_AGENT__SCALING__COOLDOWN_PERIOD", "1s")],
    );
    for state in ["detections", "worker_draining", "worker_stopped"] {
        agent.wait_state(state, 1, Duration::from_secs(90));
    }
    let status = agent.stop_and_wait();
    assert!(status.success(), "{status:?}");
    assert!(
        agent
            .lines()
            .into_iter()
            .any(|l| l.worker.is_none() && l.lifecycle() == "stopped"),
        "the stop's own lines were read"
    );
    let errors: Vec<String> = agent
        .lines()
        .into_iter()
        .filter(|l| l.v["level"] == "ERROR")
        .map(|l| format!("{:?} {}", l.worker, l.v))
        .collect();
    assert!(errors.is_empty(), "ERROR lines:\n{}", errors.join("\n"));
}

/// One client holding as many idle sockets as the whole listener serves does not lock
/// out another: beyond its own limit its sockets are closed at once and counted
/// (`reason="client_limit"`), the ones it keeps stay open, and a client from another
/// address is served meanwhile.
#[test]
fn one_client_holding_idle_sockets_cannot_lock_out_another() {
    use edge_agent::telemetry::http::{Limits, MAX_CONNECTIONS, MAX_PER_CLIENT};
    // A head timeout far beyond the test, so that only the limits close sockets here.
    let (_rt, addr) = listener(Limits {
        head_timeout: Duration::from_secs(120),
        ..Limits::default()
    });
    let before = http_drops("127.0.3.9", &addr, "client_limit");
    // connect() returns once the kernel has queued the connection and the listener
    // accepts in that order, so the first MAX_PER_CLIENT are the ones it keeps.
    let mut idle: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| connect_from("127.0.3.1", &addr))
        .collect();
    let (head, body) = head_and_body(&raw_request_from(
        "127.0.3.2",
        &addr,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    assert!(head.starts_with("http/1.1 200"), "another client: {head}");
    assert!(body.contains("\"ok\""), "{body}");
    let mut over = idle.split_off(MAX_PER_CLIENT);
    for (i, s) in over.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "idle socket {} of one client was kept",
            MAX_PER_CLIENT + i + 1
        );
    }
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            !closed_within(s, Duration::from_millis(200)),
            "idle socket {} within the client's limit was closed",
            i + 1
        );
    }
    let counted = http_drops("127.0.3.9", &addr, "client_limit") - before;
    assert!(
        counted >= (MAX_CONNECTIONS - MAX_PER_CLIENT) as f64,
        "{counted} client_limit drops counted"
    );
    drop(idle);
}

/// A socket that sends no request head is closed after the head timeout and counted
/// (`reason="head_timeout"`), and its place goes back to its client: a client that used
/// up its limit with idle sockets is served once they time out.
#[test]
fn idle_sockets_are_closed_after_the_head_timeout_and_free_their_places() {
    use edge_agent::telemetry::http::Limits;
    let timeout = Duration::from_millis(300);
    let (_rt, addr) = listener(Limits {
        per_client: 2,
        head_timeout: timeout,
        ..Limits::default()
    });
    let before = http_drops("127.0.4.9", &addr, "head_timeout");
    let start = Instant::now();
    let mut idle: Vec<_> = (0..2).map(|_| connect_from("127.0.4.1", &addr)).collect();
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "an idle socket was never closed"
        );
    }
    assert!(
        start.elapsed() >= timeout,
        "closed after {:?}, before the head timeout",
        start.elapsed()
    );
    // The places come back as the connections' tasks end, just after the close: wait
    // until the same client is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, _) = head_and_body(&raw_request_from(
            "127.0.4.1",
            &addr,
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        ));
        if head.starts_with("http/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client's places never came back: {head:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The count follows the close: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted = http_drops("127.0.4.9", &addr, "head_timeout") - before;
        if counted >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} head_timeout drops counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
