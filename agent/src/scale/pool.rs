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
//! - Workers get their configuration on stdin (the agent's own, resolved), never from
//!   the files. A reload that changes what workers use hands the pool a new spec: new
//!   workers start with it, and those started before are drained like a scale-in
//!   (SIGTERM, finish what they hold), replaced at once as the target asks.

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
use crate::sync::lock;
use crate::telemetry::metrics::{metrics, DropReason};

/// The line a worker prints on stdout when it is ready for frames.
pub const READY_LINE: &str = "EDGE_AGENT_WORKER_READY";

/// A worker prints `PROVIDER_PREFIX name` on stdout before [`READY_LINE`]: the
/// execution provider its session really runs on (tensorrt, cuda or cpu).
pub const PROVIDER_PREFIX: &str = "EDGE_AGENT_WORKER_PROVIDER";

/// A worker prints `HELD_PREFIX n` on stdout when the number of frames it holds
/// (delivered, not yet acked) changes.
pub const HELD_PREFIX: &str = "EDGE_AGENT_WORKER_HELD";

/// ONNX Runtime's switch for its telemetry client.
pub const ORT_TELEMETRY: &str = "ORT_DISABLE_TELEMETRY";

/// The environment a worker (and `edge-agent prepare`) gets on top of the agent's, from
/// the agent's `EDGE_AGENT_WORKER_HUGE_PAGES` and `GLIBC_TUNABLES` and whether it sets
/// [`ORT_TELEMETRY`] itself.
///
/// `ORT_DISABLE_TELEMETRY=1` unless the operator set it: the PyPI builds of ONNX Runtime
/// (1.32 here) carry a telemetry client that keeps a device id in a database under
/// `~/.cache/Microsoft/DeveloperTools/` at every environment creation. A box's workers
/// keep nothing of the kind, and their cold start is about 2 ms shorter.
pub fn worker_env(
    huge_pages: Option<&str>,
    glibc_tunables: Option<&str>,
    ort_telemetry_set: bool,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if huge_pages == Some("1") {
        if let Some(t) = crate::memory::worker_tunables(glibc_tunables) {
            env.push(("GLIBC_TUNABLES".to_string(), t));
        }
    }
    if !ort_telemetry_set {
        env.push((ORT_TELEMETRY.to_string(), "1".to_string()));
    }
    env
}

/// How often SIGKILL is sent again to a killed worker whose exit was not seen yet.
const KILL_REPEAT: Duration = Duration::from_secs(1);

/// How to start one worker.
#[derive(Clone)]
pub struct WorkerSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Written to the worker's stdin, which is then closed: the agent's resolved
    /// configuration. It holds secrets, so it never goes on a command line or in a log.
    pub input: Option<Arc<str>>,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("input", &self.input.as_ref().map(|i| i.len()))
            .finish_non_exhaustive()
    }
}

impl WorkerSpec {
    /// This same binary, `worker --config-stdin`, fed `config` (from
    /// [`crate::config::resolved_text`]), in the environment of [`worker_env`].
    pub fn this_binary(config: String) -> std::io::Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec!["worker".into(), "--config-stdin".into()],
            env: worker_env(
                var("EDGE_AGENT_WORKER_HUGE_PAGES").as_deref(),
                var("GLIBC_TUNABLES").as_deref(),
                std::env::var_os(ORT_TELEMETRY).is_some(),
            ),
            input: Some(Arc::from(config)),
        })
    }

    /// Sets the child's stdin for [`WorkerSpec::feed`]: a pipe with an input, else null.
    pub fn stdin(&self) -> Stdio {
        match self.input {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        }
    }

    /// Writes the input to a child started with [`WorkerSpec::stdin`], then closes its
    /// stdin. A child that stops reading early fails on its own (and says so).
    pub fn feed(&self, child: &mut tokio::process::Child) {
        let (Some(input), Some(mut stdin)) = (self.input.clone(), child.stdin.take()) else {
            return;
        };
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Err(e) = stdin.write_all(input.as_bytes()).await {
                warn!(pid, error = %e, "Cannot hand the configuration to a worker.");
            }
        });
    }
}

/// What the pool starts workers with, replaced by [`PoolHandle::respec`].
#[derive(Clone, Debug)]
struct Settings {
    spec: WorkerSpec,
    grace: Duration,
    ready_timeout: Duration,
    /// Workers started with an older generation are drained.
    generation: u64,
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
    /// Workers asked to stop (scale-in, or started with settings a reload replaced)
    /// and still finishing.
    pub draining: u32,
    /// Workers drained because a reload replaced their settings.
    pub replaced: u64,
}

#[derive(Clone)]
pub struct PoolHandle {
    target: watch::Sender<u32>,
    settings: watch::Sender<Settings>,
    status: Arc<Mutex<PoolStatus>>,
    done: watch::Receiver<bool>,
    ready: watch::Receiver<u32>,
    kill: Arc<tokio::sync::Notify>,
}

