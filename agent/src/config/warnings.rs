//! Settings that load and run but put something at risk: the agent starts, and says so
//! once (`validate` on stderr, `run` in its log). Pure: the configuration in, the
//! warnings out.

use super::Config;
use crate::transport::config::TransportKind;
use crate::values::secret::redact_url;

impl Config {
    /// Warnings as (key path, message); messages show URLs redacted, never a password.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut out = self.transport_warnings();
        out.extend(page_closed(
            &self.telemetry.metrics_listen,
            self.telemetry.page_token_file.is_some(),
        ));
        out
    }

    fn transport_warnings(&self) -> Vec<(String, String)> {
        let t = &self.transport;
        // Only the URLs in use: the frames transport's (the embedded broker is on
        // loopback) and the offload link's, when it has one.
        let local = match t.kind {
            TransportKind::Embedded => None,
            TransportKind::Mqtt => Some((
                "transport.mqtt_url",
                t.mqtt_url.expose(),
                t.mqtt_url.has_password(),
            )),
            TransportKind::Amqp => Some((
                "transport.amqp_url",
                t.amqp_url.expose(),
                t.amqp_url.has_password(),
            )),
        };
        let remote = self
            .scaling
            .remote_url
            .as_ref()
            .map(|u| ("scaling.remote_url", u.expose(), u.has_password()));
        [local, remote]
            .into_iter()
            .flatten()
            .filter_map(|(key, raw, has_password)| {
                plain_password(raw, has_password).map(|m| (key.to_string(), m))
            })
            .collect()
    }
}

/// The warning for a listener off loopback without the page's token: the page, its
/// frames and the clips are refused there.
fn page_closed(listen: &str, has_token: bool) -> Option<(String, String)> {
    let addr: std::net::SocketAddr = listen.parse().ok()?;
    if has_token || addr.ip().to_canonical().is_loopback() {
        return None;
    }
    Some((
        "telemetry.metrics_listen".into(),
        format!(
            "{listen} is not on loopback and telemetry.page_token_file is not set: the page, \
             its frames and /clips are refused there (403); /metrics and /health answer"
        ),
    ))
}

/// The warning for a password sent unencrypted to a broker off this machine.
fn plain_password(raw: &str, has_password: bool) -> Option<String> {
    if !has_password {
        return None;
    }
    let url = url::Url::parse(raw).ok()?;
    let tls = match url.scheme() {
        "amqp" => "amqps",
        "mqtt" | "tcp" => "mqtts",
        _ => return None,
    };
    let host = url.host_str().unwrap_or("");
    if is_loopback(host) {
        return None;
    }
    Some(format!(
        "the password goes unencrypted to {host} ({}); use {tls}:// or a broker on loopback",
        redact_url(raw)
    ))
}

fn is_loopback(host: &str) -> bool {
    // Hosts of non-special schemes (mqtt, amqp) come back as text, IPv6 in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(transport: &str) -> Vec<(String, String)> {
        let text = format!("[device]\nid = \"d1\"\n[transport]\n{transport}\n");
        Config::from_toml_str("t.toml", &text)
            .expect("valid config")
            .warnings()
    }

    #[test]
    fn a_password_over_plain_mqtt_or_amqp_to_another_host_is_warned_about() {
        let warned = |key: &str, msg: &str| vec![(key.to_string(), msg.to_string())];
        let cases: &[(&str, Vec<(String, String)>)] = &[
            (
                "kind = \"amqp\"\namqp_url = \"amqp://u:s3cret@rabbit.lan:5672/%2f\"",
                warned("transport.amqp_url", "the password goes unencrypted to rabbit.lan (amqp://u:***@rabbit.lan:5672/%2f); use amqps:// or a broker on loopback"),
            ),
            (
                "kind = \"mqtt\"\nmqtt_url = \"mqtt://u:s3cret@10.0.0.7:1883\"",
                warned("transport.mqtt_url", "the password goes unencrypted to 10.0.0.7 (mqtt://u:***@10.0.0.7:1883); use mqtts:// or a broker on loopback"),
            ),
            (
                "kind = \"mqtt\"\nmqtt_url = \"tcp://u:s3cret@[fd00::1]:1883\"",
                warned("transport.mqtt_url", "the password goes unencrypted to [fd00::1] (tcp://u:***@[fd00::1]:1883); use mqtts:// or a broker on loopback"),
            ),
            // TLS, loopback, no password, or the URL not in use: nothing to say.
            ("kind = \"amqp\"\namqp_url = \"amqps://u:s3cret@rabbit.lan/%2f\"", vec![]),
            ("kind = \"mqtt\"\nmqtt_url = \"mqtts://u:s3cret@broker.lan:8883\"", vec![]),
            ("kind = \"mqtt\"\nmqtt_url = \"ssl://u:s3cret@broker.lan:8883\"", vec![]),
            ("kind = \"amqp\"\namqp_url = \"amqp://u:s3cret@127.0.0.2:5672/%2f\"", vec![]),
            ("kind = \"amqp\"\namqp_url = \"amqp://u:s3cret@LOCALHOST/%2f\"", vec![]),
            ("kind = \"mqtt\"\nmqtt_url = \"mqtt://u:s3cret@[::1]:1883\"", vec![]),
            ("kind = \"amqp\"\namqp_url = \"amqp://guest@rabbit.lan/%2f\"", vec![]),
            ("kind = \"mqtt\"\namqp_url = \"amqp://u:s3cret@rabbit.lan/%2f\"", vec![]),
            ("kind = \"embedded\"\nmqtt_url = \"mqtt://u:s3cret@10.0.0.7:1883\"", vec![]),
        ];
        for (transport, want) in cases {
            let got = warnings(transport);
            assert_eq!(&got, want, "{transport}");
            assert!(
                got.iter().all(|(_, m)| !m.contains("s3cret")),
                "{transport}: {got:?}"
            );
        }
    }

    #[test]
    fn a_listener_off_loopback_without_the_page_token_is_warned_about() {
        let page = |telemetry: &str| {
            let text = format!("[device]\nid = \"d1\"\n[telemetry]\n{telemetry}\n");
            Config::from_toml_str("t.toml", &text)
                .expect("valid config")
                .warnings()
        };
        let warned = page("metrics_listen = \"0.0.0.0:9464\"");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].0, "telemetry.metrics_listen");
        assert!(warned[0].1.contains("page_token_file"), "{warned:?}");
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "t0ken\n").unwrap();
        let with_token = format!(
            "metrics_listen = \"0.0.0.0:9464\"\npage_token_file = {:?}",
            token.path()
        );
        for quiet in [
            "metrics_listen = \"127.0.0.1:9464\"",
            "metrics_listen = \"[::1]:9464\"",
            "metrics_listen = \"\"",
            &with_token,
        ] {
            assert_eq!(page(quiet), vec![], "{quiet}");
        }
        // A token file that cannot be read is an error naming file, line and key.
        let text = "[device]\nid = \"d1\"\n[telemetry]\npage_token_file = \"/nonexistent/page\"\n";
        let errors = Config::from_toml_str("t.toml", text)
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("t.toml:4") && errors.contains("telemetry.page_token_file"),
            "{errors}"
        );
    }
}
