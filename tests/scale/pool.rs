//! The worker pool's supervision of real `edge-agent worker` processes: back-off on
//! failing starts, the ready timeout, the stop deadline, and no worker outliving its agent.

use super::*;

#[tokio::test]
async fn a_worker_that_fails_at_start_makes_the_pool_back_off_and_report_without_fork_bombing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[device]\nid = \"box\"\n[inference]\nmodel = \"/nonexistent/model.onnx\"\n",
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let spec = worker_with_args(&["worker", "--config", bad.to_str().unwrap()]);
    let pool = spawn_pool(
        spec,
        Duration::from_secs(2),
        Duration::from_secs(60),
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        shutdown.clone(),
    );
    pool.set_target(3);
    // Waits on state, not a wall-clock window (a loaded machine makes fewer attempts in
    // 4 s, never more): after three failures, the pool has started at most one worker
    // beyond them. Attempts go one at a time behind the backoff; a fork bomb would
    // have started the three it wants, and more, at once.
    crate::common::wait::until_async("three failed starts", Duration::from_secs(60), || {
        pool.status().start_failures >= 3
    })
    .await;
    let s = pool.status();
    assert!(
        s.started <= s.start_failures + 1,
        "started {} workers for {} failures: {s:?}",
        s.started,
        s.start_failures
    );
    assert_eq!(s.ready, 0);
    let reason = s.last_failure.clone().unwrap_or_default();
    assert!(
        reason.contains("failed to start") && reason.contains("inference.model"),
        "reason: {reason}"
    );
    shutdown.cancel();
    pool.stopped().await;
    assert!(pool.status().pids.is_empty());
}

#[tokio::test]
async fn a_worker_that_hangs_while_loading_is_killed_after_the_ready_timeout_and_the_pool_backs_off(
) {
    // A real worker that blocks while loading: its labels file is a FIFO nobody writes.
    // Its broker link is a real one (Mosquitto), so only the model load hangs: the
    // worker links to the broker while the model loads.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("labels.names");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cfg = dir.path().join("hang.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"{}\"\n[transport]\nkind = \"mqtt\"\nmqtt_url = \"{}\"\n[inference]\nmodel = \"{}\"\nlabels = \"{}\"\n",
            crate::common::broker::unique("hang"),
            crate::common::broker::mqtt_url(),
            root().join("models/generated/test-yolov4.onnx").display(),
            fifo.display()
        ),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let pool = spawn_pool(
        worker_with_args(&["worker", "--config", cfg.to_str().unwrap()]),
        Duration::from_secs(2),
        Duration::from_secs(2),
        Backoff::new(Duration::from_secs(5), Duration::from_secs(10)),
        shutdown.clone(),
    );
    pool.set_target(1);
    let first = wait::value_async("a worker started", Duration::from_secs(30), || {
        pool.status().pids.first().copied()
    })
    .await;
    let s = wait::value_async("the hung worker given up", Duration::from_secs(30), || {
        Some(pool.status()).filter(|s| s.start_failures >= 1)
    })
    .await;
    let reason = s.last_failure.clone().unwrap_or_default();
    assert!(
        reason.contains("failed to start: not ready within 2s"),
        "reason: {reason}"
    );
    assert!(s.backing_off && s.failing, "{s:?}");
    assert_eq!((s.ready, s.started), (0, 1), "{s:?}");
    // The pool counts the failure as it sends SIGKILL (through the task that owns the
    // child); under load the status can be read before the signal lands.
    wait_gone(
        first,
        Duration::from_secs(10),
        &format!("the hung worker {first} was not killed"),
    )
    .await;
    shutdown.cancel();
    pool.stopped().await;
}

