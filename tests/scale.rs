//! Worker supervision against the real `edge-agent worker` process.

use std::time::Duration;

use edge_agent::backoff::Backoff;
use edge_agent::scale::{spawn_pool, WorkerSpec};
use tokio_util::sync::CancellationToken;

fn worker_with_args(args: &[&str]) -> WorkerSpec {
    WorkerSpec {
        program: env!("CARGO_BIN_EXE_edge-agent").into(),
        args: args.iter().map(Into::into).collect(),
        env: vec![],
    }
}

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
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        shutdown.clone(),
    );
    pool.set_target(3);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = pool.status();
    // With a 200 ms..1 s backoff, 4 s allow about 6 attempts, one at a time; a fork bomb
    // would have made dozens.
    assert!(s.start_failures >= 2, "{s:?}");
    assert!(
        s.started <= 10,
        "started {} workers in 4 s: {s:?}",
        s.started
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
