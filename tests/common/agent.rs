//! The one process harness: the built `edge-agent` (any command: `run`, `scaler`,
//! `worker`) as a child process for tests and benches, its JSON log lines collected as
//! they come (its own, and its workers' which it passes through as `[worker PID] line`),
//! its child processes counted in /proc, its /metrics and /health scraped. Dropping it
//! kills the process and any worker left behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait;

/// The repository root (the agent runs there, so the default model path resolves).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub use super::procs::{children_of, http_get, metric};

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

pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The agent's own `XDG_STATE_HOME` (where clips go when no `dir` is set), so that
    /// tests never write into the home directory and never see each other's files.
    _state: tempfile::TempDir,
}

impl Agent {
    /// Starts `edge-agent run ARGS` in the repository root with JSON logs.
    pub fn start(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Agent {
        Self::start_program(Path::new(env!("CARGO_BIN_EXE_edge-agent")), args, env)
    }

    /// [`Agent::start`] with another build of `edge-agent` (a bench's baseline binary).
    pub fn start_program(program: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(program);
        cmd.arg("run").args(args);
        Self::spawn(cmd, env)
    }

    /// Starts `edge-agent ARGS` (any command) in the repository root with JSON logs and
    /// its telemetry listener on a free loopback port (see [`Agent::get`]).
    pub fn command(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        cmd.args(args)
            .env("EDGE_AGENT__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0");
        Self::spawn(cmd, env)
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Agent {
        let state = tempfile::tempdir().expect("a state directory");
        cmd.env("XDG_STATE_HOME", state.path())
            .env_remove("STATE_DIRECTORY");
        cmd.current_dir(repo())
            .env("EDGE_AGENT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,rumqttd=warn,lapin=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("edge-agent starts");
        let logs: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // A worker's line, passed through as `[worker PID] {json}`, is kept
                // whole under `worker_line`, so the agent's own lifecycle lines are not
                // mistaken for a worker's.
                let worker = line
                    .strip_prefix("[worker ")
                    .and_then(|r| r.split_once("] "));
                let v = match worker {
                    Some((pid, json)) => serde_json::json!({
                        "worker": pid.parse::<u32>().ok(),
                        "worker_line": serde_json::from_str::<serde_json::Value>(json)
                            .unwrap_or_else(|_| serde_json::json!({ "message": json })),
                        "message": line,
                    }),
                    None => serde_json::from_str::<serde_json::Value>(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "message": line })),
                };
                sink.lock().unwrap().push(v);
            }
        });
        Agent {
            pid: child.id(),
            child: Some(child),
            logs,
            _state: state,
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Every log line so far, a worker's with its pid and its own record.
    pub fn lines(&self) -> Vec<Line> {
        self.logs()
            .into_iter()
            .map(|v| match v["worker"].as_u64() {
                Some(pid) if v.get("worker_line").is_some() => Line {
                    worker: Some(pid as u32),
                    v: v["worker_line"].clone(),
                },
                _ => Line { worker: None, v },
            })
            .collect()
    }

    /// Lifecycle lines (README, "Lifecycle lines": the `lifecycle` field) in `state`.
    /// Tests wait on these, not on log sentences, which may change.
    pub fn in_state(&self, state: &str) -> Vec<serde_json::Value> {
        // Filtered under the lock: a busy agent logs thousands of lines, and tests poll.
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["lifecycle"] == state)
            .cloned()
            .collect()
    }

    /// Lifecycle lines of the agent's worker processes in `state`.
    pub fn worker_in_state(&self, state: &str) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|&v| v["worker_line"]["lifecycle"] == state)
            .map(|v| v["worker_line"].clone())
            .collect()
    }

    /// Waits for the `n`th lifecycle line in `state`; panics with the log after
    /// `timeout`, or as soon as the agent has exited.
    pub fn wait_state(&self, state: &str, n: usize, timeout: Duration) -> serde_json::Value {
        let mut exited = false;
        let v = wait::value_explained(
            &format!("{n}x lifecycle {state:?}"),
            timeout,
            || {
                let found = self.in_state(state).into_iter().nth(n - 1);
                exited = found.is_none() && !self.alive();
                found.or(exited.then(serde_json::Value::default))
            },
            || format!("; log:\n{}", self.log_text()),
        );
        assert!(
            !exited,
            "the agent exited before {n}x lifecycle {state:?}; log:\n{}",
            self.log_text()
        );
        v
    }

    /// Waits until `f` holds; fails after `within`, with the log.
    pub fn wait_until(&self, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        wait::value_explained(
            what,
            within,
            || f().then_some(()),
            || format!("; log:\n{}", self.log_text()),
        )
    }

    pub fn log_text(&self) -> String {
        self.logs()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn alive(&self) -> bool {
        std::fs::metadata(format!("/proc/{}", self.pid)).is_ok()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .unwrap_or_default()
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    }

    /// Its child processes now (workers), from /proc.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid)
    }

    /// The telemetry address once the `serving` line has come, without waiting.
    pub fn addr(&self) -> Option<String> {
        self.in_state("serving")
            .first()
            .and_then(|v| v["addr"].as_str().map(str::to_string))
    }

    /// `GET path` on its telemetry listener; "" before it serves or when it refuses.
    pub fn get(&self, path: &str) -> String {
        self.addr().map(|a| http_get(&a, path)).unwrap_or_default()
    }

    /// `/health` as JSON (null before it serves).
    pub fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/health")).unwrap_or_default()
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// The metrics address from the `serving` lifecycle line.
    pub fn metrics_addr(&self, timeout: Duration) -> String {
        let v = self.wait_state("serving", 1, timeout);
        v["addr"]
            .as_str()
            .unwrap_or_else(|| panic!("a serving line without an address: {v}"))
            .to_string()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Waits up to `timeout` for the exit; None while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("agent still owned");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after 30 s).
    pub fn stop(mut self) -> ExitStatus {
        self.stop_and_wait()
    }

    /// As [`Agent::stop`], keeping the agent so its last log lines can be read.
    pub fn stop_and_wait(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("agent still owned");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The last lines, written just before the exit, reach the reader thread.
        std::thread::sleep(Duration::from_millis(100));
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let kids = children_of(self.pid);
            let _ = c.kill();
            let _ = c.wait();
            for k in kids {
                unsafe { libc::kill(k as i32, libc::SIGKILL) };
            }
        }
    }
}
