//! Worker process supervision: keeps the number of `edge-agent worker` child processes
//! at the target the scaler sets.
//!
//! - A worker says it is ready by printing [`READY_LINE`] on stdout once its model is
//!   loaded and it consumes frames; its stderr goes to our log and its last lines are
//!   kept as the reason when it dies.
//! - Scale-in is graceful: SIGTERM, the worker finishes and acks what it holds, and
//!   after `grace` it is killed.
//! - A worker that exits before it is ready failed to start (bad model, missing
//!   runtime): the pool backs off (the shared [`Backoff`]) and reports why, so a broken
//!   worker never turns into a fork bomb. A crash after ready is restarted the same way;
//!   so is a worker not ready within the readiness timeout (hung while loading), which
//!   is killed first.
//! - Signals go through the task that owns the `Child`, never to a bare pid: once a
//!   child is reaped its pid may name another process.
//! - A worker dies with the agent (`PR_SET_PDEATHSIG`), even when the agent is
//!   SIGKILLed outside systemd, so no orphan keeps a GPU or the broker busy.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::telemetry::metrics::metrics;

/// The line a worker prints on stdout when it is ready for frames.
pub const READY_LINE: &str = "EDGE_AGENT_WORKER_READY";

/// A worker prints `PROVIDER_PREFIX name` on stdout before [`READY_LINE`]: the
/// execution provider its session really runs on (tensorrt, cuda or cpu).
pub const PROVIDER_PREFIX: &str = "EDGE_AGENT_WORKER_PROVIDER";

/// A worker prints `HELD_PREFIX n` on stdout when the number of frames it holds
/// (delivered, not yet acked) changes.
pub const HELD_PREFIX: &str = "EDGE_AGENT_WORKER_HELD";

/// How often SIGKILL is sent again to a killed worker whose exit was not seen yet.
const KILL_REPEAT: Duration = Duration::from_secs(1);

/// How to start one worker.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl WorkerSpec {
    /// This same binary, `worker` subcommand, with the given extra arguments.
    pub fn this_binary(args: Vec<OsString>) -> std::io::Result<Self> {
        let program = std::env::current_exe()?;
        let mut all = vec![OsString::from("worker")];
        all.extend(args);
        Ok(Self {
            program,
            args: all,
            env: Vec::new(),
        })
    }
}

/// What the pool is doing, for status and tests.
#[derive(Clone, Debug, Default)]
pub struct PoolStatus {
    pub target: u32,
    /// Processes alive and not asked to stop.
    pub running: u32,
    pub ready: u32,
    pub pids: Vec<u32>,
    /// Frames the live workers report holding (delivered to them, not yet acked).
    pub held: u64,
    /// Ready workers by the execution provider they run on.
    pub providers: std::collections::BTreeMap<String, u32>,
    pub started: u64,
    pub start_failures: u64,
    pub crashes: u64,
    /// Why the last worker failed, with the tail of its stderr.
    pub last_failure: Option<String>,
    /// Until when no new worker is started (backing off after a failure).
    pub backing_off: bool,
    /// The last worker failed (to start, or crashed) and none became ready since.
    pub failing: bool,
}

#[derive(Clone)]
pub struct PoolHandle {
    target: watch::Sender<u32>,
    status: Arc<Mutex<PoolStatus>>,
    done: watch::Receiver<bool>,
    ready: watch::Receiver<u32>,
}

