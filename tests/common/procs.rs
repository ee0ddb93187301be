//! The built `edge-agent` as a child process: JSON log lines (its own and its workers',
//! which it passes through as `[worker PID] line`), child processes counted in /proc,
//! and its HTTP endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Child processes of `pid`, read from /proc (not from any flag the agent keeps).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses: state, ppid, ...
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        // A zombie is gone already, only not yet reaped.
        if ppid == pid && state != "Z" {
            kids.push(p);
        }
    }
    kids
}

/// Whether `pid` names a live process (a zombie is dead, only not yet reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// Waits until `pid` is gone; panics with `what` after `within`.
pub async fn wait_gone(pid: u32, within: Duration, what: &str) {
    super::wait::until_async(what, within, || !alive(pid)).await
}

/// `GET path` on `addr`; the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the first sample line of `/metrics` text starting with `name`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
}

/// One log line: the JSON record, and the worker pid when a worker wrote it.
#[derive(Clone, Debug)]
pub struct Line {
    pub worker: Option<u32>,
    pub v: serde_json::Value,
}

impl Line {
    pub fn message(&self) -> &str {
        self.v["message"].as_str().unwrap_or("")
    }

    /// The lifecycle state this line marks (README, "Lifecycle lines"), or "".
    pub fn lifecycle(&self) -> &str {
        self.v["lifecycle"].as_str().unwrap_or("")
    }
}

pub struct Running {
    pub child: Child,
    pub pid: u32,
    rx: mpsc::Receiver<Line>,
    /// Every line read so far.
    pub seen: Vec<Line>,
    pub metrics_addr: Option<String>,
}

impl Running {
    /// Starts `edge-agent ARGS` in the repository root with JSON logs, metrics on a
    /// free loopback port and the given extra environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        cmd.args(args)
            .current_dir(repo)
            .env("EDGE_AGENT__TELEMETRY__LOG_FORMAT", "json")
            .env("RUST_LOG", "info,rumqttd=warn,lapin=warn")
            .env("EDGE_AGENT__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("edge-agent starts");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (worker, json) = match line.strip_prefix("[worker ") {
                    Some(rest) => match rest.split_once("] ") {
                        Some((pid, j)) => (pid.parse().ok(), j.to_string()),
                        None => continue,
                    },
                    None => (None, line),
                };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) {
                    if tx.send(Line { worker, v }).is_err() {
                        break;
                    }
                }
            }
        });
        Running {
            child,
            pid,
            rx,
            seen: Vec::new(),
            metrics_addr: None,
        }
    }

    /// Reads log lines for at most `d`; returns the new ones.
    pub fn pump(&mut self, d: Duration) -> Vec<Line> {
        let deadline = Instant::now() + d;
        let mut new = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    if l.worker.is_none() && l.lifecycle() == "serving" {
                        self.metrics_addr = l.v["addr"].as_str().map(str::to_string);
                    }
                    self.seen.push(l.clone());
                    new.push(l);
                }
                Err(_) => break,
            }
        }
        new
    }

    /// Waits up to `timeout` for a lifecycle line of this process (not a worker's) in
    /// `state` (README, "Lifecycle lines").
    pub fn wait_state(&mut self, state: &str, timeout: Duration) -> Option<Line> {
        let mine = |l: &Line| l.worker.is_none() && l.lifecycle() == state;
        if let Some(l) = self.seen.iter().find(|l| mine(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for l in self.pump(Duration::from_millis(100)) {
                if mine(&l) {
                    return Some(l);
                }
            }
        }
        None
    }

    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid)
    }

    pub fn get(&self, path: &str) -> String {
        self.metrics_addr
            .as_deref()
            .map(|a| http_get(a, path))
            .unwrap_or_default()
    }

    pub fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/health")).unwrap_or_default()
    }

    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        self.pump(Duration::from_millis(200));
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
