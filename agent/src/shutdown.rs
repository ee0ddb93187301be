//! One cancellation signal for every task. The first SIGINT/SIGTERM cancels the token
//! (tasks stop taking work and finish what they hold); a second one exits at once.

use tokio_util::sync::CancellationToken;

pub type Shutdown = CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM and exits the process on the second.
pub fn install_signal_handlers(token: Shutdown) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Could not install signal handlers; shutdown only by kill.");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("Shutting down; a second signal exits at once.");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("Second signal: exiting now.");
        std::process::exit(130);
    });
}