impl PoolHandle {
    pub fn set_target(&self, n: u32) {
        self.target.send_if_modified(|t| {
            let changed = *t != n;
            *t = n;
            changed
        });
    }
    pub fn status(&self) -> PoolStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The number of ready workers, as it changes.
    pub fn ready_changes(&self) -> watch::Receiver<u32> {
        self.ready.clone()
    }
    /// Waits until the pool has stopped every worker after shutdown.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

enum Event {
    Ready(u32),
    Held(u32, u64),
    Provider(u32, String),
    Exited(u32, std::io::Result<ExitStatus>),
}

/// Why a worker was given up, for the counters and `edge_dropped_total`.
#[derive(Clone, Copy)]
enum Failure {
    Start,
    ReadyTimeout,
    Crash,
}

/// A signal for a worker, delivered by the task that owns its `Child`.
#[derive(Clone, Copy, Debug)]
enum Signal {
    Term,
    Kill,
}

struct Worker {
    pid: u32,
    started: Instant,
    ready: bool,
    held: u64,
    provider: Option<String>,
    /// Set once SIGTERM was sent: kill at this deadline.
    stopping: Option<Instant>,
    /// SIGKILL sent; waiting for the exit to be seen.
    killed: bool,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    signals: mpsc::Sender<Signal>,
}

impl Worker {
    fn signal(&self, sig: Signal) {
        // Full only if signals pile up faster than the owner runs; the next pass
        // sends again.
        let _ = self.signals.try_send(sig);
    }
}

/// Starts the pool task on the current runtime.
pub fn spawn_pool(
    spec: WorkerSpec,
    grace: Duration,
    ready_timeout: Duration,
    backoff: Backoff,
    shutdown: CancellationToken,
) -> PoolHandle {
    let (target_tx, target_rx) = watch::channel(0u32);
    let (done_tx, done_rx) = watch::channel(false);
    let status = Arc::new(Mutex::new(PoolStatus::default()));
    let (ready_tx, ready_rx) = watch::channel(0u32);
    let pool = Pool {
        ready_tx,
        spec,
        grace,
        ready_timeout,
        backoff,
        workers: Vec::new(),
        next_start: Instant::now(),
        status: status.clone(),
        counters: PoolStatus::default(),
        seen_providers: Default::default(),
    };
    tokio::spawn(async move {
        pool.run(target_rx, shutdown).await;
        let _ = done_tx.send(true);
    });
    PoolHandle {
        target: target_tx,
        status,
        done: done_rx,
        ready: ready_rx,
    }
}

struct Pool {
    /// The ready count (workers ready and not asked to stop), for those who act on a
    /// change at once (the agent resends MQTT frames when the first worker is ready).
    ready_tx: watch::Sender<u32>,
    spec: WorkerSpec,
    grace: Duration,
    /// A worker not ready this long after its start is taken as hung and killed.
    ready_timeout: Duration,
    backoff: Backoff,
    workers: Vec<Worker>,
    next_start: Instant,
    status: Arc<Mutex<PoolStatus>>,
    counters: PoolStatus,
    seen_providers: std::collections::BTreeSet<String>,
}

impl Pool {
    async fn run(mut self, mut target_rx: watch::Receiver<u32>, shutdown: CancellationToken) {
        let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(64);
        let mut stopping_all = false;
        loop {
            let target = if stopping_all {
                0
            } else {
                *target_rx.borrow_and_update()
            };
            let now = Instant::now();
            self.reconcile(target, now, &ev_tx);
            self.publish(target, now);
            if stopping_all && self.workers.is_empty() {
                break;
            }
            let wake = self.next_wake(target, now);
            tokio::select! {
                changed = target_rx.changed(), if !stopping_all => {
                    if changed.is_err() { stopping_all = true; }
                }
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.cancelled(), if !stopping_all => {
                    info!(workers = self.workers.len(), "Stopping workers for shutdown.");
                    stopping_all = true;
                }
            }
        }
        self.publish(0, Instant::now());
    }

    fn alive(&self) -> u32 {
        self.workers.iter().filter(|w| w.stopping.is_none()).count() as u32
    }