impl PoolHandle {
    pub fn set_target(&self, n: u32) {
        self.target.send_if_modified(|t| {
            let changed = *t != n;
            *t = n;
            changed
        });
    }
    /// Workers started from now on use `spec`, `grace` and `ready_timeout`; with
    /// `replace`, those started before are drained (SIGTERM, they finish what they
    /// hold) and new ones start in their place as the target asks.
    pub fn respec(
        &self,
        spec: WorkerSpec,
        grace: Duration,
        ready_timeout: Duration,
        replace: bool,
    ) {
        self.settings.send_modify(|s| {
            s.spec = spec;
            s.grace = grace;
            s.ready_timeout = ready_timeout;
            s.generation += u64::from(replace);
        });
    }
    pub fn status(&self) -> PoolStatus {
        lock(&self.status).clone()
    }
    /// The number of ready workers, as it changes.
    pub fn ready_changes(&self) -> watch::Receiver<u32> {
        self.ready.clone()
    }
    /// SIGKILL for every worker now, sent by the tasks that own them (the stop
    /// deadline: whoever is still finishing loses what it holds, which the broker
    /// delivers again). The target is unchanged: at shutdown no new worker starts.
    pub fn kill_all(&self) {
        // A stored permit: the pool acts on it even if it is busy right now.
        self.kill.notify_one();
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
    /// The settings generation it was started with.
    generation: u64,
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
    let settings = Settings {
        spec,
        grace,
        ready_timeout,
        generation: 0,
    };
    let (settings_tx, settings_rx) = watch::channel(settings.clone());
    let kill = Arc::new(tokio::sync::Notify::new());
    let pool = Pool {
        ready_tx,
        settings,
        backoff,
        workers: Vec::new(),
        next_start: Instant::now(),
        status: status.clone(),
        counters: PoolStatus::default(),
        seen_providers: Default::default(),
    };
    let kill_rx = kill.clone();
    tokio::spawn(async move {
        pool.run(target_rx, settings_rx, shutdown, kill_rx).await;
        let _ = done_tx.send(true);
    });
    PoolHandle {
        target: target_tx,
        settings: settings_tx,
        status,
        done: done_rx,
        ready: ready_rx,
        kill,
    }
}

struct Pool {
    /// The ready count (workers ready and not asked to stop), for those who act on a
    /// change at once (the agent resends MQTT frames when the first worker is ready).
    ready_tx: watch::Sender<u32>,
    /// How to start workers, their grace period after SIGTERM, and the readiness
    /// timeout (a worker not ready this long after its start is taken as hung).
    settings: Settings,
    backoff: Backoff,
    workers: Vec<Worker>,
    next_start: Instant,
    status: Arc<Mutex<PoolStatus>>,
    counters: PoolStatus,
    seen_providers: std::collections::BTreeSet<String>,
}

impl Pool {
    async fn run(
        mut self,
        mut target_rx: watch::Receiver<u32>,
        mut settings_rx: watch::Receiver<Settings>,
        shutdown: CancellationToken,
        kill: Arc<tokio::sync::Notify>,
    ) {
        let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(64);
        let mut stopping_all = false;
        let mut settings_open = true;
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
                changed = settings_rx.changed(), if settings_open => match changed {
                    Ok(()) => {
                        let new = settings_rx.borrow_and_update().clone();
                        self.respec(new, Instant::now());
                    }
                    Err(_) => settings_open = false,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = kill.notified() => self.kill_all(Instant::now()),
                _ = shutdown.cancelled(), if !stopping_all => {
                    info!(workers = self.workers.len(), "Stopping workers for shutdown.");
                    stopping_all = true;
                }
            }
        }
        self.publish(0, Instant::now());
    }

