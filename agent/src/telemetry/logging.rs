//! Log set-up: readable text by default, JSON on request, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use super::LogFormat;

/// Installs the global subscriber once; later calls are ignored (tests call it often).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
