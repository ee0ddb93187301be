//! The embedded MQTT broker (rumqttd) for `transport.kind = "embedded"`: the agent and
//! its local workers need no outside service. Loopback only, MQTT 3.1.1.
//!
//! rumqttd 0.20 has no shutdown call and `Broker::start` blocks for ever, so the broker
//! runs on its own thread for the life of the process. Every `RouterConfig` field is set
//! (zeros are not safe defaults there).
//!
//! Loopback is not private: any local user can connect. So the broker takes a user name
//! and a password generated at each start (never logged; workers get them with the rest
//! of their configuration on stdin) and refuses every other client, anonymous ones
//! included. A downstream service on the box that reads the agent's events logs in with
//! the user and password written in `transport.mqtt_url`, when set. Bounds: packet size (`transport.max_payload`), connections, the commit log
//! per filter. rumqttd 0.20 has no bound on retained messages nor on the number of
//! filters; only authenticated clients (the agent and its workers, which never retain)
//! can publish or subscribe, so those stay out of an outsider's reach.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("embedded MQTT broker: no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error("embedded MQTT broker: could not start its thread: {0}")]
    Thread(std::io::Error),
    #[error("transport.embedded_port {port} is taken by another process: {source}")]
    PortTaken { port: u16, source: std::io::Error },
    #[error("embedded MQTT broker did not accept connections on {addr} within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
}

/// The user name every client of the embedded broker logs in with.
pub const USER: &str = "edge-agent";

/// A running embedded broker. It lives until the process exits.
#[derive(Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    password: String,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Clients at once: the agent, two connections per worker (publish and consume) for at
/// most 64 workers (`scaling.max_workers`), and room for reconnections.
const MAX_CONNECTIONS: usize = 192;

/// A password for one run of the broker: 32 alphanumerics (about 190 bits), safe in a
/// URL's userinfo without escaping.
fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Segments of the commit log per topic filter.
const SEGMENTS: usize = 4;

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1:port` (0 picks a free port) accepting packets up to
    /// `max_packet` bytes and keeping about `log_size` bytes per topic filter. It admits
    /// its own generated login and `downstream` (user, password), if any.
    pub fn start_with(
        port: u16,
        max_packet: usize,
        log_size: usize,
        downstream: Option<(String, String)>,
    ) -> Result<EmbeddedBroker, EmbeddedError> {
        let port = if port == 0 {
            // rumqttd cannot report the port it bound, so pick one first.
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(EmbeddedError::NoPort)?;
            l.local_addr().map_err(EmbeddedError::NoPort)?.port()
        } else {
            // Whatever answers on a taken port is not ours, even if it speaks MQTT: the
            // readiness probe below must never reach it. rumqttd only logs a failed bind.
            TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .map_err(|source| EmbeddedError::PortTaken { port, source })?;
            port
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let password = generate_password();
        let mut logins = HashMap::from_iter(downstream);
        // Inserted last: the agent's own login wins over a downstream one of the same name.
        logins.insert(USER.to_string(), password.clone());
        let config = broker_config(addr, max_packet, log_size, logins);
        std::thread::Builder::new()
            .name("edge-mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, %addr, "Embedded MQTT broker stopped.");
                }
            })
            .map_err(EmbeddedError::Thread)?;
        let waited = Duration::from_secs(5);
        let deadline = Instant::now() + waited;
        while !speaks_mqtt(addr, &password) {
            if Instant::now() > deadline {
                return Err(EmbeddedError::NotListening { addr, waited });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%addr, "Embedded MQTT broker listening.");
        Ok(EmbeddedBroker { addr, password })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to, credentials included: never log it.
    pub fn url(&self) -> String {
        client_url(self.addr.port(), USER, &self.password)
    }
}

/// The URL of the embedded broker on `port` for a client logging in as `user`.
pub(crate) fn client_url(port: u16, user: &str, password: &str) -> String {
    format!("mqtt://{user}:{password}@127.0.0.1:{port}")
}

/// The readiness probe: an MQTT 3.1.1 CONNECT with this run's credentials answered by an
/// accepting CONNACK. A bare
/// TCP connect that closes at once made rumqttd log an ERROR ("Error while handling MQTT
/// connect packet ... connection closed by peer") on every healthy start. The probe then
/// just closes (rumqttd logs that at INFO); a DISCONNECT would make it log `router-drop`.
fn speaks_mqtt(addr: SocketAddr, password: &str) -> bool {
    use std::io::{Read, Write};
    // CONNECT: protocol "MQTT" level 4, user name, password, clean session, keep-alive
    // 10 s, client id "edge-agent-probe". Everything is short: one-byte lengths.
    const ID: &[u8] = b"edge-agent-probe";
    let fields = [ID, USER.as_bytes(), password.as_bytes()];
    let len = 10 + fields.iter().map(|f| 2 + f.len()).sum::<usize>();
    let mut connect = vec![0x10, len as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10]);
    for f in fields {
        connect.extend_from_slice(&[0, f.len() as u8]);
        connect.extend_from_slice(f);
    }
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(&connect)?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack)?;
        // Accepted: CONNACK, length 2, no session, return code 0.
        Ok(connack == [0x20, 2, 0, 0])
    };
    probe().unwrap_or(false)
}

fn broker_config(
    addr: SocketAddr,
    max_packet: usize,
    log_size: usize,
    logins: HashMap<String, String>,
) -> Config {
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        // Messages queued towards one connection before it is marked slow.
        max_outgoing_packet_count: 200,
        // The commit log per filter: a full segment is closed and the oldest dropped
        // beyond the count, so memory per filter stays near `log_size` (plus one
        // message a segment may overshoot by).
        max_segment_size: (log_size / SEGMENTS).max(1),
        max_segment_count: SEGMENTS,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
    };
    let server = ServerSettings {
        name: "edge-embedded-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: max_packet,
            max_inflight_count: 100,
            // Once set, a CONNECT without these credentials is refused (InvalidAuth).
            auth: Some(logins),
            external_auth: None,
            // rumqttd 0.20 creates a filter's commit log on subscription whatever this
            // says; only authenticated clients subscribe.
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_log_per_filter_is_the_configured_size_in_four_segments() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1883));
        for (log_size, segment) in [(16 << 20, 4 << 20), (1 << 20, 256 << 10), (6, 1)] {
            let c = broker_config(addr, 8 << 20, log_size, HashMap::new());
            assert_eq!(c.router.max_segment_count, SEGMENTS);
            assert_eq!(c.router.max_segment_size, segment, "log size {log_size}");
        }
        let default = crate::transport::TransportConfig::default().embedded_log_size;
        assert_eq!(default.as_usize(), 16 << 20);
    }
}