    /// New settings; workers of an older generation are drained.
    fn respec(&mut self, new: Settings, now: Instant) {
        let replace = new.generation != self.settings.generation;
        self.settings = new;
        if !replace {
            return;
        }
        let generation = self.settings.generation;
        let mut drained = 0;
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.stopping.is_none() && w.generation != generation)
        {
            w.signal(Signal::Term);
            w.stopping = Some(now + self.settings.grace);
            drained += 1;
        }
        self.counters.replaced += drained;
        // A failure with the old settings says nothing about the new ones.
        self.backoff.reset();
        self.next_start = now;
        info!(drained, generation, "Worker settings changed: workers started before finish what they hold and exit; new ones start with the new settings.");
    }

    /// SIGKILL for every worker not killed yet; repeated like a grace kill until its
    /// exit is seen.
    fn kill_all(&mut self, now: Instant) {
        let mut killed = Vec::new();
        for w in self.workers.iter_mut().filter(|w| !w.killed) {
            w.signal(Signal::Kill);
            w.killed = true;
            w.stopping = Some(now + KILL_REPEAT);
            killed.push(w.pid);
        }
        if !killed.is_empty() {
            warn!(pids = ?killed, "Killing workers now.");
        }
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
                    warn!(pid = w.pid, grace = ?self.settings.grace, "Worker did not stop in time; killing it.");
                }
                w.signal(Signal::Kill);
                w.killed = true;
                w.stopping = Some(now + KILL_REPEAT);
            }
        }
        // Whoever is not ready within the readiness timeout hangs while loading: it
        // would count as starting forever and hold back the workers that replace it.
        let timeout = self.settings.ready_timeout;
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
            w.stopping = Some(now + self.settings.grace);
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
                    warn!(program = %self.settings.spec.program.display(), error = %e, retry_in = ?delay, "Cannot start a worker.");
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
                info!(
                    lifecycle = "worker_draining",
                    pid = w.pid,
                    "Scaling in: asking worker to finish and exit."
                );
                w.signal(Signal::Term);
                w.stopping = Some(now + self.settings.grace);
            }
        }
    }

    fn start(&mut self, ev_tx: &mpsc::Sender<Event>) -> std::io::Result<()> {
        let spec = &self.settings.spec;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().cloned())
            .stdin(spec.stdin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn()?;
        spec.feed(&mut child);
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
                    let mut t = lock(&tail);
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
            generation: self.settings.generation,
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
                    info!(lifecycle = "worker_ready", pid, provider = w.provider.as_deref().unwrap_or("unknown"), startup = ?w.started.elapsed(), "Worker ready.");
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
                    info!(lifecycle = "worker_stopped", pid, %status, "Worker stopped.");
                    return;
                }
                let tail: Vec<String> = lock(&w.stderr_tail).iter().cloned().collect();
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
            Failure::Crash => DropReason::Crash,
            Failure::Start => DropReason::StartFailure,
            Failure::ReadyTimeout => DropReason::ReadyTimeout,
        };
        metrics()
            .dropped
            .get_or_create(&crate::telemetry::metrics::drop_reason("workers", label))
            .inc();
        self.counters.last_failure = Some(reason);
        delay
    }

    fn next_wake(&self, target: u32, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(5);
        for w in &self.workers {
            match w.stopping {
                Some(d) => wake = wake.min(d),
                None if !w.ready => wake = wake.min(w.started + self.settings.ready_timeout),
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
        s.draining = self.workers.iter().filter(|w| w.stopping.is_some()).count() as u32;
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
        *lock(&self.status) = s;
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

/// Runs a one-shot child (`edge-agent prepare`) to its end from the task that owns it:
/// the child gets SIGTERM when the agent dies, however it dies, and when `shutdown`
/// fires it is killed and reaped here. Its stdout and stderr are collected; `feed`
/// writes its stdin once it runs. `None` when shutdown stopped it.
pub async fn run_owned(
    mut cmd: Command,
    feed: impl FnOnce(&mut tokio::process::Child),
    shutdown: &CancellationToken,
) -> std::io::Result<Option<std::process::Output>> {
    use tokio::io::AsyncReadExt;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut cmd, libc::SIGTERM);
    let mut child = cmd.spawn()?;
    feed(&mut child);
    let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf).await;
        }
        buf
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let finished = tokio::select! {
        (status, stdout, stderr) = async { tokio::join!(child.wait(), out, err) } => {
            Some((status, stdout, stderr))
        }
        _ = shutdown.cancelled() => None,
    };
    match finished {
        Some((status, stdout, stderr)) => Ok(Some(std::process::Output {
            status: status?,
            stdout,
            stderr,
        })),
        None => {
            let _ = child.start_kill();
            child.wait().await?;
            Ok(None)
        }
    }
}

/// Makes the child get `sig` when the agent dies, however it dies. Workers get SIGKILL
/// rather than SIGTERM: with the agent gone nobody reads the results of a graceful
/// finish (the broker redelivers what the worker held), and a worker hung while
/// loading would ignore anything less.
///
/// Linux sends the signal when the *thread* that forked the child exits; the pool
/// starts workers from a runtime worker thread, which lives as long as the runtime.
fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
    // SAFETY: getpid(2) is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, raise); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn workers_run_without_onnx_runtime_telemetry_and_with_huge_pages_only_when_asked() {
        assert_eq!(
            worker_env(None, None, false),
            vec![pair(ORT_TELEMETRY, "1")]
        );
        // The operator's own setting stays: nothing is added over it.
        assert_eq!(worker_env(None, None, true), vec![]);
        assert_eq!(
            worker_env(Some("0"), Some("glibc.malloc.arena_max=2"), true),
            vec![]
        );
        assert_eq!(
            worker_env(Some("1"), None, true),
            vec![pair("GLIBC_TUNABLES", crate::memory::HUGE_PAGES)]
        );
        assert_eq!(
            worker_env(Some("1"), Some("glibc.malloc.arena_max=2"), false),
            vec![
                pair(
                    "GLIBC_TUNABLES",
                    &format!("glibc.malloc.arena_max=2:{}", crate::memory::HUGE_PAGES)
                ),
                pair(ORT_TELEMETRY, "1")
            ]
        );
    }
}
