//! Log set-up: readable text by default, JSON on request, level from `RUST_LOG`.
//!
//! Two ERROR events of the embedded broker (rumqttd 0.20) are dropped, because they
//! report a client's clean goodbye, not a fault: a worker scaled in (or the agent at
//! stop) sends DISCONNECT, rumqttd's router removes the connection, and then its
//! connection task logs `router-drop` with `Recv(Disconnected)` (the router's side of
//! the channel is gone), and a second disconnect event for the same connection logs
//! `no-connection id N is already gone`. Every other rumqttd ERROR still shows.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
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
        LogFormat::Text => builder.finish().with(QuietCleanDisconnects).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(QuietCleanDisconnects)
            .try_init(),
    };
}

/// Drops rumqttd's ERRORs about a client that disconnected cleanly (see the module
/// comment).
struct QuietCleanDisconnects;

impl<S: Subscriber> Layer<S> for QuietCleanDisconnects {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("rumqttd") {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        !is_clean_disconnect(&fields.message, &fields.error)
    }
}

fn is_clean_disconnect(message: &str, error: &str) -> bool {
    (message == "router-drop" && error == "Recv(Disconnected)")
        || (message.starts_with("no-connection id ") && message.ends_with(" is already gone"))
}

#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "message" => &mut self.message,
            "error" => &mut self.error,
            _ => return,
        };
        let _ = write!(slot, "{value:?}");
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clean_disconnect_errors_of_the_broker_are_dropped() {
        let rows = [
            ("router-drop", "Recv(Disconnected)", true),
            ("no-connection id 1 is already gone", "", true),
            ("router-drop", "Send(Full)", false),
            ("Error while handling MQTT connect packet", "", false),
            ("Unsolicited/ooo ack received for pkid 3", "", false),
        ];
        for (message, error, dropped) in rows {
            assert_eq!(
                is_clean_disconnect(message, error),
                dropped,
                "{message} / {error}"
            );
        }
    }
}