#[tokio::test]
async fn at_the_stop_deadline_the_pool_kills_the_workers_it_owns_and_none_is_left() {
    // A real child that ignores SIGTERM (an ignored signal stays ignored across exec),
    // so the graceful stop cannot end it within the minute of grace. It says so with a
    // file once the trap is set: a SIGTERM before that would end the shell.
    let dir = tempfile::tempdir().unwrap();
    let trapped = dir.path().join("trapped");
    let spec = WorkerSpec {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            format!("trap '' TERM; : > '{}'; exec sleep 600", trapped.display()).into(),
        ],
        env: vec![],
        input: None,
    };
    let shutdown = CancellationToken::new();
    let pool = spawn_pool(
        spec,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        shutdown.clone(),
    );
    pool.set_target(1);
    let pid = wait::value_async("a worker started", Duration::from_secs(30), || {
        pool.status().pids.first().copied()
    })
    .await;
    wait::until_async("the worker set its trap", Duration::from_secs(30), || {
        trapped.exists()
    })
    .await;
    shutdown.cancel();
    // Whether or not the pool has sent SIGTERM yet (a worker that never said ready may
    // still count as starting, not draining), the child ignores it: nothing stops it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), pool.stopped())
            .await
            .is_err(),
        "the worker ignoring SIGTERM stopped by itself"
    );
    pool.kill_all();
    tokio::time::timeout(Duration::from_secs(10), pool.stopped())
        .await
        .expect("the pool stopped after killing its workers");
    assert!(pool.status().pids.is_empty(), "{:?}", pool.status());
    wait_gone(
        pid,
        Duration::from_secs(10),
        &format!("worker {pid} outlived kill_all"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_an_agent_that_is_sigkilled() {
    let mut agent = Agent::command(&["run"], &[("EDGE_AGENT__SCALING__MIN_WORKERS", "1")]);
    let worker = wait::value_async("one ready worker", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(50));
        let kids = agent.children();
        (agent.health()["workers"]["ready"].as_u64() == Some(1) && kids.len() == 1).then(|| kids[0])
    })
    .await;
    // Whatever happens below, no worker is left behind by this test.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _reap = Reap(worker);
    unsafe { libc::kill(agent.pid as i32, libc::SIGKILL) };
    agent
        .wait_exit(Duration::from_secs(30))
        .expect("the SIGKILLed agent exits");
    wait_gone(
        worker,
        Duration::from_secs(10),
        &format!("worker {worker} outlived its SIGKILLed agent"),
    )
    .await;
}

/// `sleep 600` through [`run_owned`], the helper `edge-agent prepare` runs through;
/// `pid` gets its process id.
async fn owned_sleep(
    shutdown: &CancellationToken,
    pid: &std::sync::Mutex<Option<u32>>,
) -> std::io::Result<Option<std::process::Output>> {
    let mut cmd = tokio::process::Command::new("sleep");
    cmd.arg("600");
    run_owned(cmd, |child| *pid.lock().unwrap() = child.id(), shutdown).await
}

#[tokio::test]
async fn a_child_run_owned_is_killed_and_reaped_at_shutdown() {
    let shutdown = CancellationToken::new();
    let pid = std::sync::Mutex::new(None);
    let run = owned_sleep(&shutdown, &pid);
    tokio::pin!(run);
    let child = tokio::select! {
        r = &mut run => panic!("sleep 600 ended by itself: {r:?}"),
        child = wait::value_async("the child started", Duration::from_secs(10), || *pid.lock().unwrap()) => child,
    };
    assert!(alive(child));
    shutdown.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the owner returns once shutdown fires")
        .expect("spawned");
    assert!(out.is_none(), "stopped by shutdown, not finished: {out:?}");
    // Reaped by its owner, not left a zombie: the pid names no process at all.
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "child {child} still exists"
    );
}

/// The test re-runs itself as the parent to SIGKILL (this variable set): that process
/// starts `sleep 600` through [`run_owned`], prints its pid and waits.
const OWNED_PARENT: &str = "EDGE_AGENT_TEST_OWNED_PARENT";

#[test]
fn a_child_run_owned_dies_with_its_sigkilled_parent() {
    use std::io::{BufRead, Write};
    if std::env::var_os(OWNED_PARENT).is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let pid = std::sync::Mutex::new(None);
        rt.block_on(async {
            let run = owned_sleep(&shutdown, &pid);
            tokio::pin!(run);
            let child = tokio::select! {
                r = &mut run => panic!("sleep 600 ended by itself: {r:?}"),
                child = wait::value_async("the child started", Duration::from_secs(10), || *pid.lock().unwrap()) => child,
            };
            println!("OWNED_CHILD {child}");
            std::io::stdout().flush().unwrap();
            let _ = run.await;
        });
        return;
    }
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "scale::pool::a_child_run_owned_dies_with_its_sigkilled_parent",
            "--exact",
            "--nocapture",
        ])
        .env(OWNED_PARENT, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child: u32 = std::io::BufReader::new(parent.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("OWNED_CHILD ")
                .and_then(|p| p.trim().parse().ok())
        })
        .expect("the parent printed its child's pid");
    assert!(alive(child));
    unsafe { libc::kill(parent.id() as i32, libc::SIGKILL) };
    parent.wait().unwrap();
    // Whatever happens below, the sleep is not left behind by this test.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _reap = Reap(child);
    wait::until(
        &format!("child {child} gone after its parent was SIGKILLed"),
        Duration::from_secs(10),
        || !alive(child),
    );
}