    fn reconcile(&mut self, target: u32, now: Instant, ev_tx: &mpsc::Sender<Event>) {
        // Kill whoever outlived the grace period after SIGTERM. Until its exit is seen
        // the kill is repeated once a second, not on every pass: a deadline left in the
        // past made this loop spin (and log) until the process was reaped.
        for w in &mut self.workers {
            if w.stopping.is_some_and(|deadline| now >= deadline) {
                if !w.killed {
                    warn!(pid = w.pid, grace = ?self.grace, "Worker did not stop in time; killing it.");
                }
                w.signal(Signal::Kill);
                w.killed = true;
                w.stopping = Some(now + KILL_REPEAT);
            }
        }
        // Whoever is not ready within the readiness timeout hangs while loading: it
        // would count as starting forever and hold back the workers that replace it.
        let timeout = self.ready_timeout;
        let hung: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                !w.ready && w.stopping.is_none() && now >= w.started + timeout
            })
            .collect();
        for i in hung {
            let w = &mut self.workers[i];
            w.signal(Signal::Kill);
            w.killed = true;
            // Killed already; the grace deadline only repeats that if it lingers.
            w.stopping = Some(now + self.grace);
            let pid = w.pid;
            let delay = self.failed(
                Failure::ReadyTimeout,
                format!("worker failed to start: not ready within {timeout:?}, killed"),
            );
            warn!(pid, ?timeout, retry_in = ?delay, "Worker not ready in time; killed it, backing off.");
        }
        let alive = self.alive();
        // While failing, probe with one worker at a time: wait for it to be ready or die.
        let probing = self.backoff.failing()
            && self
                .workers
                .iter()
                .any(|w| !w.ready && w.stopping.is_none());
        if alive < target && now >= self.next_start && !probing {
            // One start per pass while backing off protects against a fork bomb; a
            // healthy pool starts what it needs at once.
            let n = if self.backoff.failing() {
                1
            } else {
                target - alive
            };
            for _ in 0..n {
                if let Err(e) = self.start(ev_tx) {
                    let delay = self.failed(Failure::Start, format!("spawn failed: {e}"));
                    warn!(program = %self.spec.program.display(), error = %e, retry_in = ?delay, "Cannot start a worker.");
                    break;
                }
            }
        } else if alive > target {
            // Stop the youngest first: not-ready ones have done the least work.
            let mut order: Vec<usize> = (0..self.workers.len())
                .filter(|&i| self.workers[i].stopping.is_none())
                .collect();
            order.sort_by_key(|&i| {
                (
                    self.workers[i].ready,
                    std::cmp::Reverse(self.workers[i].started),
                )
            });
            for &i in order.iter().take((alive - target) as usize) {
                let w = &mut self.workers[i];
                info!(pid = w.pid, "Scaling in: asking worker to finish and exit.");
                w.signal(Signal::Term);
                w.stopping = Some(now + self.grace);
            }
        }
    }

    fn start(&mut self, ev_tx: &mpsc::Sender<Event>) -> std::io::Result<()> {
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(8)));
        if let Some(out) = child.stdout.take() {
            let tx = ev_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = line.trim();
                    if line == READY_LINE {
                        let _ = tx.send(Event::Ready(pid)).await;
                    } else if let Some(n) = line
                        .strip_prefix(HELD_PREFIX)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                    {
                        let _ = tx.send(Event::Held(pid, n)).await;
                    } else if let Some(p) = line.strip_prefix(PROVIDER_PREFIX) {
                        let _ = tx.send(Event::Provider(pid, p.trim().to_string())).await;
                    } else {
                        info!(worker = pid, "{line}");
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Worker logs already carry their own level and fields.
                    eprintln!("[worker {pid}] {line}");
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 8 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let tx = ev_tx.clone();
        let (signals, mut signal_rx) = mpsc::channel::<Signal>(4);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = signal_rx.recv() => deliver(&mut child, sig),
                }
            };
            let _ = tx.send(Event::Exited(pid, status)).await;
        });
        info!(pid, "Worker started.");
        self.counters.started += 1;
        self.workers.push(Worker {
            pid,
            started: Instant::now(),
            ready: false,
            held: 0,
            provider: None,
            stopping: None,
            killed: false,
            stderr_tail: tail,
            signals,
        });
        Ok(())
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Ready(pid) => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
                    w.ready = true;
                    info!(pid, provider = w.provider.as_deref().unwrap_or("unknown"), startup = ?w.started.elapsed(), "Worker ready.");
                    self.backoff.reset();
                }
            }
            Event::Provider(pid, p) => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
                    self.seen_providers.insert(p.clone());
                    w.provider = Some(p);
                }
            }
            Event::Held(pid, n) => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
                    w.held = n;
                }
            }
            Event::Exited(pid, status) => {
                let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                    return;
                };
                let w = self.workers.remove(i);
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                if w.stopping.is_some() {
                    info!(pid, %status, "Worker stopped.");
                    return;
                }
                let tail: Vec<String> = w
                    .stderr_tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                let why = tail.last().map(String::as_str).unwrap_or("no output");
                let (kind, label) = if w.ready {
                    (Failure::Crash, "crashed")
                } else {
                    (Failure::Start, "failed to start")
                };
                let delay = self.failed(kind, format!("worker {label} ({status}): {why}"));
                warn!(pid, %status, retry_in = ?delay, stderr = %tail.join(" | "), "Worker {label}; backing off.");
            }
        }
    }

    /// Counts a failure, says why in the status and backs off; returns the delay.
    fn failed(&mut self, kind: Failure, reason: String) -> Duration {
        let delay = self.backoff.next_delay(reason.clone());
        self.next_start = Instant::now() + delay;
        match kind {
            Failure::Crash => self.counters.crashes += 1,
            Failure::Start | Failure::ReadyTimeout => self.counters.start_failures += 1,
        }
        let label = match kind {
            Failure::Crash => "crash",
            Failure::Start => "start_failure",
            Failure::ReadyTimeout => "ready_timeout",
        };
        metrics()
            .dropped
            .get_or_create(&crate::telemetry::metrics::reason("workers", label))
            .inc();
        self.counters.last_failure = Some(reason);
        delay
    }

    fn next_wake(&self, target: u32, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(5);
        for w in &self.workers {
            match w.stopping {
                Some(d) => wake = wake.min(d),
                None if !w.ready => wake = wake.min(w.started + self.ready_timeout),
                None => {}
            }
        }
        if self.alive() < target {
            wake = wake.min(self.next_start.max(now));
        }
        wake
    }

    fn publish(&mut self, target: u32, now: Instant) {
        let mut s = self.counters.clone();
        s.target = target;
        s.running = self.alive();
        s.ready = self
            .workers
            .iter()
            .filter(|w| w.ready && w.stopping.is_none())
            .count() as u32;
        s.pids = self.workers.iter().map(|w| w.pid).collect();
        s.held = self.workers.iter().map(|w| w.held).sum();
        for w in self
            .workers
            .iter()
            .filter(|w| w.ready && w.stopping.is_none())
        {
            let p = w.provider.clone().unwrap_or_else(|| "unknown".into());
            *s.providers.entry(p).or_default() += 1;
        }
        // Every provider this pool has seen stays in the metric, at 0 once none runs on
        // it, so a fall from tensorrt to cpu shows as one line going down.
        let m = metrics();
        for p in &self.seen_providers {
            let n = s.providers.get(p).copied().unwrap_or(0);
            m.worker_providers
                .get_or_create(&vec![("provider", p.clone())])
                .set(i64::from(n));
        }
        s.backing_off = now < self.next_start;
        s.failing = self.backoff.failing();
        metrics().workers.set(self.workers.len() as i64);
        let ready = s.ready;
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.ready_tx
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }
}

/// Signals a child we own and have not reaped: `child.id()` is `None` once it is
/// reaped, and until then its pid cannot be reused (a zombie keeps it).
fn deliver(child: &mut tokio::process::Child, sig: Signal) {
    match sig {
        Signal::Kill => {
            let _ = child.start_kill();
        }
        Signal::Term => {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
    }
}

/// Makes the child get SIGKILL when the agent dies, however it dies. SIGKILL rather
/// than SIGTERM: with the agent gone nobody reads the results of a graceful finish
/// (the broker redelivers what the worker held), and a worker hung while loading
/// would ignore anything less.
///
/// Linux sends the signal when the *thread* that forked the child exits; the pool
/// starts workers from a runtime worker thread, which lives as long as the runtime.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid(2) is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, raise); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The agent may have died between fork and prctl: then nobody will signal us.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}
