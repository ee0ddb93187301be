//! What the agent says about itself on the broker, built as plain data (the agent's
//! main loop publishes it):
//!
//! - `{prefix}/{device}/status`: retained `online`, `offline` at a clean stop, `lost`
//!   by last will when the agent vanished without a goodbye (the transport owns it;
//!   plain words, so a dashboard tells a stop from a crash; the discovery configs map
//!   anything but `online` to Home Assistant's `offline`).
//! - `{prefix}/{device}/health`: the heartbeat, retained JSON every
//!   `telemetry.heartbeat_interval`: version, uptime, cameras and their state,
//!   workers, broker link. On AMQP the same JSON goes to the events exchange with
//!   routing key `{device}.health`.
//! - With `telemetry.home_assistant`, retained MQTT discovery configs per camera: a
//!   motion binary sensor and a detections sensor, available while the status says
//!   `online`.

use serde_json::{json, Value};

/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// The heartbeat: `health` (cameras, workers, broker) with identity and uptime added.
pub fn heartbeat(
    device: &str,
    health: Value,
    uptime: std::time::Duration,
    interval: std::time::Duration,
    at_unix_ms: u64,
) -> Value {
    let mut v = match health {
        Value::Object(m) => Value::Object(m),
        other => json!({ "health": other }),
    };
    v["status"] = "online".into();
    v["device"] = device.into();
    v["version"] = crate::VERSION.into();
    v["uptime_s"] = uptime.as_secs().into();
    v["interval_s"] = interval.as_secs_f64().into();
    v["at_ms"] = at_unix_ms.into();
    v
}

/// Discovery (topic, config) pairs for one camera. `prefix` is the transport's topic
/// prefix.
pub fn discovery(prefix: &str, device: &str, camera: &str) -> Vec<(String, Value)> {
    let base = format!("{prefix}/{device}/{camera}");
    let ha_device = json!({
        "identifiers": [format!("edge-agent_{device}")],
        "name": format!("edge-agent {device}"),
        "manufacturer": "edge-agent",
        "model": "edge-agent",
        "sw_version": crate::VERSION,
    });
    let availability = format!("{prefix}/{device}/status");
    let common = |kind: &str, suffix: &str| {
        let id = format!("{device}_{camera}_{suffix}");
        let topic = format!("{DISCOVERY_PREFIX}/{kind}/{id}/config");
        let mut v = json!({
            "unique_id": format!("edge-agent_{id}"),
            "object_id": format!("edge_agent_{}", id.replace('-', "_")),
            "availability_topic": availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            // `lost` (the last will) is unavailable too.
            "availability_template": "{{ 'online' if value == 'online' else 'offline' }}",
            "device": ha_device,
        });
        (topic, v.take())
    };
    let (t_motion, mut motion) = common("binary_sensor", "motion");
    motion["name"] = format!("{camera} motion").into();
    motion["device_class"] = "motion".into();
    motion["state_topic"] = format!("{base}/motion").into();
    // Motion messages say start, update or end.
    motion["value_template"] =
        "{{ 'ON' if value_json.state in ['start', 'update'] else 'OFF' }}".into();
    motion["json_attributes_topic"] = format!("{base}/motion").into();

    let (t_dets, mut dets) = common("sensor", "detections");
    dets["name"] = format!("{camera} detections").into();
    dets["state_topic"] = format!("{base}/detections").into();
    // `['items']`, not `.items`: in Jinja that is the dict's method.
    dets["value_template"] = "{{ value_json.detections['items'] | count }}".into();
    dets["unit_of_measurement"] = "objects".into();
    dets["state_class"] = "measurement".into();
    dets["icon"] = "mdi:cctv".into();
    dets["json_attributes_topic"] = format!("{base}/detections").into();
    dets["json_attributes_template"] =
        "{{ {'classes': value_json.detections['items'] | map(attribute='class') | list, 'latency_ms': (value_json.latency.total_ms if value_json.latency is defined else none)} | tojson }}".into();
    vec![(t_motion, motion), (t_dets, dets)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_configs_carry_what_home_assistant_needs() {
        let configs = discovery("edge", "north-01", "gate");
        let topics: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/north-01_gate_motion/config",
                "homeassistant/sensor/north-01_gate_detections/config"
            ]
        );
        for (t, c) in &configs {
            for key in [
                "name",
                "unique_id",
                "state_topic",
                "availability_topic",
                "device",
            ] {
                assert!(!c[key].is_null(), "{t}: no {key}");
            }
            assert_eq!(c["availability_topic"], "edge/north-01/status");
            assert_eq!(c["device"]["identifiers"][0], "edge-agent_north-01");
        }
        assert_eq!(configs[0].1["state_topic"], "edge/north-01/gate/motion");
        assert_eq!(configs[1].1["state_topic"], "edge/north-01/gate/detections");
        assert_ne!(configs[0].1["unique_id"], configs[1].1["unique_id"]);
    }

    #[test]
    fn heartbeat_adds_identity_and_uptime_to_the_health() {
        let h = heartbeat(
            "dev",
            json!({ "cameras": { "a": { "state": "Streaming" } }, "broker_connected": true }),
            std::time::Duration::from_secs(42),
            std::time::Duration::from_secs(30),
            7,
        );
        assert_eq!(h["status"], "online");
        assert_eq!(h["uptime_s"], 42);
        assert_eq!(h["cameras"]["a"]["state"], "Streaming");
        assert_eq!(h["version"], crate::VERSION);
        assert_eq!(h["at_ms"], 7);
    }
}
