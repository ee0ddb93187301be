//! The one way a test waits: poll a condition on real state (a metric, /health, a
//! lifecycle line, a queue count) until it holds, and fail naming what was awaited.
//! No test sleeps for a fixed time to let something happen.

use std::time::{Duration, Instant};

/// How often a condition is checked: often enough not to slow a test, rarely enough
/// not to load a busy machine.
const EVERY: Duration = Duration::from_millis(50);

/// Polls `f` until it gives a value; panics naming `what` (and `context()`, for
/// example the agent's log) after `timeout`.
pub fn value_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                context()
            );
        }
        std::thread::sleep(EVERY);
    }
}

/// Polls `f` until it gives a value; panics naming `what` after `timeout`.
pub fn value<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    value_explained(what, timeout, f, String::new)
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    value(what, timeout, || cond().then_some(()))
}

/// [`value_explained`] for async tests: sleeps on tokio, so the tasks it waits on run
/// meanwhile.
pub async fn value_async_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                context()
            );
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// [`value`] for async tests.
pub async fn value_async<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    value_async_explained(what, timeout, f, String::new).await
}

/// [`until`] for async tests.
pub async fn until_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    value_async(what, timeout, || cond().then_some(())).await
}
