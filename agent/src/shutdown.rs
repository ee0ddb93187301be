//! One cancellation signal for every task. The first SIGINT/SIGTERM cancels the token
//! (tasks stop taking work and finish what they hold); a second one exits at once.
//!
//! Signals are watched from a thread of their own (with a small runtime of its own), not
//! from a task of the main runtime: once the main runtime is shutting down its tasks
//! are gone, and a second SIGTERM must still end the process, at any point of a stop.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub type Shutdown = CancellationToken;

/// The token tree of a long-running command: one root, [`Lifetime::end`], that lasts
/// until the command returns (cancelled when this is dropped), and under it the one
/// shutdown token, [`Lifetime::shutdown`], that the first signal cancels. Stages hang
/// from the shutdown token: they stop taking work at the signal. What must still work
/// while they finish, the broker link that carries their last results and acks out,
/// hangs from the root beside it and is closed by the stop itself, or ends with the
/// command at the latest.
pub struct Lifetime {
    end: CancellationToken,
    shutdown: Shutdown,
}

impl Lifetime {
    /// A new tree, with the signal handlers installed on its shutdown token.
    pub fn with_signals() -> Lifetime {
        let end = CancellationToken::new();
        let shutdown = end.child_token();
        install_signal_handlers(shutdown.clone());
        Lifetime { end, shutdown }
    }

    /// The root: parent of the broker link.
    pub fn end(&self) -> &CancellationToken {
        &self.end
    }

    /// The shutdown token: parent of every stage.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.end.cancel();
    }
}

/// The exit status after a second signal.
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// Cancels `token` on the first SIGINT or SIGTERM and exits the process on the second.
/// Returns once the handlers are installed, so a signal sent after it is never lost.
pub fn install_signal_handlers(token: Shutdown) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("edge-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "Could not install signal handlers; shutdown only by kill.");
                    let _ = ready_tx.send(());
                    return;
                }
            };
            rt.block_on(watch(token, ready_tx));
        });
    match spawned {
        Ok(_) => {
            let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        }
        Err(e) => {
            tracing::error!(error = %e, "Could not start the signal thread; shutdown only by kill.")
        }
    }
}

async fn watch(token: Shutdown, ready: std::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Could not install signal handlers; shutdown only by kill.");
        let _ = ready.send(());
        return;
    };
    let _ = ready.send(());
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!(
        lifecycle = "signalled",
        "Shutting down; a second signal exits at once."
    );
    token.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!(lifecycle = "exiting", "Second signal: exiting now.");
    // A second signal means "now": skipping the orderly stop is the point.
    #[allow(clippy::disallowed_methods)]
    std::process::exit(EXIT_SECOND_SIGNAL);
}

/// The exit status of a stop that had to abandon something (a camera whose pipeline
/// did not reach NULL in time, workers still running at the deadline, a transport that
/// did not flush), each logged by name where it happened.
pub const EXIT_UNCLEAN_STOP: i32 = 1;
