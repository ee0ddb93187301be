//! The embedded MQTT broker (rumqttd) for `transport.kind = "embedded"`: the agent and
//! its local workers need no outside service. Loopback only, MQTT 3.1.1.
//!
//! rumqttd 0.20 has no shutdown call and `Broker::start` blocks for ever, so the broker
//! runs on its own thread for the life of the process. Every `RouterConfig` field is set
//! (zeros are not safe defaults there).

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
    #[error(
        "embedded MQTT broker did not accept connections on {addr} within {waited:?} (port taken?)"
    )]
    NotListening { addr: SocketAddr, waited: Duration },
}

/// A running embedded broker. It lives until the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

/// Segments of the commit log per topic filter.
const SEGMENTS: usize = 4;

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1:port` (0 picks a free port) accepting packets up to
    /// `max_packet` bytes and keeping about `log_size` bytes per topic filter.
    pub fn start_with(
        port: u16,
        max_packet: usize,
        log_size: usize,
    ) -> Result<EmbeddedBroker, EmbeddedError> {
        let port = if port == 0 {
            // rumqttd cannot report the port it bound, so pick one first.
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(EmbeddedError::NoPort)?;
            l.local_addr().map_err(EmbeddedError::NoPort)?.port()
        } else {
            port
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = broker_config(addr, max_packet, log_size);
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
        while !speaks_mqtt(addr) {
            if Instant::now() > deadline {
                return Err(EmbeddedError::NotListening { addr, waited });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%addr, "Embedded MQTT broker listening.");
        Ok(EmbeddedBroker { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// The readiness probe: an MQTT 3.1.1 CONNECT answered by an accepting CONNACK. A bare
/// TCP connect that closes at once made rumqttd log an ERROR ("Error while handling MQTT
/// connect packet ... connection closed by peer") on every healthy start. The probe then
/// just closes (rumqttd logs that at INFO); a DISCONNECT would make it log `router-drop`.
fn speaks_mqtt(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, client id
    // "edge-agent-probe".
    const ID: &[u8] = b"edge-agent-probe";
    let mut connect = vec![0x10, (10 + 2 + ID.len()) as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    connect.extend_from_slice(&[0, ID.len() as u8]);
    connect.extend_from_slice(ID);
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

fn broker_config(addr: SocketAddr, max_packet: usize, log_size: usize) -> Config {
    let router = RouterConfig {
        max_connections: 1000,
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
            auth: None,
            external_auth: None,
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
            let c = broker_config(addr, 8 << 20, log_size);
            assert_eq!(c.router.max_segment_count, SEGMENTS);
            assert_eq!(c.router.max_segment_size, segment, "log size {log_size}");
        }
        let default = crate::transport::TransportConfig::default().embedded_log_size;
        assert_eq!(default.as_usize(), 16 << 20);
    }
}
